// A GSE game server in Java, written the way GSE's Java tutorial wrote one: grpc-java on Netty,
// with the classes protoc and grpc_java_plugin generate from the GSE protos (no
// java_multiple_files, so the messages are nested in GseGrpcSdkServiceOuterClass and
// GameServerGrpcSdkServiceOuterClass).
//
// It serves GameServerGrpcSdkService (OnHealthCheck, OnStartGameServerSession,
// OnProcessTerminate) on its gRPC port and calls the agent's GseGrpcSdkService (ProcessReady,
// ActivateGameServerSession, AcceptPlayerSession, TerminateGameServerSession, ProcessEnding).
// Players connect to its client port, send their player session id and a newline, and get
// "welcome <id>" or "refused: <message>". See README.md for how to build and run it.

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.NettyServerBuilder;
import io.grpc.stub.StreamObserver;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import tencentcloud.gse.grpcsdk.GameServerGrpcSdkServiceGrpc;
import tencentcloud.gse.grpcsdk.GameServerGrpcSdkServiceOuterClass.GameServerSession;
import tencentcloud.gse.grpcsdk.GameServerGrpcSdkServiceOuterClass.HealthCheckRequest;
import tencentcloud.gse.grpcsdk.GameServerGrpcSdkServiceOuterClass.HealthCheckResponse;
import tencentcloud.gse.grpcsdk.GameServerGrpcSdkServiceOuterClass.ProcessTerminateRequest;
import tencentcloud.gse.grpcsdk.GameServerGrpcSdkServiceOuterClass.StartGameServerSessionRequest;
import tencentcloud.gse.grpcsdk.GseGrpcSdkServiceGrpc;
import tencentcloud.gse.grpcsdk.GseGrpcSdkServiceOuterClass.AcceptPlayerSessionRequest;
import tencentcloud.gse.grpcsdk.GseGrpcSdkServiceOuterClass.ActivateGameServerSessionRequest;
import tencentcloud.gse.grpcsdk.GseGrpcSdkServiceOuterClass.GseResponse;
import tencentcloud.gse.grpcsdk.GseGrpcSdkServiceOuterClass.ProcessEndingRequest;
import tencentcloud.gse.grpcsdk.GseGrpcSdkServiceOuterClass.ProcessReadyRequest;
import tencentcloud.gse.grpcsdk.GseGrpcSdkServiceOuterClass.TerminateGameServerSessionRequest;

public final class GameServer {
    // GSE requires two metadata entries on every call to the agent: `pid` (this process, so the
    // agent knows which server process is calling) and `requestId` (unique per call).
    private static final Metadata.Key<String> PID =
            Metadata.Key.of("pid", Metadata.ASCII_STRING_MARSHALLER);
    private static final Metadata.Key<String> REQUEST_ID =
            Metadata.Key.of("requestId", Metadata.ASCII_STRING_MARSHALLER);

    // What every callback answers on success.
    private static final GseResponse OK = GseResponse.newBuilder()
            .setStatus(GseResponse.Status.OK)
            .setResponseData("SUCCESS")
            .build();

    private final ManagedChannel channel;
    private final GseGrpcSdkServiceGrpc.GseGrpcSdkServiceBlockingStub gse;
    private final Server grpcServer;
    // The game server session GSE placed on this process; null until OnStartGameServerSession.
    private volatile GameServerSession session;

    public static void main(String[] args) {
        // The agent tells the game where it serves GseGrpcSdkService; GSE's default otherwise.
        String address = System.getenv().getOrDefault("GSE_SDK_ADDRESS", "127.0.0.1:5758");
        try {
            new GameServer(address).run();
        } catch (CallFailed e) {
            fail(e.getMessage());
        } catch (Exception e) {
            fail(e.toString());
        }
    }

