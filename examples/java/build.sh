#!/usr/bin/env bash
# Builds the Java GSE game server into DEST as a GSE build folder (what you would zip and upload):
#   DEST/game-server.jar   GameServer and the classes generated from the GSE protos
#   DEST/lib/*.jar         the runtime jars it needs (grpc-java, Netty, protobuf-java, ...)
#   DEST/install.sh        links the host's java to /local/game/java (LaunchPath)
# Usage: build.sh DEST [PROTO_DIR]   (PROTO_DIR: default, this repository's proto/)
# Offline, from Debian's packages only (see README.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:?usage: build.sh DEST [PROTO_DIR]}"
proto_dir="$(cd "${2:-$here/../../proto}" && pwd)"
jars=/usr/share/java

# What the game needs at run time: grpc-java 1.41 on Netty's NIO transport (no native epoll),
# protobuf-java 3.21 (the same version as Debian's protoc), Guava and PerfMark.
runtime=(
    grpc-api grpc-context grpc-core grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub
    netty-buffer netty-codec netty-codec-http netty-codec-http2 netty-common netty-handler
    netty-resolver netty-transport
    protobuf guava perfmark-api
)
# Only to compile: the generated stubs carry @javax.annotation.Generated, gone from Java 11 on.
compile_only=(geronimo-annotation-1.3-spec)

for tool in protoc javac jar /usr/bin/grpc_java_plugin; do
    command -v "$tool" >/dev/null || {
        echo "build.sh: $tool not found (see README.md: Prerequisites)" >&2
        exit 1
    }
done
classpath=""
for j in "${runtime[@]}" "${compile_only[@]}"; do
    [ -f "$jars/$j.jar" ] || {
        echo "build.sh: $jars/$j.jar not found (see README.md: Prerequisites)" >&2
        exit 1
    }
    classpath="$classpath${classpath:+:}$jars/$j.jar"
done

mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/gen" "$work/classes"

# Message classes (GseGrpcSdkServiceOuterClass, ...) and the gRPC stubs (GseGrpcSdkServiceGrpc, ...).
protoc -I "$proto_dir" \
    --java_out="$work/gen" \
    --plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin \
    --grpc-java_out="$work/gen" \
    GseGrpcSdkService.proto GameServerGrpcSdkService.proto

mapfile -t sources < <(find "$work/gen" -name '*.java')
javac --release 17 -nowarn -encoding UTF-8 -cp "$classpath" -d "$work/classes" \
    "${sources[@]}" "$here/GameServer.java"
jar --create --file "$dest/game-server.jar" --main-class GameServer -C "$work/classes" .

# The runtime jars, copied (not linked) so that the build folder stands on its own.
rm -rf "$dest/lib"
mkdir -p "$dest/lib"
for j in "${runtime[@]}"; do
    cp -L "$jars/$j.jar" "$dest/lib/$j.jar"
done

# GSE runs install.sh as root in the build folder, seen at /local/game, before any game starts.
cat >"$dest/install.sh" <<'EOF'
#!/bin/sh
set -e
# As GSE's Java tutorial does: the JVM comes from the host, linked into the build so that the
# LaunchPath can be /local/game/java.
java="$(command -v java)" || {
    echo "install.sh: no java on this host (Debian: apt-get install openjdk-17-jre-headless)" >&2
    exit 1
}
ln -sf "$(readlink -f "$java")" /local/game/java
EOF
chmod 755 "$dest/install.sh"
echo "built $dest: LaunchPath /local/game/java, Parameters -cp /local/game/game-server.jar:/local/game/lib/* GameServer"
