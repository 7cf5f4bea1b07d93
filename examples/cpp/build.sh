#!/bin/bash
# Builds the C++ GSE game server into DEST (a GSE build folder: just the game-server binary).
# Usage: build.sh DEST [PROTO_DIR]   (PROTO_DIR defaults to this repository's proto/)
# Needs Debian's g++, pkg-config, libgrpc++-dev, protobuf-compiler and protobuf-compiler-grpc.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:?usage: build.sh DEST [PROTO_DIR]}"
proto_dir="$(cd "${2:-$here/../../proto}" && pwd)"

mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

# Generated code lives outside DEST, which stays what a studio would zip.
gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT

# Generate the messages (*.pb.*) and the gRPC stubs and service bases (*.grpc.pb.*).
protoc -I "$proto_dir" \
  --cpp_out="$gen" \
  --grpc_out="$gen" --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" \
  GseGrpcSdkService.proto GameServerGrpcSdkService.proto

# One g++ line: the game and the generated code, linked against the system's gRPC.
# shellcheck disable=SC2046
g++ -std=c++17 -O2 -pthread -I "$gen" \
  "$here/game_server.cpp" "$gen"/*.pb.cc \
  -o "$dest/game-server" \
  $(pkg-config --cflags --libs grpc++ protobuf)
