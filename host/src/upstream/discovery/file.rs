//! File discovery: a YAML or JSON list of targets (written as `targets` is in
//! the manifest), read at start and again whenever the file changes. The
//! file's directory is watched, so a file replaced by a rename (the safe way
//! to write one) is seen too. A file that cannot be read or parsed is an
//! error: the group keeps its targets until a good version appears.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecommendedWatcher;
use tokio::sync::mpsc;

use super::{Discovery, DiscoveryError, spec};
use crate::config::model::FileDiscovery;
use crate::file_watch;
use crate::upstream::TargetSpec;

/// The largest target file read.
const MAX_FILE_BYTES: u64 = 4 << 20;
/// How long the file must stay unchanged before it is read: one write of
/// an editor or a script comes as several events.
const SETTLE: Duration = Duration::from_millis(100);

/// A watched file of targets.
pub struct FileSource {
    path: PathBuf,
    /// The watch, once set up; dropped after an error so the next call
    /// starts over.
    watch: Option<(RecommendedWatcher, mpsc::Receiver<()>)>,
}

impl FileSource {
    pub fn new(config: FileDiscovery) -> Self {
        Self {
            path: config.path,
            watch: None,
        }
    }
}

impl Discovery for FileSource {
    async fn next(&mut self) -> Result<Vec<TargetSpec>, DiscoveryError> {
        match &mut self.watch {
            Some((_, events)) => {
                if events.recv().await.is_none() {
                    self.watch = None;
                    return Err(DiscoveryError::Unreachable(format!(
                        "the watch of {} ended",
                        self.path.display()
                    )));
                }
                file_watch::settle(events, SETTLE).await;
            }
            // The watch starts before the first read, so no change between
            // the two is missed.
            None => {
                let watch = file_watch::watch(&self.path)
                    .map_err(|e| DiscoveryError::Unreachable(e.to_string()))?;
                self.watch = Some(watch);
            }
        }
        read(&self.path).await
    }
}

/// The targets `path` lists now.
async fn read(path: &Path) -> Result<Vec<TargetSpec>, DiscoveryError> {
    let owned = path.to_path_buf();
    let bytes =
        tokio::task::spawn_blocking(move || crate::config::read_file(&owned, MAX_FILE_BYTES))
            .await
            .map_err(|e| DiscoveryError::Unreachable(e.to_string()))?
            .map_err(|e| DiscoveryError::Unreachable(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| DiscoveryError::BadAnswer(format!("{}: not UTF-8 text", path.display())))?;
    let targets = crate::config::parse_target_list(&text)
        .map_err(|e| DiscoveryError::BadAnswer(format!("{}:{e}", path.display())))?;
    Ok(targets.into_iter().map(spec).collect())
}
