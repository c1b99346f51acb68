//! The manifest's `access_log:` settings: whether each request gets a JSON
//! line, where lines go, and how many of the answered ones are kept.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use super::decode::{Decode, Diagnostics, Fields};
use super::node::Node;

/// Lines that may wait for the writer: 1 to a million.
pub const BUFFER_LINES: RangeInclusive<usize> = 1..=1_000_000;

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogPath {
    /// Standard output.
    Stdout,
    /// A file, relative to the manifest's directory unless absolute.
    File(PathBuf),
}

/// The access log's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// Whether requests are logged at all.
    pub enabled: bool,
    /// Where lines go.
    pub path: AccessLogPath,
    /// The share (percent) of answered requests logged; failed requests
    /// and requests with a flag are always logged.
    pub percent: u32,
    /// Lines that may wait for the writer before new ones are dropped (and counted).
    pub buffer: usize,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: AccessLogPath::Stdout,
            percent: 100,
            buffer: 8192,
        }
    }
}

impl Decode for AccessLogConfig {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "access log settings", diags)?;
        let defaults = Self::default();
        let path = f
            .optional::<String>("path", diags)
            .flatten()
            .map_or(defaults.path, |path| match path.as_str() {
                "stdout" | "-" => AccessLogPath::Stdout,
                _ => AccessLogPath::File(path.into()),
            });
        let settings = Self {
            enabled: f.or("enabled", defaults.enabled, diags),
            path,
            percent: f.within("percent", 0..=100, defaults.percent, diags),
            buffer: f.within("buffer", BUFFER_LINES, defaults.buffer, diags),
        };
        f.finish(diags);
        Some(settings)
    }
}
