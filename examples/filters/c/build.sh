#!/usr/bin/env bash
# Builds the C hello filter: `./build.sh [OUT_DIR]` writes OUT_DIR/hello_c.wasm
# (default OUT_DIR: ./out). Needs clang, lld and wasi-libc (Debian:
# `apt-get install clang lld wasi-libc libclang-rt-dev-wasm32`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-./out}" && cd "${1:-./out}" && pwd)"

# -mexec-model=reactor: a library the host calls into (it exports
# _initialize), not a program with a main. -Wl,--strip-debug keeps the names
# section for readable traps and drops DWARF.
"${CC:-clang}" --target=wasm32-wasi -mexec-model=reactor -O2 -std=c11 \
  -Wall -Wextra -Werror -Wno-unused-parameter \
  -Wl,--strip-debug \
  -o "$out/hello_c.wasm" "$here/hello.c"