    private GameServer(String address) {
        // Plaintext HTTP/2 to the agent on this host; the interceptor adds pid and requestId.
        channel = NettyChannelBuilder.forTarget(address)
                .usePlaintext()
                .intercept(new GseMetadata())
                .build();
        gse = GseGrpcSdkServiceGrpc.newBlockingStub(channel);

        // The gRPC port: the agent calls OnHealthCheck, OnStartGameServerSession and
        // OnProcessTerminate here. Bound to 127.0.0.1 only, where the agent dials it. Netty runs
        // on its NIO transport: the build ships no native epoll library, and needs none.
        grpcServer = NettyServerBuilder.forAddress(new InetSocketAddress("127.0.0.1", 0))
                .addService(new Callbacks())
                .build();
    }

    private void run() throws Exception {
        log("java " + System.getProperty("java.version") + ", grpc-java "
                + Server.class.getPackage().getImplementationVersion());

        // The client port: players connect here.
        ServerSocket players = new ServerSocket();
        players.bind(new InetSocketAddress("127.0.0.1", 0));
        Thread acceptor = new Thread(() -> acceptPlayers(players), "players");
        acceptor.setDaemon(true);
        acceptor.start();

        // Serve the callbacks first: the agent may call them as soon as ProcessReady arrives.
        grpcServer.start();
        int clientPort = players.getLocalPort();
        int grpcPort = grpcServer.getPort();
        call("ProcessReady", () -> agent().processReady(ProcessReadyRequest.newBuilder()
                .setClientPort(clientPort)
                .setGrpcPort(grpcPort)
                .build()));
        log("ready: clientPort " + clientPort + ", grpcPort " + grpcPort);

        // OnProcessTerminate shuts the gRPC server down once it has answered; then exit 0.
        grpcServer.awaitTermination();
        channel.shutdown().awaitTermination(2, TimeUnit.SECONDS);
        System.exit(0);
    }

    /** The callbacks GSE (here: gse-agent) makes on the game's gRPC port. */
    private final class Callbacks extends GameServerGrpcSdkServiceGrpc.GameServerGrpcSdkServiceImplBase {
        @Override
        public void onHealthCheck(HealthCheckRequest request,
                StreamObserver<HealthCheckResponse> response) {
            response.onNext(HealthCheckResponse.newBuilder().setHealthStatus(true).build());
            response.onCompleted();
        }

        @Override
        public void onStartGameServerSession(StartGameServerSessionRequest request,
                StreamObserver<GseResponse> response) {
            GameServerSession s = request.getGameServerSession();
            String id = s.getGameServerSessionId();
            session = s;
            log("session: " + id);
            try {
                // Set the session up (load the map, ...), then activate it: from inside this
                // handler, before it returns, as GSE's tutorials do.
                call("ActivateGameServerSession", () -> agent().activateGameServerSession(
                        ActivateGameServerSessionRequest.newBuilder()
                                .setGameServerSessionId(id)
                                .setMaxPlayers(s.getMaxPlayers())
                                .build()));
                log("activated: " + id);
                response.onNext(OK);
                response.onCompleted();
            } catch (CallFailed e) {
                fail(e.getMessage());
            }
        }

        @Override
        public void onProcessTerminate(ProcessTerminateRequest request,
                StreamObserver<GseResponse> response) {
            // terminationTime: Unix seconds by which the process must be gone (0: no deadline).
            log("terminate: " + request.getTerminationTime());
            try {
                GameServerSession s = session;
                if (s != null) {
                    String id = s.getGameServerSessionId();
                    call("TerminateGameServerSession", () -> agent().terminateGameServerSession(
                            TerminateGameServerSessionRequest.newBuilder()
                                    .setGameServerSessionId(id)
                                    .build()));
                    session = null;
                    log("session terminated: " + id);
                }
                call("ProcessEnding", () -> agent().processEnding(
                        ProcessEndingRequest.getDefaultInstance()));
                log("ending");
                response.onNext(OK);
                response.onCompleted();
                // A graceful shutdown lets this answer go out; run() then exits 0.
                grpcServer.shutdown();
            } catch (CallFailed e) {
                fail(e.getMessage());
            }
        }
    }

