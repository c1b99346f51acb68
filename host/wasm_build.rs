//! Building a Cargo workspace for `wasm32-wasip1` from a build script: used
//! by `host/build.rs` (the built-in plugins) and `tests/build.rs` (the test
//! filters), each through `#[path]`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A cargo command in `dir`, without the outer build's settings, which are
/// for the host target, not for wasm.
pub fn cargo(dir: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        command.env_remove(var);
    }
    command
}

/// Builds the Cargo workspace at `dir` for wasm32-wasip1 in release mode
/// into `target_dir`; returns where the `.wasm` files are. Panics (failing
/// the build) when cargo fails.
pub fn build(dir: &Path, target_dir: &Path) -> PathBuf {
    let status = cargo(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--target-dir",
        ])
        .arg(target_dir)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building {} for wasm32-wasip1 failed (is the target installed? `rustup target add wasm32-wasip1`)",
        dir.display()
    );
    target_dir.join("wasm32-wasip1/release")
}
