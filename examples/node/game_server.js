// A GSE game server in Node.js, written the way GSE's tutorials write one: @grpc/grpc-js and
// @grpc/proto-loader with the GSE protos. It serves GameServerGrpcSdkService (OnHealthCheck,
// OnStartGameServerSession, OnProcessTerminate) and calls the agent's GseGrpcSdkService
// (ProcessReady, ActivateGameServerSession, ProcessEnding) with the `pid` and `requestId`
// metadata on every call. Its build links the system's node to /local/game/node in install.sh
// (LaunchPath /local/game/node, Parameters game_server.js). gse-agent's tests run it
// (tests/cases/local_game.rs).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const net = require('net');
const path = require('path');
const grpc = require('@grpc/grpc-js');
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

function call(method, request) {
  return new Promise((resolve, reject) => {
    agent[method](request, metadata(), (err, response) => {
      if (err) {
        reject(new Error(`${method}: ${err.message}`));
      } else if (response.status !== 'OK') {
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

const server = new grpc.Server();
server.addService(sdk.GameServerGrpcSdkService.service, {
  OnHealthCheck(_call, callback) {
    callback(null, { healthStatus: true });
  },
  OnStartGameServerSession(request, callback) {
    const session = request.request.gameServerSession;
    log(`session: ${session.gameServerSessionId}`);
    callback(null, OK);
    call('ActivateGameServerSession', {
      gameServerSessionId: session.gameServerSessionId,
      maxPlayers: session.maxPlayers,
    })
      .then(() => log(`activated: ${session.gameServerSessionId}`))
      .catch(fail);
  },
  OnProcessTerminate(request, callback) {
    log(`terminate: by ${request.request.terminationTime}`);
    callback(null, OK);
    call('ProcessEnding', {})
      .then(() => {
        log('ending');
        server.tryShutdown(() => process.exit(0));
        players.close();
      })
      .catch(fail);
  },
});

// Players connect here and send their player session id; the game answers "welcome".
const players = net.createServer((socket) => {
  socket.once('data', () => socket.end('welcome\n'));
});

players.listen(0, '127.0.0.1', () => {
  const clientPort = players.address().port;
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, grpcPort) => {
    if (err) {
      fail(err);
      return;
    }
    log(`node ${process.version}, /local/game: ${localGame()}`);
    call('ProcessReady', { logPathsToUpload: [], clientPort, grpcPort })
      .then(() => log(`ready: clientPort ${clientPort}, grpcPort ${grpcPort}`))
      .catch(fail);
  });
});
