#!/usr/bin/env bash
# build.sh DEST [PROTO_DIR]: builds the Python GSE game server into DEST, a GSE build folder:
#   game_server.py, the stubs generated from PROTO_DIR (default: the repository's proto/),
#   pylib/ (grpcio and protobuf from requirements.txt, for this interpreter) and install.sh.
# Needs python3 (3.11 here) with pip, and PyPI (or PIP_INDEX_URL / PIP_FIND_LINKS, PIP_CACHE_DIR
# are honoured, as pip reads them). PYTHON=/path/to/python3 picks another interpreter.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest=${1:?usage: build.sh DEST [PROTO_DIR]}
proto_dir=${2:-$here/../../proto}

# The interpreter, resolved now: pylib's wheels (grpcio is a C extension) match exactly this
# one, so install.sh links this very file, not whatever python3 is first on PATH later.
python=$(command -v "${PYTHON:-python3}")
python=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
proto_dir=$(cd "$proto_dir" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pip() {
  "$python" -m pip --disable-pip-version-check --no-input install --quiet --root-user-action=ignore --only-binary :all: "$@"
}

# Code generation with grpc_tools.protoc, installed only for this build.
pip --target "$work/tools" -r "$here/requirements-build.txt"
rm -f "$dest"/GseGrpcSdkService_pb2*.py "$dest"/GameServerGrpcSdkService_pb2*.py
PYTHONPATH="$work/tools" "$python" -m grpc_tools.protoc -I "$proto_dir" \
  --python_out="$dest" --grpc_python_out="$dest" \
  "$proto_dir/GseGrpcSdkService.proto" "$proto_dir/GameServerGrpcSdkService.proto"

# The run time goes into the build itself: a GSE build carries its own libraries.
rm -rf "$dest/pylib"
pip --target "$dest/pylib" -r "$here/requirements.txt"
rm -rf "$dest/pylib/bin"

cp "$here/game_server.py" "$dest/game_server.py"

cat >"$dest/install.sh" <<INSTALL
#!/bin/sh
set -e
# As GSE's tutorials link a runtime that is not in the package: the python3 that build.sh ran
# (resolved when the build was made; pylib/ holds grpcio wheels for exactly this interpreter).
ln -sf '$python' /local/game/python3
INSTALL
chmod 755 "$dest/install.sh"

echo "built $dest (LaunchPath /local/game/python3, Parameters game_server.py; python $python)"
