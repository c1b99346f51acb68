//! Compiles libinjection's C (`libinjection/`, BSD-3-Clause) into the
//! crate: natively with the host's C compiler (for `cargo test`), and for
//! `wasm32-wasip1` with clang and wasi-libc (Debian: `clang`, `lld`,
//! `wasi-libc`, which `scripts/install-toolchains` installs; or a wasi-sdk
//! named by `WASI_SDK_PATH`/`WASI_SYSROOT`).

use std::env;

const SOURCES: [&str; 3] = [
    "libinjection/libinjection_sqli.c",
    "libinjection/libinjection_xss.c",
    "libinjection/libinjection_html5.c",
];

fn main() {
    println!("cargo:rerun-if-changed=libinjection");
    println!("cargo:rerun-if-env-changed=CC_wasm32_wasip1");
    let target = env::var("TARGET").unwrap_or_default();
    let mut build = cc::Build::new();
    build
        .files(SOURCES)
        .include("libinjection")
        .define("LIBINJECTION_VERSION", "\"3.10.0\"")
        .opt_level(2)
        .warnings(false);
    if target.starts_with("wasm32-wasi") {
        // A C compiler for the host (`CC=gcc`) must not be taken for wasm:
        // only clang targets it.
        let compiler = env::var("CC_wasm32_wasip1").unwrap_or_else(|_| "clang".to_owned());
        build.compiler(compiler);
        // clang before 18 knows the target as `wasm32-wasi` only, and finds
        // Debian's wasi-libc (/usr/include/wasm32-wasi) by that name; the
        // last --target wins over the one cc adds.
        build.flag("--target=wasm32-wasi");
    }
    if let Err(error) = build.try_compile("injection") {
        panic!(
            "compiling libinjection for {target} failed: {error}\n\
             the waf plugin needs clang and wasi-libc for wasm32-wasip1 \
             (Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32, \
             as scripts/install-toolchains does)"
        );
    }
}
