#!/usr/bin/env bash
# build.sh DEST [PROTO_DIR]: builds the Go GSE game server into DEST/game-server (a GSE build
# folder holding just the binary), from the protos in PROTO_DIR (default: the repository's
# proto/). Offline, from Debian's packages only: golang-go, golang-google-grpc-dev and
# golang-goprotobuf-dev (their sources under /usr/share/gocode), protobuf-compiler.
# GOCACHE is honoured when set; otherwise a temporary cache is used and removed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest=${1:?usage: build.sh DEST [PROTO_DIR]}
proto_dir=${2:-$here/../../proto}

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
proto_dir=$(cd "$proto_dir" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# GOPATH mode on Debian's Go sources: no modules, no network.
pkg="$work/src/gse-game-server"
mkdir -p "$pkg"
cp "$here/main.go" "$pkg/main.go"

# Package grpcsdk (go_package "./grpcsdk"), messages and gRPC stubs in one pass: Debian's
# protoc-gen-go is golang/protobuf 1.3.5, whose built-in grpc plugin (plugins=grpc) writes the
# stubs. protoc-gen-go-grpc would need google.golang.org/protobuf, which Debian does not ship
# to this machine, so it cannot be built offline.
protoc -I "$proto_dir" --plugin=protoc-gen-go=/usr/bin/protoc-gen-go \
  --go_out=plugins=grpc:"$pkg" \
  "$proto_dir/GseGrpcSdkService.proto" "$proto_dir/GameServerGrpcSdkService.proto"

export GO111MODULE=off GOPATH="$work:/usr/share/gocode" GOFLAGS= GOPROXY=off CGO_ENABLED=0
export GOCACHE=${GOCACHE:-$work/go-build}
(cd "$pkg" && go build -trimpath -ldflags="-s -w" -o "$dest/game-server" .)

echo "built $dest/game-server (LaunchPath /local/game/game-server)"
