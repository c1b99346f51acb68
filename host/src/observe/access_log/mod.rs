//! The access log: one JSON line per request, written once its response
//! has been sent or has failed. The request's worker formats the line as it
//! settles the request (`line`) and appends it to a shared buffer; a writer
//! thread swaps the buffer out every few milliseconds and writes it to
//! stdout or a file in one go. A line that finds the buffer full is dropped
//! and counted: a request never waits for the disk, and nothing of it is
//! kept once it is settled.

mod line;

use std::fs::File;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::Sample;
use super::record::Record;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The process's standard output.
    Stdout,
    /// A file, appended to, created when missing and reopened on request
    /// (`SIGUSR1`) so it can be rotated.
    File(PathBuf),
}

/// How the access log is written.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where lines go.
    pub destination: Destination,
    /// The share of answered requests logged, 0.0 to 1.0. Requests that
    /// failed or carry a flag are always logged.
    pub sample: f64,
    /// Lines that may wait for the writer before new ones are dropped.
    pub buffer: usize,
}

/// Why the access log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// Its file could not be opened.
    #[error("cannot open the access log `{path}`: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Its writer thread could not be started.
    #[error("cannot start the access log writer: {0}")]
    Thread(io::Error),
}

/// The access log of one gateway.
#[derive(Debug)]
pub struct AccessLog {
    shared: Arc<Shared>,
    /// Answered requests logged, by the 64-bit hash of their request id.
    sample: Sample,
    /// Lines that may wait for the writer.
    capacity: usize,
    dropped: Counter,
}

/// What the request workers and the writer share.
#[derive(Debug)]
struct Shared {
    waiting: Mutex<Waiting>,
    /// Locked by the writer thread, and by a flush at shutdown.
    sink: Mutex<Sink>,
    /// The file is to be reopened before the next write (it was rotated).
    reopen: AtomicBool,
    /// The log is gone: the writer writes what waits and ends.
    closed: AtomicBool,
    /// The last write failed (and said so once).
    failing: AtomicBool,
}

/// Lines formatted and not yet written.
#[derive(Debug, Default)]
struct Waiting {
    text: Vec<u8>,
    lines: usize,
    clock: line::Clock,
}

impl Shared {
    fn new(sink: Sink) -> Self {
        Self {
            waiting: Mutex::default(),
            sink: Mutex::new(sink),
            reopen: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // Lines and a counter: consistent even if a holder panicked.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the lines waiting now, through `taken` (left empty, its
    /// allocation kept for the next time).
    fn write_waiting(&self, taken: &mut Vec<u8>) {
        {
            let mut waiting = self.lock();
            std::mem::swap(&mut waiting.text, taken);
            waiting.lines = 0;
        }
        if taken.is_empty() {
            return;
        }
        let mut sink = (self.sink.lock()).unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.reopen.swap(false, Ordering::Relaxed) {
            sink.reopen();
        }
        match sink.write(taken) {
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(%error, "cannot write the access log");
                }
            }
        }
        taken.clear();
    }
}

impl AccessLog {
    /// Opens the destination and starts the writer; `dropped` counts lines
    /// the writer could not keep up with.
    pub fn start(settings: &Settings, dropped: Counter) -> Result<Self, AccessLogError> {
        let shared = Arc::new(Shared::new(Sink::open(&settings.destination)?));
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || write_lines(&writer))
            .map_err(AccessLogError::Thread)?;
        Ok(Self {
            shared,
            sample: Sample::new(settings.sample),
            capacity: settings.buffer.max(1),
            dropped,
        })
    }

    /// Asks the writer to reopen its file before the next line (after
    /// the file was rotated).
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Relaxed);
    }

    /// Logs `record`, whose response is done `elapsed` after it arrived,
    /// unless sampled out; never blocks on the writer.
    pub fn log(&self, record: &Record, status: u16, elapsed: Duration) {
        let answered = status < 400 && record.flags().next().is_none();
        if answered && !self.sampled(record) {
            return;
        }
        let mut waiting = self.shared.lock();
        if waiting.lines >= self.capacity {
            drop(waiting);
            self.dropped.inc();
            return;
        }
        let Waiting { text, lines, clock } = &mut *waiting;
        line::write(text, clock, record, elapsed);
        *lines += 1;
    }

    /// Writes every line formatted so far, now (at shutdown, once no
    /// request is left to settle).
    pub fn flush(&self) {
        self.shared.write_waiting(&mut Vec::new());
    }

    fn sampled(&self, record: &Record) -> bool {
        (self.sample).keeps(|| xxhash_rust::xxh3::xxh3_64(record.request_id.as_bytes()))
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
    }
}

