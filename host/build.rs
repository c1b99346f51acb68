//! Builds the built-in plugins (the `../plugins/` workspace) for
//! `wasm32-wasip1` in release mode, in a target directory of its own under
//! `OUT_DIR`, and writes `builtins.rs` there: one entry per member crate,
//! with its name (the crate's directory), version, description, module and
//! configuration schema (`<name>/schema.json`), which `src/builtins.rs`
//! includes. `WEIR_BUILTINS_DIR` names the directory of the `.wasm` files.

#[path = "wasm_build.rs"]
mod wasm_build;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use wasm_build::{build, cargo};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let plugins = manifest_dir.join("../plugins");
    let target_dir = out_dir.join("plugins-target");
    for file in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", plugins.join(file).display());
    }

    let modules = build(&plugins, &target_dir);
    let metadata = metadata(&plugins);
    let mut builtins = Vec::new();
    for package in local_packages(&metadata) {
        let dir = Path::new(text(&package["manifest_path"]))
            .parent()
            .expect("a manifest path has a directory")
            .to_path_buf();
        // The members and the path dependencies they build from (an SDK).
        println!("cargo:rerun-if-changed={}", dir.display());
        if is_member(&metadata, &package) {
            builtins.push(builtin(&package, &dir, &modules));
        }
    }
    builtins.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        !builtins.is_empty(),
        "{} has no member crates",
        plugins.display()
    );

    let mut code = String::from(
        "// Written by host/build.rs from the `plugins/` workspace.\n\
         static BUILTINS: &[Builtin] = &[\n",
    );
    for b in &builtins {
        write!(
            code,
            "    Builtin {{\n        name: {:?},\n        version: {:?},\n        \
             description: {:?},\n        module: include_bytes!({:?}),\n        \
             schema: include_str!({:?}),\n    }},\n",
            b.name,
            b.version,
            b.description,
            b.module.display().to_string(),
            b.schema.display().to_string(),
        )
        .expect("writing to a String");
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("builtins.rs"), code).expect("OUT_DIR is writable");
    println!("cargo:rustc-env=WEIR_BUILTINS_DIR={}", modules.display());
}

/// One built-in, as `builtins.rs` lists it.
struct Found {
    name: String,
    version: String,
    description: String,
    module: PathBuf,
    schema: PathBuf,
}

/// Reads member `package` (in `dir`) of the plugins workspace; its module is
/// in `modules`, named after its library target.
fn builtin(package: &serde_json::Value, dir: &Path, modules: &Path) -> Found {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a plugin directory has a UTF-8 name")
        .to_owned();
    let library = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|types| types.iter().any(|c| c == "cdylib"))
        })
        .unwrap_or_else(|| panic!("plugin `{name}` has no cdylib target"));
    let module = modules.join(format!("{}.wasm", text(&library["name"]).replace('-', "_")));
    assert!(module.is_file(), "{} was not built", module.display());
    let schema = dir.join("schema.json");
    let parsed: serde_json::Value = std::fs::read(&schema)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| {
            panic!(
                "plugin `{name}` needs a JSON Schema of its configuration in {}",
                schema.display()
            )
        });
    assert!(
        parsed["type"] == "object",
        "{}: the configuration schema must describe an object",
        schema.display()
    );
    let description = package["description"]
        .as_str()
        .unwrap_or_else(|| panic!("plugin `{name}` needs a `description` in its Cargo.toml"))
        .to_owned();
    Found {
        version: text(&package["version"]).to_owned(),
        name,
        description,
        module,
        schema,
    }
}

/// `cargo metadata` of the workspace at `dir` (run after the build, which
/// fetched what it needs).
fn metadata(dir: &Path) -> serde_json::Value {
    let output = cargo(dir)
        .args(["metadata", "--format-version", "1"])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo metadata failed in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// The packages of the workspace's build that are not from a registry: its
/// members and their path dependencies.
fn local_packages(metadata: &serde_json::Value) -> Vec<serde_json::Value> {
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["source"].is_null())
        .cloned()
        .collect()
}

fn is_member(metadata: &serde_json::Value, package: &serde_json::Value) -> bool {
    metadata["workspace_members"]
        .as_array()
        .is_some_and(|members| members.contains(&package["id"]))
}

/// A string field of cargo's metadata.
fn text(value: &serde_json::Value) -> &str {
    value
        .as_str()
        .expect("cargo metadata has this field as a string")
}
