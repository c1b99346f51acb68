//! Bounded reads of the files Weir is told to read: the manifest and the files
//! it names (plugin modules, PEM certificates and keys).
//!
//! Each kind of file has a size cap. A file is checked before it is opened
//! (`stat`: a FIFO would block `open`, and `/dev/zero` never ends), checked
//! again on the open handle, and read through `Read::take(cap + 1)`, so a file
//! that grows while it is read, or whose size lies, still costs at most
//! `cap + 1` bytes.

use std::fs::{File, FileType, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::decode::ByteSize;

/// The largest manifest Weir reads: room for a few hundred thousand routes
/// (100,000 routes written in block style take about 13 MB).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// The largest plugin module (`.wasm` or `.wat`) Weir reads.
pub const MAX_PLUGIN_BYTES: u64 = 256 << 20;

/// The largest PEM file (certificate chain or private key) Weir reads.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Why a file Weir was told to read cannot be used. Displayed as the end of a
/// sentence whose subject is the file: "`x.wasm` is not a regular file (a FIFO)".
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Nothing is at the path.
    #[error("does not exist")]
    Missing,
    /// Something other than a regular file is at the path.
    #[error("is not a regular file ({})", describe(*kind))]
    NotRegular {
        /// What is there instead.
        kind: FileType,
    },
    /// The file is larger than its cap.
    #[error("is {size} bytes, over the {} cap", ByteSize(*cap))]
    TooLarge {
        /// Its size, as its metadata gives it.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// The file grew past its cap while it was read (its metadata said it fit).
    #[error("grew past the cap of {} while it was read", ByteSize(*cap))]
    Grew {
        /// The cap.
        cap: u64,
    },
    /// Another I/O error (no permission, a broken disk).
    #[error("cannot be read: {0}")]
    Io(io::Error),
}

impl From<io::Error> for FileError {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::NotFound => Self::Missing,
            _ => Self::Io(error),
        }
    }
}

/// Checks that `path` is a regular file of at most `cap` bytes, without opening it.
pub fn check(path: &Path, cap: u64) -> Result<(), FileError> {
    within_cap(&std::fs::metadata(path)?, cap)
}

/// Reads the regular file at `path` if it holds at most `cap` bytes; never
/// reads more than `cap + 1` bytes, whatever the file does meanwhile.
pub fn read(path: &Path, cap: u64) -> Result<Vec<u8>, FileError> {
    check(path, cap)?;
    let file = File::open(path)?;
    // The path may have been replaced between the check and the open.
    let metadata = file.metadata()?;
    within_cap(&metadata, cap)?;
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(FileError::Grew { cap });
    }
    Ok(bytes)
}

/// Checks that `metadata` is a regular file's and its length is within `cap`.
fn within_cap(metadata: &Metadata, cap: u64) -> Result<(), FileError> {
    if !metadata.is_file() {
        return Err(FileError::NotRegular {
            kind: metadata.file_type(),
        });
    }
    if metadata.len() > cap {
        return Err(FileError::TooLarge {
            size: metadata.len(),
            cap,
        });
    }
    Ok(())
}

/// Names a kind of file that is not a regular one: "a directory", "a FIFO".
fn describe(kind: FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "an unknown kind of file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("a temp dir")
    }

    #[test]
    fn reads_a_file_within_its_cap() {
        let dir = temp_dir();
        let path = dir.path().join("small");
        std::fs::write(&path, b"12345").expect("write");
        assert_eq!(read(&path, 5).expect("fits"), b"12345");
    }

    #[test]
    fn refuses_a_sparse_file_over_its_cap_without_reading_it() {
        let dir = temp_dir();
        let path = dir.path().join("huge");
        // 1 TiB of nothing: reading it would take minutes, refusing it none.
        let huge = 1 << 40;
        File::create(&path)
            .and_then(|f| f.set_len(huge))
            .expect("a sparse file");
        let error = read(&path, MAX_MANIFEST_BYTES).expect_err("over the cap");
        assert_eq!(
            error.to_string(),
            format!("is {huge} bytes, over the 64MiB cap")
        );
    }

    #[test]
    fn reads_no_more_than_the_cap_when_the_size_lies() {
        // procfs files say they hold 0 bytes; this one holds over a kilobyte.
        let status = Path::new("/proc/self/status");
        let error = read(status, 512).expect_err("more than 512 bytes");
        assert_eq!(
            error.to_string(),
            "grew past the cap of 512 bytes while it was read"
        );
    }

    #[test]
    fn names_a_character_device_and_a_directory() {
        let error = read(Path::new("/dev/zero"), 10).expect_err("a device");
        assert_eq!(
            error.to_string(),
            "is not a regular file (a character device)"
        );
        let dir = temp_dir();
        let error = read(dir.path(), 10).expect_err("a directory");
        assert_eq!(error.to_string(), "is not a regular file (a directory)");
    }

    #[test]
    fn says_a_missing_file_does_not_exist() {
        let dir = temp_dir();
        let error = read(&dir.path().join("nothing"), 10).expect_err("missing");
        assert_eq!(error.to_string(), "does not exist");
    }
}
