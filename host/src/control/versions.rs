//! Uploaded plugin modules, kept as numbered versions in a directory beside
//! the manifest: `<manifest dir>/.weir/plugins/<name>/<n>.wasm`. A plugin
//! runs a version when its `file` names that path (relative to the
//! manifest). Knows files only: not HTTP, not the manifest.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where versions live, relative to the manifest's directory.
pub const DIR: &str = ".weir/plugins";

/// A plugin name that cannot name a directory.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` cannot take uploads: a plugin name for uploads is letters, digits, `-`, `_` and `.`, \
     not starting with `.`"
)]
pub struct BadName(pub String);

/// One stored version of a plugin's module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Its number: 1 for the first upload, then one more than the highest.
    pub number: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes, in hex.
    pub sha256: String,
    /// When it was stored (the file's modification time).
    pub uploaded: Option<std::time::SystemTime>,
}

/// The stored versions of one plugin.
#[derive(Debug, Clone)]
pub struct Versions {
    /// The plugin's directory.
    dir: PathBuf,
    /// The same, relative to the manifest's directory, with `/` separators.
    relative: String,
}

impl Versions {
    /// The versions of plugin `name` of the manifest in `base_dir`.
    pub fn of(base_dir: &Path, name: &str) -> Result<Self, BadName> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if name.is_empty() || name.starts_with('.') || !name.chars().all(allowed) {
            return Err(BadName(name.to_owned()));
        }
        Ok(Self {
            dir: base_dir.join(DIR).join(name),
            relative: format!("{DIR}/{name}"),
        })
    }

    /// The directory its versions are stored in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Version `number`'s path as a plugin's `file` names it.
    pub fn file(&self, number: u64) -> String {
        format!("{}/{number}.wasm", self.relative)
    }

    /// The version a plugin's `file` names, if it names one of these.
    pub fn number_of(&self, file: &str) -> Option<u64> {
        let file = file.strip_prefix("./").unwrap_or(file);
        let number = file
            .strip_prefix(self.relative.as_str())?
            .strip_prefix('/')?
            .strip_suffix(".wasm")?;
        // `01` is not version 1's file.
        number
            .parse()
            .ok()
            .filter(|n: &u64| n.to_string() == number)
    }

    /// Every stored version, by number; none when nothing was uploaded.
    pub fn list(&self) -> std::io::Result<Vec<Version>> {
        self.numbers()?
            .into_iter()
            .map(|number| {
                let path = self.path(number);
                let bytes = std::fs::read(&path)?;
                Ok(Version {
                    number,
                    size: bytes.len() as u64,
                    sha256: hex(&Sha256::digest(&bytes)),
                    uploaded: std::fs::metadata(&path)?.modified().ok(),
                })
            })
            .collect()
    }

    /// The numbers of the stored versions, ascending.
    fn numbers(&self) -> std::io::Result<Vec<u64>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut numbers = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            let file = format!("{}/{}", self.relative, name.to_string_lossy());
            numbers.extend(self.number_of(&file));
        }
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// Stores `module` as the next version and returns its number. The file
    /// appears whole (written beside it, flushed, then linked into place), and
    /// two uploads at once get different numbers.
    pub fn add(&self, module: &[u8]) -> std::io::Result<u64> {
        std::fs::create_dir_all(&self.dir)?;
        let fresh = self.dir.join(format!(".upload-{}", uuid::Uuid::new_v4()));
        let written = std::fs::File::create(&fresh).and_then(|mut file| {
            file.write_all(module)?;
            file.sync_all()
        });
        let linked = written.and_then(|()| {
            let mut number = self.numbers()?.last().map_or(1, |n| n + 1);
            loop {
                match std::fs::hard_link(&fresh, self.path(number)) {
                    Ok(()) => return Ok(number),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => number += 1,
                    Err(e) => return Err(e),
                }
            }
        });
        let _ = std::fs::remove_file(&fresh);
        linked
    }

    /// Removes version `number` (an upload that was rejected).
    pub fn remove(&self, number: u64) -> std::io::Result<()> {
        std::fs::remove_file(self.path(number))
    }

    fn path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{number}.wasm"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_uploads_and_lists_them_with_their_digests() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let versions = Versions::of(dir.path(), "auth").expect("a good name");
        assert_eq!(versions.list().expect("lists"), []);
        assert_eq!(versions.add(b"one").expect("stores"), 1);
        assert_eq!(versions.add(b"two").expect("stores"), 2);
        versions.remove(2).expect("removes");
        assert_eq!(versions.add(b"three").expect("stores"), 2);
        let listed = versions.list().expect("lists");
        assert_eq!(
            listed
                .iter()
                .map(|v| (v.number, v.size))
                .collect::<Vec<_>>(),
            [(1, 3), (2, 5)]
        );
        assert_eq!(
            listed[0].sha256,
            "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"
        );
        assert_eq!(
            std::fs::read(dir.path().join(".weir/plugins/auth/2.wasm")).ok(),
            Some(b"three".to_vec())
        );
    }

    #[test]
    fn knows_which_version_a_file_names() {
        let versions = Versions::of(Path::new("/etc/weir"), "auth").expect("a good name");
        assert_eq!(versions.file(3), ".weir/plugins/auth/3.wasm");
        assert_eq!(versions.number_of(".weir/plugins/auth/3.wasm"), Some(3));
        assert_eq!(versions.number_of("./.weir/plugins/auth/12.wasm"), Some(12));
        for other in [
            ".weir/plugins/auth/03.wasm",
            ".weir/plugins/other/3.wasm",
            ".weir/plugins/auth/x.wasm",
            "auth.wasm",
        ] {
            assert_eq!(versions.number_of(other), None, "{other}");
        }
    }

    #[test]
    fn refuses_names_that_leave_its_directory() {
        for name in ["", "..", ".hidden", "a/b", "a\\b", "ä"] {
            assert!(Versions::of(Path::new("."), name).is_err(), "{name:?}");
        }
    }
}
