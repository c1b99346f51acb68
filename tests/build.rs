//! Compiles the test filter in `filters/` and the proxy-wasm SDK's own
//! examples in `sdk-examples/` for
//! `wasm32-wasip1` with the public proxy-wasm SDK, exactly as a filter author
//! would, and tells the tests where the `.wasm` files are
//! (`WEIR_TEST_FILTER_WASM`, `WEIR_SDK_EXAMPLES_DIR`). The built-in plugins
//! are built once, by the `weir` crate, which embeds them.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));

    let filters = build_wasm_workspace(
        &manifest_dir.join("filters"),
        &out_dir.join("filters-target"),
    );
    println!(
        "cargo:rustc-env=WEIR_TEST_FILTER_WASM={}",
        filters.join("weir_test_filter.wasm").display()
    );
    let examples = build_wasm_workspace(
        &manifest_dir.join("sdk-examples"),
        &out_dir.join("sdk-examples-target"),
    );
    println!(
        "cargo:rustc-env=WEIR_SDK_EXAMPLES_DIR={}",
        examples.display()
    );
}

/// Builds the Cargo workspace at `dir` for wasm32-wasip1; returns where the `.wasm` files are.
fn build_wasm_workspace(dir: &std::path::Path, target_dir: &std::path::Path) -> PathBuf {
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("Cargo.toml").display()
    );
    for entry in walk(dir) {
        println!("cargo:rerun-if-changed={}", entry.display());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--target-dir",
        ])
        .arg(target_dir);
    // The outer build's flags are for the host target, not for wasm.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        command.env_remove(var);
    }
    let status = command.status().expect("cargo runs");
    assert!(
        status.success(),
        "building {} for wasm32-wasip1 failed (is the target installed? `rustup target add wasm32-wasip1`)",
        dir.display()
    );
    target_dir.join("wasm32-wasip1/release")
}

/// Every `src` directory under `dir` (one level of member crates, or `dir` itself).
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if dir.join("src").is_dir() {
        found.push(dir.join("src"));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.join("src").is_dir() {
                found.push(path.join("src"));
                found.push(path.join("Cargo.toml"));
            }
        }
    }
    found
}
