// A GSE game server in Go, on grpc-go, the way GSE's Go tutorial wrote one: the stubs are
// generated from the GSE protos into package grpcsdk (go_package "./grpcsdk").
//
// It serves GameServerGrpcSdkService (OnHealthCheck, OnStartGameServerSession,
// OnProcessTerminate) on a port of its own, takes players on another, and calls the agent's
// GseGrpcSdkService (ProcessReady, ActivateGameServerSession, AcceptPlayerSession,
// TerminateGameServerSession, ProcessEnding). See examples/README.md for the contract.
//
// build.sh builds it into DEST/game-server: LaunchPath /local/game/game-server, no Parameters.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"gse-game-server/grpcsdk"
)

func logf(format string, args ...interface{}) {
	// os.Stdout is unbuffered: every line is out at once.
	fmt.Printf(format+"\n", args...)
}

// fail: anything unexpected, from any goroutine: say so and exit 1.
func fail(format string, args ...interface{}) {
	logf("error: "+format, args...)
	os.Exit(1)
}

// newUUID returns a random (version 4) UUID for the requestId metadata.
func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		fail("random: %v", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// callError is a failed call to the agent: an RPC error (non-OK gRPC status: how gse-agent
// refuses) or a GseResponse whose status is not OK.
type callError struct {
	method, code, reason string
}

func (e *callError) Error() string { return e.method + ": " + e.code + ": " + e.reason }

var agent grpcsdk.GseGrpcSdkServiceClient

// call runs one call to the agent. Every call carries the caller's pid and a fresh request id,
// as GSE requires (grpc-go sends the keys lower-cased, as HTTP/2 wants).
func call(method string, rpc func(ctx context.Context) (*grpcsdk.GseResponse, error)) error {
	ctx := metadata.AppendToOutgoingContext(context.Background(),
		"pid", strconv.Itoa(os.Getpid()), "requestId", newUUID())
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := rpc(ctx)
	if err != nil {
		s := status.Convert(err)
		return &callError{method, s.Code().String(), s.Message()}
	}
	if resp.Status != grpcsdk.GseResponse_OK {
		reason := resp.ErrorMessage
		if reason == "" {
			reason = resp.Status.String()
		}
		return &callError{method, resp.Status.String(), reason}
	}
	return nil
}

func mustCall(method string, rpc func(ctx context.Context) (*grpcsdk.GseResponse, error)) {
	if err := call(method, rpc); err != nil {
		fail("%v", err)
	}
}

// The answer to the agent's callbacks.
func success() *grpcsdk.GseResponse {
	return &grpcsdk.GseResponse{Status: grpcsdk.GseResponse_OK, ResponseData: "SUCCESS"}
}

// game serves the callbacks the agent calls on the grpcPort reported in ProcessReady.
type game struct {
	grpcsdk.UnimplementedGameServerGrpcSdkServiceServer

	mu          sync.Mutex
	sessionID   string // the game server session this process hosts
	terminating bool
	server      *grpc.Server
}

func (g *game) OnHealthCheck(ctx context.Context, req *grpcsdk.HealthCheckRequest) (*grpcsdk.HealthCheckResponse, error) {
	return &grpcsdk.HealthCheckResponse{HealthStatus: true}, nil
}

func (g *game) OnStartGameServerSession(ctx context.Context, req *grpcsdk.StartGameServerSessionRequest) (*grpcsdk.GseResponse, error) {
	session := req.GetGameServerSession()
	id := session.GetGameServerSessionId()
	g.mu.Lock()
	g.sessionID = id
	g.mu.Unlock()
	logf("session: %s", id)
	// Set the session up, then activate it from inside the handler, before it returns, as
	// GSE's tutorials do.
	mustCall("ActivateGameServerSession", func(ctx context.Context) (*grpcsdk.GseResponse, error) {
		return agent.ActivateGameServerSession(ctx, &grpcsdk.ActivateGameServerSessionRequest{
			GameServerSessionId: id,
			MaxPlayers:          session.GetMaxPlayers(),
		})
	})
	logf("activated: %s", id)
	return success(), nil
}

func (g *game) OnProcessTerminate(ctx context.Context, req *grpcsdk.ProcessTerminateRequest) (*grpcsdk.GseResponse, error) {
	g.mu.Lock()
	if g.terminating {
		g.mu.Unlock()
		return success(), nil
	}
	g.terminating = true
	id := g.sessionID
	g.mu.Unlock()
	logf("terminate: %d", req.GetTerminationTime())
	// End the session (if there is one) and say the process ends, inside the handler.
	if id != "" {
		mustCall("TerminateGameServerSession", func(ctx context.Context) (*grpcsdk.GseResponse, error) {
			return agent.TerminateGameServerSession(ctx, &grpcsdk.TerminateGameServerSessionRequest{GameServerSessionId: id})
		})
		logf("session terminated: %s", id)
	}
	mustCall("ProcessEnding", func(ctx context.Context) (*grpcsdk.GseResponse, error) {
		return agent.ProcessEnding(ctx, &grpcsdk.ProcessEndingRequest{})
	})
	logf("ending")
	// Exit once this answer is out: GracefulStop waits for this handler's response, then
	// Serve returns in main and the process exits 0.
	go g.server.GracefulStop()
	return success(), nil
}

// acceptPlayer: a player sends its player session id and a newline; the agent decides.
func (g *game) acceptPlayer(conn net.Conn) {
	defer conn.Close() // this example closes after the answer; a real game keeps the player
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return
	}
	player := strings.TrimSpace(line)
	g.mu.Lock()
	id := g.sessionID
	g.mu.Unlock()
	err = call("AcceptPlayerSession", func(ctx context.Context) (*grpcsdk.GseResponse, error) {
		return agent.AcceptPlayerSession(ctx, &grpcsdk.AcceptPlayerSessionRequest{
			GameServerSessionId: id,
			PlayerSessionId:     player,
		})
	})
	if err, ok := err.(*callError); ok {
		logf("player refused: %s: %s", player, err.reason)
		fmt.Fprintf(conn, "refused: %s\n", err.reason)
		return
	}
	logf("player accepted: %s", player)
	fmt.Fprintf(conn, "welcome %s\n", player)
}

