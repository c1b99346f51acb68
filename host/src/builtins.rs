//! The built-in plugins: the crates of `plugins/`, compiled to Wasm by
//! `build.rs` and embedded in the binary with their version and the JSON
//! Schema of their configuration. A manifest names one with
//! `builtin: NAME` instead of a `file`. Depends on nothing else in Weir.

use sha2::{Digest, Sha256};

/// One plugin compiled into this binary.
#[derive(Debug)]
pub struct Builtin {
    /// The name a manifest's `builtin:` gives (its directory in `plugins/`).
    pub name: &'static str,
    /// Its crate's version.
    pub version: &'static str,
    /// What it does, in one line (its crate's description).
    pub description: &'static str,
    /// The Wasm module.
    pub module: &'static [u8],
    /// The JSON Schema (draft 2020-12) of a filter's `config`.
    pub schema: &'static str,
}

impl Builtin {
    /// The SHA-256 of its module, in hex, as `weir plugins versions` shows
    /// an uploaded module's.
    pub fn sha256(&self) -> String {
        Sha256::digest(self.module)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// Every built-in, sorted by name.
pub fn all() -> &'static [Builtin] {
    BUILTINS
}

/// The built-in called `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The built-ins' names, comma-separated, for messages about an unknown one.
pub fn names() -> String {
    BUILTINS
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The directory the build wrote the built-in modules to, as `.wasm` files
/// (it exists only where this crate was built: the tests name these files
/// to run the same modules as plugin files).
pub const BUILD_DIR: &str = env!("WEIR_BUILTINS_DIR");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_a_wasm_module_with_an_object_schema() {
        let names: Vec<&str> = all().iter().map(|b| b.name).collect();
        assert_eq!(
            names,
            [
                "acl",
                "aggregate",
                "basic-auth",
                "cache",
                "cors",
                "header-rewrite",
                "ip-restriction",
                "jwt-auth",
                "key-auth",
                "oauth2-introspection",
                "rate-limit",
                "transform",
                "validation",
                "waf"
            ]
        );
        for builtin in all() {
            assert!(
                builtin.module.starts_with(b"\0asm"),
                "{} is not Wasm",
                builtin.name
            );
            let schema: serde_json::Value =
                serde_json::from_str(builtin.schema).expect("the schema is JSON");
            assert_eq!(
                schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{}",
                builtin.name
            );
            assert_eq!(schema["type"], "object", "{}", builtin.name);
            assert!(!builtin.version.is_empty() && !builtin.description.is_empty());
            assert_eq!(builtin.sha256().len(), 64);
        }
        assert!(find("jwt-auth").is_some());
        assert!(find("no-such-plugin").is_none());
    }
}
