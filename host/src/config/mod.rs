//! The route manifest: reading, decoding and validating `weir.yaml`.
//!
//! Text → located YAML tree (`node`) → raw types (`raw`, via `decode`) → the
//! validated [`Manifest`] (`model`, via `validate`). Every problem is reported
//! with file, line, column and reason. Depends on nothing else in Weir.

mod decode;
pub mod model;
mod node;
mod raw;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use decode::{Diagnostic, parse_duration, parse_size};
pub use model::Manifest;
pub use node::Location;
pub use validate::API_VERSION;

use decode::{Decode, Diagnostics};
use node::Node;
use raw::RawManifest;

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the manifest: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (shown in the message, so not chained as a source).
        reason: std::io::Error,
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

/// Reads and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<Manifest, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Read {
        path: path.to_path_buf(),
        reason,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, path, base_dir)
}

/// Validates manifest `text`; `path` names it in messages and `base_dir` resolves
/// the files it refers to.
pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Manifest, ConfigError> {
    let invalid = |diagnostics| ConfigError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    };
    let node: Node = serde_saphyr::from_str(text).map_err(|e| invalid(vec![yaml_error(&e)]))?;
    let mut diags = Diagnostics::default();
    let manifest = RawManifest::decode(&node, &mut diags)
        .and_then(|raw| validate::validate(raw, path, base_dir, &mut diags));
    match manifest {
        Some(m) if diags.is_empty() => Ok(m),
        _ => Err(invalid(diags.into_sorted())),
    }
}

/// Turns a YAML syntax error into a diagnostic.
fn yaml_error(error: &serde_saphyr::Error) -> Diagnostic {
    let location = error
        .location()
        .map(|l| Location {
            line: l.line(),
            column: l.column(),
        })
        .unwrap_or_default();
    Diagnostic {
        location,
        message: format!("invalid YAML: {}", error.without_snippet()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Quotas;

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