    private void acceptPlayers(ServerSocket players) {
        while (true) {
            try {
                Socket socket = players.accept();
                Thread player = new Thread(() -> servePlayer(socket), "player");
                player.setDaemon(true);
                player.start();
            } catch (IOException e) {
                fail("client port: " + e);
            }
        }
    }

    /** One player: its first line is its player session id, which the agent must accept. */
    private void servePlayer(Socket socket) {
        try (socket;
                BufferedReader in = new BufferedReader(
                        new InputStreamReader(socket.getInputStream(), StandardCharsets.UTF_8));
                Writer out = new OutputStreamWriter(socket.getOutputStream(), StandardCharsets.UTF_8)) {
            String line = in.readLine();
            if (line == null) {
                return;
            }
            String playerSessionId = line.trim();
            GameServerSession s = session;
            String sessionId = s == null ? "" : s.getGameServerSessionId();
            try {
                call("AcceptPlayerSession", () -> agent().acceptPlayerSession(
                        AcceptPlayerSessionRequest.newBuilder()
                                .setGameServerSessionId(sessionId)
                                .setPlayerSessionId(playerSessionId)
                                .build()));
            } catch (CallFailed e) {
                log("player refused: " + playerSessionId + ": " + e.reason);
                out.write("refused: " + e.reason + "\n");
                out.flush();
                return;
            }
            log("player accepted: " + playerSessionId);
            out.write("welcome " + playerSessionId + "\n");
            out.flush();
            // The player stays connected until it hangs up; a real game plays here, and calls
            // RemovePlayerSession when the player leaves.
            while (in.readLine() != null) {
                // Ignore what the player sends.
            }
        } catch (IOException e) {
            // The player went away.
        }
    }

    /** The agent's stub, with a deadline for the next call. */
    private GseGrpcSdkServiceGrpc.GseGrpcSdkServiceBlockingStub agent() {
        return gse.withDeadlineAfter(10, TimeUnit.SECONDS);
    }

    /**
     * One call to the agent. It failed if the RPC failed (a non-OK gRPC status: how gse-agent
     * refuses) or if the agent answered a GseResponse whose status is not OK.
     */
    private static GseResponse call(String method, Supplier<GseResponse> rpc) throws CallFailed {
        GseResponse response;
        try {
            response = rpc.get();
        } catch (StatusRuntimeException e) {
            Status status = e.getStatus();
            String cause = status.getCause() == null ? "" : " (" + status.getCause() + ")";
            throw new CallFailed(method, status.getCode() + cause, status.getDescription());
        }
        if (response.getStatus() != GseResponse.Status.OK) {
            throw new CallFailed(method, response.getStatus().name(), response.getErrorMessage());
        }
        return response;
    }

    private static final class CallFailed extends Exception {
        // The agent's message, as a player is told it.
        final String reason;

        CallFailed(String method, String code, String reason) {
            super(method + ": " + code + ": " + reason);
            this.reason = reason;
        }
    }

    /** Adds `pid` and a fresh `requestId` to every call to the agent. */
    private static final class GseMetadata implements ClientInterceptor {
        private static final String OWN_PID = Long.toString(ProcessHandle.current().pid());

        @Override
        public <ReqT, RespT> ClientCall<ReqT, RespT> interceptCall(
                MethodDescriptor<ReqT, RespT> method, CallOptions options, Channel next) {
            return new ForwardingClientCall.SimpleForwardingClientCall<>(next.newCall(method, options)) {
                @Override
                public void start(Listener<RespT> listener, Metadata headers) {
                    headers.put(PID, OWN_PID);
                    headers.put(REQUEST_ID, UUID.randomUUID().toString());
                    super.start(listener, headers);
                }
            };
        }
    }

    /** One line on stdout, flushed at once (the agent captures it). */
    private static synchronized void log(String line) {
        System.out.println(line);
        System.out.flush();
    }

    private static void fail(String message) {
        log("error: " + message);
        System.exit(1);
    }
}
