//! The route manifest: reading, decoding and validating `weir.yaml`.
//!
//! Text → located YAML tree (`node`) → raw types (`raw`, via `decode`) → the
//! validated [`Manifest`] (`model`, via `validate`). Every problem is reported
//! with file, line, column and reason. Depends on nothing else in Weir.

pub mod access_log;
mod admin;
mod consumers;
mod decode;
mod discovery;
mod file;
pub mod model;
mod node;
mod raw;
pub mod tracing;
mod traffic;
mod validate;
mod websocket;
mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

pub use admin::token_digest;
pub use decode::{Diagnostic, parse_duration, parse_size};
pub use discovery::{BadTargets, parse_target, parse_target_list};
pub use file::{FileError, MAX_MANIFEST_BYTES, MAX_PEM_BYTES, MAX_PLUGIN_BYTES, read as read_file};
pub use model::Manifest;
pub use node::Location;
pub use raw::{DEFAULT_CALLBACK_DEADLINE, DEFAULT_PLUGIN_MEMORY};
pub use validate::API_VERSION;
pub use yaml::{EmitError, emit};

use decode::{Decode, Diagnostics};
use raw::RawManifest;

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read, or is not one Weir reads (not a regular
    /// file, or over [`MAX_MANIFEST_BYTES`]).
    #[error("{}: the manifest {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (shown in the message, so not chained as a source).
        reason: FileError,
    },
    /// The manifest has one or more problems.
    #[error("{}", Problems(path, diagnostics))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, in file order.
        diagnostics: Vec<Diagnostic>,
    },
}

/// Renders diagnostics as `file:line:column: reason`, one per line.
struct Problems<'a>(&'a Path, &'a [Diagnostic]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.1.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.0.display(),
                d.location.line,
                d.location.column,
                d.message
            )?;
        }
        Ok(())
    }
}

/// Reads and validates the manifest at `path`: a regular file of at most
/// [`MAX_MANIFEST_BYTES`], checked before it is read.
pub fn load(path: &Path) -> Result<Manifest, ConfigError> {
    let bytes = file::read(path, MAX_MANIFEST_BYTES).map_err(|reason| ConfigError::Read {
        path: path.to_path_buf(),
        reason,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        diagnostics: vec![not_utf8(e.as_bytes(), e.utf8_error().valid_up_to())],
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, path, base_dir)
}

/// Validates manifest `text`; `path` names it in messages and `base_dir` resolves
/// the files it refers to. Text over [`MAX_MANIFEST_BYTES`] is refused unparsed.
pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Manifest, ConfigError> {
    let size = text.len() as u64;
    if size > MAX_MANIFEST_BYTES {
        return Err(ConfigError::Read {
            path: path.to_path_buf(),
            reason: FileError::TooLarge {
                size,
                cap: MAX_MANIFEST_BYTES,
            },
        });
    }
    let invalid = |diagnostics| ConfigError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    };
    let mut diags = Diagnostics::default();
    // The tree goes before validation builds the model (the two would be the peak).
    let raw = {
        let node = yaml::parse(text).map_err(|d| invalid(vec![d]))?;
        RawManifest::decode(&node, &mut diags)
    };
    let manifest = raw.and_then(|raw| validate::validate(raw, path, base_dir, &mut diags));
    match manifest {
        Some(m) if diags.is_empty() => Ok(m),
        _ => Err(invalid(diags.into_sorted())),
    }
}

/// Manifest `text` as a JSON document (mapping keys as strings, in file
/// order); `None` when it is not YAML.
pub fn document(text: &str) -> Option<serde_json::Value> {
    yaml::parse(text).ok().map(|root| root.to_json())
}

/// The JSON pointer of the place each of `diagnostics` names in manifest
/// `text` (`None` where no node starts there, e.g. a syntax error).
pub fn pointers(text: &str, diagnostics: &[Diagnostic]) -> Vec<Option<String>> {
    let root = yaml::parse(text).ok();
    diagnostics
        .iter()
        .map(|d| root.as_ref()?.pointer_to(d.location))
        .collect()
}

/// The diagnostic for bytes that are not UTF-8 from `valid_up_to` on.
fn not_utf8(bytes: &[u8], valid_up_to: usize) -> Diagnostic {
    let before = String::from_utf8_lossy(&bytes[..valid_up_to]);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Diagnostic {
        location: Location {
            line: before.matches('\n').count() as u64 + 1,
            column: before[line_start..].chars().count() as u64 + 1,
        },
        message: "the manifest is not UTF-8 text".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Quotas;

    #[test]
    fn names_where_a_manifest_stops_being_utf8() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("weir.yaml");
        std::fs::write(&path, b"apiVersion: weir/v1\nlisteners: \xff\n").expect("write");
        let Err(ConfigError::Invalid { diagnostics, .. }) = load(&path) else {
            panic!("a manifest that is not UTF-8 must be invalid");
        };
        assert_eq!(
            diagnostics,
            vec![Diagnostic {
                location: Location {
                    line: 2,
                    column: 12
                },
                message: "the manifest is not UTF-8 text".to_owned(),
            }]
        );
    }

    #[test]
    fn plugin_quotas_decode_and_unset_ones_take_their_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/manifests/valid/plugin_quotas.yaml");
        let manifest = load(&path).expect("the golden manifest is valid");
        assert_eq!(
            manifest.plugins[0].quotas,
            Quotas {
                metrics: 20,
                queues: 0,
                queue_bytes: 4 << 20,
                shared_data_bytes: 1 << 20,
                log_bytes_per_second: 64 << 10,
            }
        );
        assert_eq!(
            manifest.plugins[1].quotas,
            Quotas {
                metrics: 5,
                ..Quotas::default()
            }
        );
    }

    #[test]
    fn configurations_become_the_bytes_filters_receive_and_root_ids_resolve() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/manifests/valid/plugins.yaml");
        let manifest = load(&path).expect("the golden manifest is valid");
        let (noop, strict) = (&manifest.plugins[0], &manifest.plugins[1]);
        assert_eq!(noop.vm_config, "", "no vm_config: empty");
        assert_eq!(strict.vm_config, r#"{"cache_entries":100}"#);
        let [plain, own] = &manifest.global_filters[..] else {
            panic!("two global filters");
        };
        assert_eq!(plain.config, "", "no config: empty");
        assert_eq!(plain.root_id, "noop", "the plugin's name by default");
        assert_eq!(own.config, "a plain string, handed over as its bytes");
        assert_eq!(own.root_id, "", "a root_id of its own, even empty");
        let route_filter = &manifest.routes[0].filters[0];
        assert_eq!(route_filter.root_id, "strict_root", "the plugin's root_id");
        assert_eq!(
            route_filter.config, r#"{"allow":["a","b"],"header":"x-tenant","limits":{"rate":10}}"#,
            "a mapping as JSON text, keys sorted"
        );
    }
}
