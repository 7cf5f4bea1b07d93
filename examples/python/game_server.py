"""A GSE game server in Python, on grpcio (gRPC C-core), the way GSE's tutorials wrote one.

It serves GameServerGrpcSdkService (OnHealthCheck, OnStartGameServerSession,
OnProcessTerminate) on a port of its own, takes players on another, and calls the agent's
GseGrpcSdkService (ProcessReady, ActivateGameServerSession, AcceptPlayerSession,
TerminateGameServerSession, ProcessEnding). See examples/README.md for the contract.

build.sh puts this file, the generated *_pb2.py / *_pb2_grpc.py and the run-time packages
(pylib/) into the build; install.sh links the interpreter to /local/game/python3.
Run it with LaunchPath /local/game/python3, Parameters game_server.py.
"""

import os
import sys

# The build carries its own grpcio and protobuf (pip install --target pylib).
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "pylib"))

import socket  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402
from concurrent import futures  # noqa: E402

import google.protobuf  # noqa: E402
import grpc  # noqa: E402

import GameServerGrpcSdkService_pb2 as game_pb2  # noqa: E402
import GameServerGrpcSdkService_pb2_grpc as game_grpc  # noqa: E402
import GseGrpcSdkService_pb2 as gse_pb2  # noqa: E402
import GseGrpcSdkService_pb2_grpc as gse_grpc  # noqa: E402

AGENT_ADDRESS = os.environ.get("GSE_SDK_ADDRESS", "127.0.0.1:5758")

# Two copies of GseGrpcSdkService.proto are in the field: the documented one, whose GseResponse
# has status/responseData/errorMessage, and the SDK's proto.zip one, whose GseResponse is empty
# (success or failure is then only the gRPC status). This game runs on either: it looks at the
# generated message's descriptor.
RESPONSE_HAS_STATUS = "status" in gse_pb2.GseResponse.DESCRIPTOR.fields_by_name


def log(line):
    print(line, flush=True)


def fail(message):
    """Anything unexpected: say so and exit 1 (from any thread)."""
    log(f"error: {message}")
    os._exit(1)


def success():
    """The answer to the agent's callbacks: OK {status OK, responseData SUCCESS}."""
    if RESPONSE_HAS_STATUS:
        return gse_pb2.GseResponse(status=gse_pb2.GseResponse.OK, responseData="SUCCESS")
    return gse_pb2.GseResponse()


class CallFailed(Exception):
    """A failed call: `code` is the gRPC status or GseResponse status, `reason` the message."""

    def __init__(self, method, code, reason):
        super().__init__(f"{method}: {code}: {reason}")
        self.reason = reason


agent = gse_grpc.GseGrpcSdkServiceStub(grpc.insecure_channel(AGENT_ADDRESS))


def call(method, request):
    """Calls the agent. Every call carries the caller's pid and a fresh request id, as GSE
    requires. A failed call is an RPC error (non-OK gRPC status: how gse-agent refuses) or, with
    the documented proto, a GseResponse whose status is not OK."""
    # gRPC metadata keys are lower case on the wire (HTTP/2); grpcio refuses upper-case keys, so
    # GSE's `requestId` is sent as `requestid`, exactly what every other stack sends too.
    metadata = (("pid", str(os.getpid())), ("requestid", str(uuid.uuid4())))
    try:
        response = getattr(agent, method)(request, metadata=metadata, timeout=10)
    except grpc.RpcError as e:
        raise CallFailed(method, e.code().name, e.details()) from None
    if RESPONSE_HAS_STATUS and response.status != gse_pb2.GseResponse.OK:
        status = gse_pb2.GseResponse.Status.Name(response.status)
        raise CallFailed(method, status, response.errorMessage or status)
    return response


def call_or_fail(method, request):
    try:
        return call(method, request)
    except CallFailed as e:
        fail(str(e))