func main() {
	logf("go %s, grpc-go %s", strings.TrimPrefix(runtime.Version(), "go"), grpc.Version)

	address := os.Getenv("GSE_SDK_ADDRESS")
	if address == "" {
		address = "127.0.0.1:5758"
	}
	conn, err := grpc.Dial(address, grpc.WithInsecure()) // the SDK is plaintext on loopback
	if err != nil {
		fail("dial %s: %v", address, err)
	}
	agent = grpcsdk.NewGseGrpcSdkServiceClient(conn)
	g := &game{}

	// The client port: players connect here.
	players, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen for players: %v", err)
	}
	go func() {
		for {
			c, err := players.Accept()
			if err != nil {
				return
			}
			go g.acceptPlayer(c)
		}
	}()

	// The gRPC port: the agent calls the callbacks here.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen for gRPC: %v", err)
	}
	g.server = grpc.NewServer()
	grpcsdk.RegisterGameServerGrpcSdkServiceServer(g.server, g)
	served := make(chan error, 1)
	go func() { served <- g.server.Serve(lis) }()

	clientPort := int32(players.Addr().(*net.TCPAddr).Port)
	grpcPort := int32(lis.Addr().(*net.TCPAddr).Port)
	mustCall("ProcessReady", func(ctx context.Context) (*grpcsdk.GseResponse, error) {
		return agent.ProcessReady(ctx, &grpcsdk.ProcessReadyRequest{
			LogPathsToUpload: []string{},
			ClientPort:       clientPort,
			GrpcPort:         grpcPort,
		})
	})
	logf("ready: clientPort %d, grpcPort %d", clientPort, grpcPort)

	if err := <-served; err != nil { // until OnProcessTerminate stops the server
		fail("serve: %v", err)
	}
	os.Exit(0)
}
