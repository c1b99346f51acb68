//! Which cluster version a node's manifest file holds, kept in a small file
//! beside it (`.<manifest name>.cluster`, JSON). With it a restarted node
//! knows whether its file is a version the cluster had (then a newer one
//! replaces it) or a change made here that was never published (an edit
//! while the node was stopped, or a change while Redis was unreachable):
//! that one is published, as it would have been without the restart.
//! Without it (a new node, another cluster) the cluster's version wins.

use std::path::{Path, PathBuf};

use super::Digest;

/// What the mark file holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    /// The cluster key: a mark of another cluster means nothing here.
    key: String,
    version: u64,
    /// The SHA-256 of that version's text, in hex.
    sha256: String,
}

/// The mark of one manifest file in one cluster.
pub(super) struct Mark {
    path: PathBuf,
    key: String,
}

impl Mark {
    /// The mark beside `manifest` for cluster `key`.
    pub(super) fn beside(manifest: &Path, key: &str) -> Self {
        let name = manifest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            path: manifest.with_file_name(format!(".{name}.cluster")),
            key: key.to_owned(),
        }
    }

    /// The version recorded and its text's digest; `None` when there is no
    /// mark, it cannot be read, or it belongs to another cluster.
    pub(super) fn read(&self) -> Option<(u64, Digest)> {
        let bytes = std::fs::read(&self.path).ok()?;
        let saved: Saved = serde_json::from_slice(&bytes).ok()?;
        if saved.key != self.key {
            return None;
        }
        let mut digest = [0u8; 32];
        if saved.sha256.len() != 64 {
            return None;
        }
        for (byte, pair) in digest.iter_mut().zip(saved.sha256.as_bytes().chunks(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some((saved.version, digest))
    }

    /// Records that the file holds `version`, whose text has `digest`.
    pub(super) fn write(&self, version: u64, digest: &Digest) -> std::io::Result<()> {
        let saved = Saved {
            key: self.key.clone(),
            version,
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        };
        let text = serde_json::to_string(&saved).map_err(std::io::Error::other)?;
        crate::control::store::write_atomically(&self.path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_wrote_and_ignores_another_clusters_mark() {
        let dir = tempfile::tempdir().expect("temp dir");
        let manifest = dir.path().join("weir.yaml");
        let digest = crate::config::token_digest(b"text");
        Mark::beside(&manifest, "a")
            .write(7, &digest)
            .expect("written");
        assert!(dir.path().join(".weir.yaml.cluster").exists());
        assert_eq!(Mark::beside(&manifest, "a").read(), Some((7, digest)));
        assert_eq!(Mark::beside(&manifest, "b").read(), None);
    }
}
