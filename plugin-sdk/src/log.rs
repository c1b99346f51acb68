//! Logging outside a request (in `Plugin::configure`, say). Inside one, use
//! [`Http::log`](crate::Http::log), which adds the plugin's name and the
//! request id.

use crate::host::{self, LogLevel};

/// Logs `message` at `level`; a host that refuses the line drops it.
pub fn log(level: LogLevel, message: &str) {
    let _ = host::log(level, message);
}

/// Logs `message` at info level.
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

/// Logs `message` at warn level.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

/// Logs `message` at error level.
pub fn error(message: &str) {
    log(LogLevel::Error, message);
}