/// Where the writer writes.
#[derive(Debug)]
enum Sink {
    Stdout(io::Stdout),
    File(PathBuf, File),
}

impl Sink {
    fn open(destination: &Destination) -> Result<Self, AccessLogError> {
        Ok(match destination {
            Destination::Stdout => Self::Stdout(io::stdout()),
            Destination::File(path) => Self::File(path.clone(), open(path)?),
        })
    }

    /// Writes `text` (whole lines) and flushes it.
    fn write(&mut self, text: &[u8]) -> io::Result<()> {
        match self {
            Self::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(text)?;
                out.flush()
            }
            Self::File(_, file) => file.write_all(text),
        }
    }

    /// Reopens a file sink at its path (the old file was moved away).
    fn reopen(&mut self) {
        if let Self::File(path, file) = self {
            match open(path) {
                Ok(reopened) => *file = reopened,
                Err(error) => {
                    tracing::error!(%error, "cannot reopen the access log; writing on to the old file")
                }
            }
        }
    }
}

fn open(path: &PathBuf) -> Result<File, AccessLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AccessLogError::Open {
            path: path.clone(),
            source,
        })
}

/// How long formatted lines wait for the writer at most.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// Every [`WRITE_INTERVAL`], writes the lines formatted since; ends, once
/// what waits is written, when the log is closed.
fn write_lines(shared: &Shared) {
    let mut taken = Vec::new();
    loop {
        std::thread::sleep(WRITE_INTERVAL);
        let closed = shared.closed.load(Ordering::Relaxed);
        shared.write_waiting(&mut taken);
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Method, Uri};

    use super::*;
    use crate::observe::Flag;

    /// A log with no writer: what it keeps stays in its buffer.
    fn unwritten(capacity: usize, sample: f64) -> AccessLog {
        AccessLog {
            shared: Arc::new(Shared::new(Sink::Stdout(io::stdout()))),
            sample: Sample::new(sample),
            capacity,
            dropped: Counter::default(),
        }
    }

    fn request(id: &str) -> Record {
        Record::new(
            HeaderValue::from_str(id).expect("a request id"),
            Method::GET,
            Uri::from_static("/"),
            "127.0.0.1:1".parse().expect("address"),
            Arc::from("main"),
            None,
        )
    }

    fn kept(log: &AccessLog) -> (usize, usize) {
        let waiting = log.shared.lock();
        let lines = waiting.text.iter().filter(|b| **b == b'\n').count();
        (waiting.lines, lines)
    }

    #[test]
    fn a_full_buffer_drops_lines_and_counts_them() {
        let log = unwritten(2, 1.0);
        for id in ["a", "b", "c"] {
            log.log(&request(id), 200, Duration::ZERO);
        }
        assert_eq!(kept(&log), (2, 2));
        assert_eq!(log.dropped.get(), 1);
    }

    #[test]
    fn sampling_leaves_out_answered_requests_but_keeps_failed_and_flagged_ones() {
        let log = unwritten(10, 0.0);
        log.log(&request("answered"), 200, Duration::ZERO);
        assert_eq!(kept(&log), (0, 0));
        log.log(&request("failed"), 502, Duration::ZERO);
        let flagged = request("flagged");
        flagged.flag(Flag::ClientAbort);
        log.log(&flagged, 200, Duration::ZERO);
        assert_eq!(kept(&log), (2, 2));

        let half = unwritten(10_000, 0.5);
        for i in 0..1000 {
            half.log(&request(&format!("id-{i}")), 200, Duration::ZERO);
        }
        let (logged, _) = kept(&half);
        assert!((400..600).contains(&logged), "{logged} of 1000 at 50%");
    }
}
