//! Compiles the test filter in `filters/` and the proxy-wasm SDK's own
//! examples in `sdk-examples/` for
//! `wasm32-wasip1` with the public proxy-wasm SDK, exactly as a filter author
//! would; builds every example filter in `../examples/filters/` (one per
//! language) with its own `build.sh`; and tells the tests where the `.wasm`
//! files are (`WEIR_TEST_FILTER_WASM`, `WEIR_SDK_TEST_FILTER_WASM` (the
//! weir-sdk filter in `sdk-filter/`), `WEIR_SDK_EXAMPLES_DIR`,
//! `WEIR_EXAMPLE_FILTERS_DIR`). The built-in plugins are built once, by the
//! `weir` crate, which embeds them.

#[path = "../host/wasm_build.rs"]
mod wasm_build;

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    // The weir-sdk example builds on weir-sdk: a change to weir-sdk rebuilds
    // the example (cargo scans a directory's files for changes).
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../plugin-sdk/src").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../plugin-sdk/Cargo.toml").display()
    );

    let filters = build_wasm_workspace(
        &manifest_dir.join("filters"),
        &out_dir.join("filters-target"),
    );
    println!(
        "cargo:rustc-env=WEIR_TEST_FILTER_WASM={}",
        filters.join("weir_test_filter.wasm").display()
    );
    let sdk_filter = build_wasm_workspace(
        &manifest_dir.join("sdk-filter"),
        &out_dir.join("sdk-filter-target"),
    );
    println!(
        "cargo:rustc-env=WEIR_SDK_TEST_FILTER_WASM={}",
        sdk_filter.join("weir_sdk_test_filter.wasm").display()
    );
    let examples = build_wasm_workspace(
        &manifest_dir.join("sdk-examples"),
        &out_dir.join("sdk-examples-target"),
    );
    println!(
        "cargo:rustc-env=WEIR_SDK_EXAMPLES_DIR={}",
        examples.display()
    );
    let example_filters = out_dir.join("example-filters");
    build_example_filters(
        &manifest_dir.join("../examples/filters"),
        &example_filters,
        &out_dir,
    );
    println!(
        "cargo:rustc-env=WEIR_EXAMPLE_FILTERS_DIR={}",
        example_filters.display()
    );
}

/// Runs `build.sh <out>` of every language directory under `dir` (those with
/// a `build.sh`), two at a time; each writes `<out>/hello_<language>.wasm`.
/// Panics, with the build's output, when one fails.
fn build_example_filters(dir: &Path, out: &Path, out_dir: &Path) {
    // The README lists the languages: adding one changes it, which reruns this.
    println!("cargo:rerun-if-changed={}", dir.join("README.md").display());
    let mut languages: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.join("build.sh").is_file())
                .collect()
        })
        .unwrap_or_default();
    languages.sort();
    for language in &languages {
        for file in example_sources(language) {
            println!("cargo:rerun-if-changed={}", file.display());
        }
    }
    let failures: Vec<String> = std::thread::scope(|scope| {
        // Two builds at a time: Go and Rust each keep a core busy.
        let builds: Vec<_> = languages
            .chunks(languages.len().div_ceil(2).max(1))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|language| build_example(language, out, out_dir).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        builds
            .into_iter()
            .flat_map(|build| {
                build
                    .join()
                    .unwrap_or_else(|_| vec!["a build thread panicked".into()])
            })
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{}\nIf a compiler is missing, `scripts/install-toolchains` installs them all \
         (Go and Zig from PyPI, AssemblyScript from npm, clang and wasi-libc from Debian).",
        failures.join("\n")
    );
}

/// Runs one example's `build.sh`; on failure, what to print.
fn build_example(language: &Path, out: &Path, out_dir: &Path) -> Result<(), String> {
    let name = language
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut command = Command::new("bash");
    command
        .arg(language.join("build.sh"))
        .arg(out)
        .current_dir(language)
        // Rust examples build in OUT_DIR, Zig caches there: the source tree stays clean.
        .env("CARGO_TARGET_DIR", out_dir.join(format!("{name}-target")))
        .env("ZIG_LOCAL_CACHE_DIR", out_dir.join("zig-cache"));
    // The outer build's flags are for the host target, not for wasm.
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        command.env_remove(var);
    }
    let output = command
        .output()
        .map_err(|e| format!("examples/filters/{name}: cannot run bash: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "building examples/filters/{name} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The files of an example that its build reads: everything but what
/// builds and package managers leave there.
fn example_sources(dir: &Path) -> Vec<PathBuf> {
    const SKIPPED: [&str; 5] = ["node_modules", "target", "out", ".zig-cache", "zig-out"];
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !SKIPPED.iter().any(|s| entry.file_name() == *s) {
                    pending.push(path);
                }
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// Builds the Cargo workspace at `dir` for wasm32-wasip1, rebuilt when its
/// sources change; returns where the `.wasm` files are.
fn build_wasm_workspace(dir: &Path, target_dir: &Path) -> PathBuf {
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("Cargo.toml").display()
    );
    for entry in walk(dir) {
        println!("cargo:rerun-if-changed={}", entry.display());
    }
    wasm_build::build(dir, target_dir)
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
