//! The module map of `host/src` has no import that runs upward and no cycle:
//! each top-level module may name (`crate::…`) only modules of a lower layer.
//! `ARCHITECTURE.md` draws the same layers.

use std::path::{Path, PathBuf};

/// Lowest first. A module may import modules of earlier layers only.
const LAYERS: &[&[&str]] = &[
    &[
        "worker",
        "body",
        "request_id",
        "normalize",
        "grpc",
        "builtins",
        "pem",
        "file_watch",
        "tunnel",
        "observe",
    ],
    &["config"],
    &["error", "exchange", "services"],
    &["router", "upstream", "wasm"],
    &["lifecycle"],
    &["filters"],
    &["snapshot"],
    &["server"],
    &["gateway"],
    &["control", "tool"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None` for the crate roots).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// Every `crate::name` a line of code (not a comment) names.
fn imports(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn no_module_imports_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let own = layer(&module)
            .unwrap_or_else(|| panic!("module `{module}` is in no layer: add it to LAYERS"));
        let text = std::fs::read_to_string(file).expect("readable source");
        for imported in imports(&text) {
            if imported == module {
                continue;
            }
            match layer(&imported) {
                Some(theirs) if theirs < own => {}
                _ => violations.push(format!(
                    "{}: `{module}` imports `{imported}`",
                    file.display()
                )),
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
