#!/usr/bin/env bash
# Builds the Node.js example into DEST as a GSE build: game_server.js, the protos, the npm
# packages pinned by package-lock.json (`npm ci`), and an install.sh that links the host's node
# into /local/game. Usage: build.sh DEST [PROTO_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:?usage: build.sh DEST [PROTO_DIR]}"
protos="${2:-$here/../../proto}"
mkdir -p "$dest/proto"
cp "$here/game_server.js" "$here/package.json" "$here/package-lock.json" "$dest/"
cp "$protos/GseGrpcSdkService.proto" "$protos/GameServerGrpcSdkService.proto" "$dest/proto/"
# Exactly the lock file's versions; no install scripts (none is needed).
(cd "$dest" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
cat > "$dest/install.sh" <<'INSTALL'
#!/bin/sh
set -e
# As GSE's tutorials link a runtime that is not in the package.
ln -sf "$(command -v node)" /local/game/node
INSTALL
chmod 755 "$dest/install.sh"
