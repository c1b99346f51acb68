//! An access-log line, written by hand as JSON: the fields are known, most
//! of them numbers or strings that need no escaping, and a line is written
//! for every request on the request's own worker, so it is built straight
//! into the log's buffer without a serializer (one is used only for a
//! string that needs escaping) and the date is formatted once per second.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::observe::Flag;
use crate::observe::record::Record;

/// The wall clock's date and time to the second, formatted once per second.
#[derive(Debug, Default)]
pub(super) struct Clock {
    /// The second `text` shows (Unix time), once one has been formatted.
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS`.
    text: Vec<u8>,
}

impl Clock {
    /// Writes `time` as RFC 3339 in UTC, to the microsecond.
    fn write(&mut self, out: &mut Vec<u8>, time: SystemTime) {
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since_epoch.as_secs();
        if self.second != Some(second) {
            let whole = UNIX_EPOCH + Duration::from_secs(second);
            let formatted = humantime::format_rfc3339_seconds(whole).to_string();
            // `…SSZ`: everything but the zone, which follows the fraction.
            self.text.clear();
            self.text
                .extend_from_slice(formatted.trim_end_matches('Z').as_bytes());
            self.second = Some(second);
        }
        out.extend_from_slice(&self.text);
        out.push(b'.');
        padded::<6>(out, since_epoch.subsec_micros());
        out.push(b'Z');
    }
}

/// Appends the line of `record`, done `total` after it arrived (with its
/// newline), to `out`.
pub(super) fn write(out: &mut Vec<u8>, clock: &mut Clock, record: &Record, total: Duration) {
    let plugins = record.plugin_time();
    let upstream = record.upstream_time();
    let gateway = total.saturating_sub(plugins).saturating_sub(upstream);

    out.extend_from_slice(b"{\"time\":\"");
    clock.write(out, record.arrived_at());
    out.extend_from_slice(b"\",\"request_id\":");
    string(out, record.request_id.to_str().unwrap_or("-"));
    if let Some(trace) = record.trace() {
        out.extend_from_slice(b",\"trace_id\":");
        string(out, &trace.context.trace_id_hex());
    }
    out.extend_from_slice(b",\"listener\":");
    string(out, &record.listener);
    record.inspect(|details| {
        out.extend_from_slice(b",\"route\":");
        optional(out, details.route.as_deref());
        out.extend_from_slice(b",\"consumer\":");
        optional(out, details.consumer.as_deref());
        out.extend_from_slice(b",\"method\":");
        string(out, record.method.as_str());
        out.extend_from_slice(b",\"path\":");
        string(out, record.path());
        out.extend_from_slice(b",\"status\":");
        number(out, details.status.into());
        out.extend_from_slice(b",\"upstream\":");
        optional(out, details.upstream.as_deref());
        out.extend_from_slice(b",\"upstream_target\":");
        optional(out, details.target.as_deref());
    });
    out.extend_from_slice(b",\"duration_ms\":");
    millis(out, total);
    out.extend_from_slice(b",\"gateway_ms\":");
    millis(out, gateway);
    out.extend_from_slice(b",\"plugins_ms\":");
    millis(out, plugins);
    out.extend_from_slice(b",\"upstream_ms\":");
    millis(out, upstream);
    out.extend_from_slice(b",\"bytes_in\":");
    number(out, record.bytes_in());
    out.extend_from_slice(b",\"bytes_out\":");
    number(out, record.bytes_out());
    out.extend_from_slice(b",\"client\":\"");
    address(out, record.client);
    out.extend_from_slice(b"\",\"tls_version\":");
    optional(out, record.tls.as_ref().map(|t| t.version));
    out.extend_from_slice(b",\"sni\":");
    optional(out, record.tls.as_ref().and_then(|t| t.sni.as_deref()));
    out.extend_from_slice(b",\"flags\":[");
    for (i, flag) in record.flags().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, Flag::as_str(flag));
    }
    out.extend_from_slice(b"]}\n");
}

/// `text` as a JSON string.
fn string(out: &mut Vec<u8>, text: &str) {
    if needs_escaping(text.as_bytes()) {
        // Escaping a `str` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Whether `text` holds a byte a JSON string escapes: a control character,
/// `"` or `\\`. Looked at eight bytes a step (a byte at a time costs six
/// instructions, and a request id alone is 36 bytes): the last step takes
/// the last eight bytes, over some already seen, and a text shorter than
/// eight is padded with a byte that needs nothing.
fn needs_escaping(text: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Set when a byte of `word` is below `n` (exact for `n` <= 0x80).
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let equal = |word: u64, byte: u8| below(word ^ (ONES * u64::from(byte)), 1);
    let escaped = |chunk: &[u8]| {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap_or_default());
        below(word, 0x20) | equal(word, b'"') | equal(word, b'\\') != 0
    };
    match text.len().checked_sub(8) {
        Some(last) => text.chunks_exact(8).any(escaped) || escaped(&text[last..]),
        None => {
            let mut padded = [b'a'; 8];
            padded[..text.len()].copy_from_slice(text);
            escaped(&padded)
        }
    }
}

