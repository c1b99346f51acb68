#!/usr/bin/env bash
# Builds the Zig hello filter: `./build.sh [OUT_DIR]` writes OUT_DIR/hello_zig.wasm
# (default OUT_DIR: ./out). Needs Zig (`pip install ziglang`; set ZIG to use
# another zig binary).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-./out}" && cd "${1:-./out}" && pwd)"

# ZIG may name a zig binary; by default, the one PyPI's `ziglang` ships.
read -r -a zig <<< "${ZIG:-python3 -m ziglang}"
# -fno-entry: a library the host calls into, with no _start; -rdynamic
# exports every `export fn`. Zig keeps its cache in ZIG_LOCAL_CACHE_DIR
# (default: .zig-cache next to this script).
export ZIG_LOCAL_CACHE_DIR="${ZIG_LOCAL_CACHE_DIR:-$here/.zig-cache}"
"${zig[@]}" build-exe "$here/hello.zig" -target wasm32-wasi -O ReleaseSmall \
  -fno-entry -rdynamic -femit-bin="$out/hello_zig.wasm"
