//! Compiles the test filter in `filters/` for `wasm32-wasip1` with the public
//! proxy-wasm SDK, exactly as a filter author would, and tells the tests where
//! the `.wasm` is (`WEIR_TEST_FILTER_WASM`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let filters = manifest_dir.join("filters");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = out_dir.join("filters-target");
    println!("cargo:rerun-if-changed={}", filters.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        filters.join("Cargo.toml").display()
    );

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&filters)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--target-dir",
        ])
        .arg(&target_dir);
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
        "building the test filter for wasm32-wasip1 failed (is the target installed? `rustup target add wasm32-wasip1`)"
    );
    let wasm = target_dir.join("wasm32-wasip1/release/weir_test_filter.wasm");
    println!("cargo:rustc-env=WEIR_TEST_FILTER_WASM={}", wasm.display());
}
