//! The access log: one JSON line per request, written once its response
//! has been sent or has failed. Requests hand their record to a bounded
//! channel and never wait: a writer thread wakes every few milliseconds,
//! formats what has queued up into lines and writes them to stdout or a
//! file in one go; a record that finds the channel full is dropped and
//! counted. Formatting off the request path, and no wake-up per request,
//! keep the log's cost to the queueing of a pointer.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use super::record::{Flag, Record};

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
    records: SyncSender<Arc<Record>>,
    /// Requests logged: a line's sampling threshold on the 64-bit hash of its request id.
    threshold: u64,
    dropped: Counter,
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Opens the destination and starts the writer; `dropped` counts lines
    /// the writer could not keep up with.
    pub fn start(settings: &Settings, dropped: Counter) -> Result<Self, AccessLogError> {
        let sink = Sink::open(&settings.destination)?;
        let (records, received) = mpsc::sync_channel(settings.buffer.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || write_lines(sink, &received, &flag))
            .map_err(AccessLogError::Thread)?;
        Ok(Self {
            records,
            threshold: threshold(settings.sample),
            dropped,
            reopen,
        })
    }

    /// Asks the writer to reopen its file before the next line (after
    /// the file was rotated).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Logs `record` unless sampled out; never blocks.
    pub fn log(&self, record: &Arc<Record>, status: u16) {
        let answered = status < 400 && record.flags().next().is_none();
        if answered && !self.sampled(record) {
            return;
        }
        match self.records.try_send(record.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    fn sampled(&self, record: &Record) -> bool {
        self.threshold == u64::MAX
            || xxhash_rust::xxh3::xxh3_64(record.request_id.as_bytes()) < self.threshold
    }
}

/// The hash threshold below which a request is logged for `sample`.
fn threshold(sample: f64) -> u64 {
    if sample >= 1.0 {
        u64::MAX
    } else if sample <= 0.0 {
        0
    } else {
        // A share of the hash space; the precision lost is far below a line.
        (sample * u64::MAX as f64) as u64
    }
}

/// One line of the access log.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(serialize_with = "rfc3339")]
    time: std::time::SystemTime,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    listener: &'a str,
    route: Option<&'a str>,
    consumer: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    status: u16,
    upstream: Option<&'a str>,
    upstream_target: Option<&'a str>,
    /// Arrival to the last byte sent, in milliseconds.
    duration_ms: f64,
    /// The part spent in the gateway itself (neither filters nor upstream).
    gateway_ms: f64,
    plugins_ms: f64,
    upstream_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
    client: std::net::SocketAddr,
    tls_version: Option<&'static str>,
    sni: Option<&'a str>,
    flags: Vec<&'static str>,
}

impl<'a> Line<'a> {
    fn of(record: &'a Record, details: &'a super::record::Details) -> Self {
        let total = record.elapsed();
        let plugins = record.plugin_time();
        let upstream = record.upstream_time();
        let gateway = total.saturating_sub(plugins).saturating_sub(upstream);
        Self {
            time: record.arrived_at(),
            request_id: record.request_id.to_str().unwrap_or("-"),
            trace_id: record.trace().map(|t| t.context.trace_id_hex()),
            listener: &record.listener,
            route: details.route.as_deref(),
            consumer: details.consumer.as_deref(),
            method: record.method.as_str(),
            path: record.path(),
            status: details.status,
            upstream: details.upstream.as_deref(),
            upstream_target: details.target.as_deref(),
            duration_ms: millis(total),
            gateway_ms: millis(gateway),
            plugins_ms: millis(plugins),
            upstream_ms: millis(upstream),
            bytes_in: record.bytes_in(),
            bytes_out: record.bytes_out(),
            client: record.client,
            tls_version: record.tls.as_ref().map(|t| t.version),
            sni: record.tls.as_ref().and_then(|t| t.sni.as_deref()),
            flags: record.flags().map(Flag::as_str).collect(),
        }
    }
}

/// A time as RFC 3339 text in UTC, to the microsecond.
fn rfc3339<S: serde::Serializer>(
    time: &std::time::SystemTime,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_micros(*time))
}

/// Milliseconds with microsecond precision.
fn millis(time: Duration) -> f64 {
    (time.as_micros() as f64) / 1000.0
}

/// Where the writer writes.
enum Sink {
    Stdout(BufWriter<io::Stdout>),
    File(PathBuf, BufWriter<File>),
}

impl Sink {
    fn open(destination: &Destination) -> Result<Self, AccessLogError> {
        Ok(match destination {
            Destination::Stdout => Self::Stdout(BufWriter::new(io::stdout())),
            Destination::File(path) => Self::File(path.clone(), BufWriter::new(open(path)?)),
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Self::Stdout(out) => out,
            Self::File(_, out) => out,
        }
    }

    /// Reopens a file sink at its path (the old file was moved away).
    fn reopen(&mut self) {
        if let Self::File(path, out) = self {
            let _ = out.flush();
            match open(path) {
                Ok(file) => *out = BufWriter::new(file),
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

/// How long queued records wait for the writer at most.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// Every [`WRITE_INTERVAL`], formats the records queued since and writes
/// them, then flushes; ends once every sender is gone.
fn write_lines(mut sink: Sink, records: &Receiver<Arc<Record>>, reopen: &AtomicBool) {
    let mut failing = false;
    let mut line = Vec::with_capacity(1024);
    loop {
        std::thread::sleep(WRITE_INTERVAL);
        if reopen.swap(false, Ordering::Relaxed) {
            sink.reopen();
        }
        let mut written = 0;
        let closed = loop {
            match records.try_recv() {
                Ok(record) => {
                    line.clear();
                    let details = record.details();
                    // Plain strings and numbers always serialize.
                    let _ = serde_json::to_writer(&mut line, &Line::of(&record, &details));
                    line.push(b'\n');
                    if let Err(error) = sink.writer().write_all(&line) {
                        if !failing {
                            tracing::error!(%error, "cannot write the access log");
                        }
                        failing = true;
                    }
                    written += 1;
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if written > 0 && sink.writer().flush().is_ok() {
            failing = false;
        }
        if closed {
            return;
        }
    }
}