/// `text` as a JSON string, or `null`.
fn optional(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => string(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// A client's address, as `Display` writes it (digits, dots, colons and
/// brackets: nothing to escape); an IPv4 one without the formatter, which
/// costs a line more than the rest of it.
fn address(out: &mut Vec<u8>, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                number(out, octet.into());
            }
            out.push(b':');
            number(out, v4.port().into());
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{address}");
        }
    }
}

fn number(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// The last `N` decimal digits of `value`, zero-padded.
fn padded<const N: usize>(out: &mut Vec<u8>, mut value: u32) {
    let mut digits = [b'0'; N];
    for digit in digits.iter_mut().rev() {
        // A remainder of 10 fits a byte.
        *digit += (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits);
}

/// Milliseconds to the microsecond (`12.345`): the microseconds' digits,
/// from one 64-bit integer, with a point put in (a `Duration`'s own
/// `as_micros` divides 128-bit numbers).
fn millis(out: &mut Vec<u8>, time: Duration) {
    let micros =
        (time.as_secs().saturating_mul(1_000_000)).saturating_add(time.subsec_micros().into());
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(micros).as_bytes();
    match digits.len().checked_sub(3) {
        Some(point) if point > 0 => {
            out.extend_from_slice(&digits[..point]);
            out.push(b'.');
            out.extend_from_slice(&digits[point..]);
        }
        _ => {
            out.extend_from_slice(b"0.000");
            let end = out.len();
            out[end - digits.len()..].copy_from_slice(digits);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::{HeaderValue, Method, Uri};

    use super::*;
    use crate::observe::TlsSession;

    fn record(request_id: &'static str, path: &'static str) -> Record {
        Record::new(
            HeaderValue::from_static(request_id),
            Method::POST,
            Uri::from_static(path),
            "[::1]:4321".parse().expect("address"),
            Arc::from("main"),
            Some(TlsSession {
                version: "TLSv1.3",
                sni: Some(Arc::from("api.example")),
            }),
        )
    }

    fn line_of(record: &Record) -> serde_json::Value {
        let mut out = Vec::new();
        write(&mut out, &mut Clock::default(), record, record.elapsed());
        assert_eq!(out.last(), Some(&b'\n'), "one line");
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        serde_json::from_slice(&out).expect("the line is JSON")
    }

    #[test]
    fn a_line_holds_every_field_as_json() {
        let record = record("req-1", "/items?x=1");
        record.update(|d| {
            d.route = Some(Arc::from("api"));
            d.upstream = Some(Arc::from("pool"));
            d.target = Some(Arc::from("10.0.0.1:80"));
            d.consumer = Some("alice".into());
            d.status = 503;
        });
        record.add_bytes_in(7);
        record.add_bytes_out(12);
        record.add_upstream_time(Duration::from_micros(1500));
        record.flag(Flag::UpstreamTimeout);
        record.flag(Flag::ClientAbort);
        let line = line_of(&record);
        assert_eq!(line["request_id"], "req-1");
        assert_eq!(line["listener"], "main");
        assert_eq!(line["route"], "api");
        assert_eq!(line["consumer"], "alice");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["path"], "/items");
        assert_eq!(line["status"], 503);
        assert_eq!(line["upstream"], "pool");
        assert_eq!(line["upstream_target"], "10.0.0.1:80");
        assert_eq!(line["upstream_ms"], 1.5);
        assert_eq!(line["plugins_ms"], 0.0);
        assert_eq!(
            (line["bytes_in"].as_u64(), line["bytes_out"].as_u64()),
            (Some(7), Some(12))
        );
        assert_eq!(line["client"], "[::1]:4321");
        assert_eq!(line["tls_version"], "TLSv1.3");
        assert_eq!(line["sni"], "api.example");
        assert_eq!(
            line["flags"],
            serde_json::json!(["upstream_timeout", "client_abort"])
        );
        assert_eq!(line.get("trace_id"), None, "no trace, no trace id");
        let time = line["time"].as_str().unwrap_or_default();
        let arrived = record
            .arrived_at()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let to_the_micro = UNIX_EPOCH + Duration::from_micros(arrived.as_micros() as u64);
        assert_eq!(
            humantime::parse_rfc3339(time).ok(),
            Some(to_the_micro),
            "{time}"
        );
    }

    #[test]
    fn unknown_parts_are_null_and_strings_that_need_it_are_escaped() {
        let record = Record::new(
            HeaderValue::from_static("id"),
            Method::GET,
            Uri::from_static("/a%22b"),
            "127.0.0.1:1".parse().expect("address"),
            Arc::from("main"),
            None,
        );
        record.update(|d| d.consumer = Some("quote \" back \\ tab \t".into()));
        let line = line_of(&record);
        assert_eq!(line["consumer"], "quote \" back \\ tab \t");
        assert_eq!(line["route"], serde_json::Value::Null);
        assert_eq!(line["tls_version"], serde_json::Value::Null);
        assert_eq!(line["status"], 0);
        assert_eq!(line["client"], "127.0.0.1:1");
        assert_eq!(line["flags"], serde_json::json!([]));
    }

    #[test]
    fn a_byte_to_escape_is_found_wherever_it_is() {
        for length in 0..20 {
            let plain = vec![b'a'; length];
            assert!(!needs_escaping(&plain), "{length} plain bytes");
            for at in 0..length {
                for byte in (0..0x20).chain([b'"', b'\\']) {
                    let mut text = plain.clone();
                    text[at] = byte;
                    assert!(needs_escaping(&text), "{byte:#x} at {at} of {length}");
                }
                // Bytes just past the ones escaped, and UTF-8's high ones.
                for byte in [0x20, b'!', b'#', b'[', b']', 0x7f, 0x80, 0xe9, 0xff] {
                    let mut text = plain.clone();
                    text[at] = byte;
                    assert!(!needs_escaping(&text), "{byte:#x} at {at} of {length}");
                }
            }
        }
    }

    #[test]
    fn times_and_durations_are_written_to_the_microsecond() {
        let mut out = Vec::new();
        let mut clock = Clock::default();
        let at = UNIX_EPOCH + Duration::from_micros(1_796_284_800_000_042);
        clock.write(&mut out, at);
        out.push(b' ');
        // Within the same second: the cached date, a new fraction.
        clock.write(&mut out, at + Duration::from_micros(900_000));
        out.push(b' ');
        clock.write(&mut out, at + Duration::from_secs(61));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "2026-12-03T08:00:00.000042Z 2026-12-03T08:00:00.900042Z 2026-12-03T08:01:01.000042Z"
        );
        let mut out = Vec::new();
        for time in [
            Duration::ZERO,
            Duration::from_nanos(999),
            Duration::from_micros(7),
            Duration::from_micros(999),
            Duration::from_micros(1000),
            Duration::from_micros(12_345),
            Duration::from_micros(999_999),
            Duration::from_secs(3),
            Duration::new(3, 7_000),
        ] {
            millis(&mut out, time);
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            "0.000 0.000 0.007 0.999 1.000 12.345 999.999 3000.000 3000.007 "
        );
    }
}
