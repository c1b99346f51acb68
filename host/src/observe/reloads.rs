//! The last config reloads a gateway tried, applied or refused, for the
//! admin status page: a short ring, newest last.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

/// How many reloads are remembered.
pub const KEPT: usize = 20;

/// The longest refusal reason kept, in bytes (the first line of the error).
const MAX_REASON: usize = 400;

/// One reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// When it finished.
    pub at: SystemTime,
    /// The generation serving after it (the new one when applied).
    pub generation: u64,
    /// Whether the new config runs.
    pub applied: bool,
    /// What asked for it (`SIGHUP`, `file changed`, `admin API`, …).
    pub cause: &'static str,
    /// Why it was refused (the error's first line, cut short).
    pub reason: Option<String>,
}

/// The last [`KEPT`] reloads.
#[derive(Debug, Default)]
pub struct Reloads {
    kept: Mutex<VecDeque<Reload>>,
}

impl Reloads {
    /// Remembers a reload that ended now, forgetting the oldest beyond [`KEPT`].
    pub fn push(&self, generation: u64, cause: &'static str, refused: Option<&str>) {
        let reason = refused.map(|error| {
            let line = error.lines().next().unwrap_or_default();
            let mut end = line.len().min(MAX_REASON);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line[..end].to_owned()
        });
        let reload = Reload {
            at: SystemTime::now(),
            generation,
            applied: refused.is_none(),
            cause,
            reason,
        };
        let mut kept = self.lock();
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(reload);
    }

    /// The reloads remembered, oldest first.
    pub fn list(&self) -> Vec<Reload> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Reload>> {
        // Plain data: consistent even if a holder panicked.
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_reloads_with_the_first_line_of_a_refusal() {
        let reloads = Reloads::default();
        for generation in 1..=(KEPT as u64 + 3) {
            reloads.push(generation, "SIGHUP", None);
        }
        reloads.push(23, "admin API", Some("route `a` is invalid\nmore detail"));
        let list = reloads.list();
        assert_eq!(list.len(), KEPT);
        assert_eq!(list[0].generation, 5);
        let last = list.last().expect("one");
        assert!(!last.applied);
        assert_eq!(last.cause, "admin API");
        assert_eq!(last.reason.as_deref(), Some("route `a` is invalid"));
    }
}