class Game(game_grpc.GameServerGrpcSdkServiceServicer):
    """The callbacks the agent calls on the grpcPort reported in ProcessReady."""

    def __init__(self):
        self.lock = threading.Lock()
        self.session_id = None  # the game server session this process hosts
        self.terminating = False
        self.server = None

    def OnHealthCheck(self, request, context):
        return game_pb2.HealthCheckResponse(healthStatus=True)

    def OnStartGameServerSession(self, request, context):
        session = request.gameServerSession
        with self.lock:
            self.session_id = session.gameServerSessionId
        log(f"session: {session.gameServerSessionId}")
        # Set the session up, then activate it from inside the handler, before it returns,
        # as GSE's tutorials do.
        call_or_fail(
            "ActivateGameServerSession",
            gse_pb2.ActivateGameServerSessionRequest(
                gameServerSessionId=session.gameServerSessionId,
                maxPlayers=session.maxPlayers,
            ),
        )
        log(f"activated: {session.gameServerSessionId}")
        return success()

    def OnProcessTerminate(self, request, context):
        with self.lock:
            if self.terminating:
                return success()
            self.terminating = True
            session_id = self.session_id
        log(f"terminate: {request.terminationTime}")
        # End the session (if there is one) and say the process ends, inside the handler.
        if session_id:
            call_or_fail(
                "TerminateGameServerSession",
                gse_pb2.TerminateGameServerSessionRequest(gameServerSessionId=session_id),
            )
            log(f"session terminated: {session_id}")
        call_or_fail("ProcessEnding", gse_pb2.ProcessEndingRequest())
        log("ending")
        # Exit once this answer is out: stop() lets the in-flight calls finish (grace 2 s),
        # then main() returns and the process exits 0.
        threading.Thread(target=lambda: self.server.stop(grace=2)).start()
        return success()

    def accept_player(self, conn):
        """A player sends its player session id and a newline; the agent decides."""
        with conn:
            data = b""
            while b"\n" not in data and len(data) < 1024:
                chunk = conn.recv(1024)
                if not chunk:
                    return
                data += chunk
            player_session_id = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
            with self.lock:
                session_id = self.session_id or ""
            try:
                call(
                    "AcceptPlayerSession",
                    gse_pb2.AcceptPlayerSessionRequest(
                        gameServerSessionId=session_id, playerSessionId=player_session_id
                    ),
                )
            except CallFailed as e:
                log(f"player refused: {player_session_id}: {e.reason}")
                conn.sendall(f"refused: {e.reason}\n".encode())
                return
            log(f"player accepted: {player_session_id}")
            conn.sendall(f"welcome {player_session_id}\n".encode())
            # This example closes the connection after the answer; a real game keeps it.


def serve_players(game, listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=game.accept_player, args=(conn,), daemon=True).start()


def main():
    log(
        f"python {sys.version.split()[0]}, grpcio {grpc.__version__}, "
        f"protobuf {google.protobuf.__version__}, "
        f"GseResponse {'with status' if RESPONSE_HAS_STATUS else 'empty'}"
    )
    game = Game()

    # The client port: players connect here.
    players = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    players.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    players.bind(("127.0.0.1", 0))
    players.listen(16)
    client_port = players.getsockname()[1]
    threading.Thread(target=serve_players, args=(game, players), daemon=True).start()

    # The gRPC port: the agent calls the callbacks here.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    game_grpc.add_GameServerGrpcSdkServiceServicer_to_server(game, server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    if grpc_port == 0:
        fail("cannot listen on 127.0.0.1:0 for gRPC")
    game.server = server
    server.start()

    call_or_fail(
        "ProcessReady",
        gse_pb2.ProcessReadyRequest(
            logPathsToUpload=[], clientPort=client_port, grpcPort=grpc_port
        ),
    )
    log(f"ready: clientPort {client_port}, grpcPort {grpc_port}")

    server.wait_for_termination()  # until OnProcessTerminate stops the server
    sys.exit(0)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # anything unexpected: one line, exit 1
        fail(f"{type(e).__name__}: {e}")
