#!/usr/bin/env bash
# Builds the AssemblyScript hello filter: `./build.sh [OUT_DIR]` writes
# OUT_DIR/hello_assemblyscript.wasm (default OUT_DIR: ./out). Needs the
# compiler from package.json installed here first (`npm ci`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-./out}" && cd "${1:-./out}" && pwd)"

cd "$here"
asc="$here/node_modules/.bin/asc"
if [[ ! -x "$asc" ]]; then
  echo "no AssemblyScript compiler in $here/node_modules: run \`npm ci\` there" >&2
  exit 1
fi
# --use abort=…: Proxy-Wasm hosts provide no `env.abort`, so failures log
# through proxy_log and trap instead. The module's start function runs when
# the host instantiates it, before any callback.
"$asc" "$here/assembly/index.ts" --optimize \
  --use abort=assembly/abi/abortFilter \
  --outFile "$out/hello_assemblyscript.wasm"
