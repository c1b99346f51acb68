#!/usr/bin/env bash
# Builds the Rust (weir-sdk) hello filter: `./build.sh [OUT_DIR]` writes
# OUT_DIR/hello_rust_weir_sdk.wasm (default OUT_DIR: ./out).
# Needs cargo and the wasm32-wasip1 target (`rustup target add wasm32-wasip1`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-./out}" && cd "${1:-./out}" && pwd)"
target="${CARGO_TARGET_DIR:-$here/target}"

"${CARGO:-cargo}" build --manifest-path "$here/Cargo.toml" --release --locked \
  --target wasm32-wasip1 --target-dir "$target"
cp "$target/wasm32-wasip1/release/hello_rust_weir_sdk.wasm" "$out/hello_rust_weir_sdk.wasm"
