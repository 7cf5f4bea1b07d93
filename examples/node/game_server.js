// A GSE game server in Node.js, written the way GSE's Node.js tutorial wrote one:
// @grpc/grpc-js and @grpc/proto-loader with the GSE protos. It serves GameServerGrpcSdkService
// (OnHealthCheck, OnStartGameServerSession, OnProcessTerminate) on a port of its own and calls
// the agent's GseGrpcSdkService with the `pid` and `requestId` metadata on every call.
// The contract it follows is in ../README.md.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const net = require('net');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const grpcVersion = require('@grpc/grpc-js/package.json').version;
const protoLoader = require('@grpc/proto-loader');

const protoDir = path.join(__dirname, 'proto');
const definition = protoLoader.loadSync(
  ['GseGrpcSdkService.proto', 'GameServerGrpcSdkService.proto'],
  { includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true },
);
const sdk = grpc.loadPackageDefinition(definition).tencentcloud.gse.grpcsdk;
const agentAddress = process.env.GSE_SDK_ADDRESS || '127.0.0.1:5758';
const agent = new sdk.GseGrpcSdkService(agentAddress, grpc.credentials.createInsecure());

function log(line) {
  process.stdout.write(`${line}\n`);
}

// Every call to the agent carries the caller's pid and a fresh request id.
function metadata() {
  const md = new grpc.Metadata();
  md.set('pid', String(process.pid));
  md.set('requestId', crypto.randomUUID());
  return md;
}

// A call fails with an RPC error; with the documented GseResponse, also with a status that is
// not OK (an SDK copy whose GseResponse is empty has no status: only the RPC error counts).
function call(method, request) {
  return new Promise((resolve, reject) => {
    agent[method](request, metadata(), (err, response) => {
      if (err) {
        reject(new Error(`${method}: ${err.details || err.message}`));
      } else if (response.status !== undefined && response.status !== 'OK') {
        reject(new Error(`${method}: ${response.status} ${response.errorMessage}`));
      } else {
        resolve(response);
      }
    });
  });
}

function fail(err) {
  log(`error: ${err.message}`);
  process.exit(1);
}

// Where GSE unpacked the build: this file is there when the agent gives the game its own
// /local/game (or when game-root is /local/game).
function localGame() {
  try {
    const here = fs.statSync(__filename);
    const there = fs.statSync('/local/game/game_server.js');
    return here.ino === there.ino && here.dev === there.dev ? 'this build' : 'another build';
  } catch (e) {
    return `missing (${e.code})`;
  }
}

const OK = { status: 'OK', responseData: 'SUCCESS', errorMessage: '' };
let session = null;

const server = new grpc.Server();
server.addService(sdk.GameServerGrpcSdkService.service, {
  OnHealthCheck(_call, callback) {
    callback(null, { healthStatus: true });
  },
  // Activate from inside the handler, before answering, as GSE's tutorials do.
  async OnStartGameServerSession(request, callback) {
    session = request.request.gameServerSession;
    log(`session: ${session.gameServerSessionId}`);
    try {
      await call('ActivateGameServerSession', {
        gameServerSessionId: session.gameServerSessionId,
        maxPlayers: session.maxPlayers,
      });
      log(`activated: ${session.gameServerSessionId}`);
      callback(null, OK);
    } catch (err) {
      callback(null, OK);
      fail(err);
    }
  },
  // End the session, then the process, then exit once this answer is sent.
  async OnProcessTerminate(request, callback) {
    log(`terminate: ${request.request.terminationTime}`);
    try {
      if (session) {
        await call('TerminateGameServerSession', {
          gameServerSessionId: session.gameServerSessionId,
        });
        log(`session terminated: ${session.gameServerSessionId}`);
      }
      await call('ProcessEnding', {});
      log('ending');
    } catch (err) {
      callback(null, OK);
      fail(err);
      return;
    }
    callback(null, OK);
    players.close();
    server.tryShutdown(() => process.exit(0));
  },
});

// A player connects to the client port and sends its player session id and a newline.
const players = net.createServer((socket) => {
  let line = '';
  socket.on('data', async (chunk) => {
    line += chunk.toString();
    const end = line.indexOf('\n');
    if (end < 0) {
      return;
    }
    socket.removeAllListeners('data');
    const playerSessionId = line.slice(0, end).trim();
    try {
      await call('AcceptPlayerSession', {
        gameServerSessionId: session ? session.gameServerSessionId : '',
        playerSessionId,
      });
      log(`player accepted: ${playerSessionId}`);
      socket.end(`welcome ${playerSessionId}\n`);
    } catch (err) {
      log(`player refused: ${playerSessionId}: ${err.message}`);
      socket.end(`refused: ${err.message}\n`);
    }
  });
  socket.on('error', () => {});
});

log(`node ${process.version} game on @grpc/grpc-js ${grpcVersion}, /local/game: ${localGame()}`);
players.listen(0, '127.0.0.1', () => {
  const clientPort = players.address().port;
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, grpcPort) => {
    if (err) {
      fail(err);
      return;
    }
    call('ProcessReady', { logPathsToUpload: [], clientPort, grpcPort })
      .then(() => log(`ready: clientPort ${clientPort}, grpcPort ${grpcPort}`))
      .catch(fail);
  });
});
