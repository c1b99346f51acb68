//! libinjection (`libinjection/`, BSD-3-Clause, compiled by `build.rs`):
//! the SQL and HTML tokenizers behind CRS's `@detectSQLi` and `@detectXSS`.
//! Safe wrappers over its two entry points; depends on nothing else.

use std::ffi::{c_char, c_int};

unsafe extern "C" {
    fn libinjection_sqli(s: *const c_char, slen: usize, fingerprint: *mut c_char) -> c_int;
    fn libinjection_xss(s: *const c_char, slen: usize) -> c_int;
}

/// The fingerprint of `input` (e.g. `s&1`) when libinjection reads it as
/// SQL injection.
pub(crate) fn sqli(input: &[u8]) -> Option<String> {
    // libinjection writes at most 7 characters and a NUL.
    let mut fingerprint = [0u8; 8];
    // SAFETY: `input` is valid for `input.len()` bytes, which libinjection
    // reads without needing a NUL; `fingerprint` has the 8 bytes it writes.
    let found = unsafe {
        libinjection_sqli(
            input.as_ptr().cast(),
            input.len(),
            fingerprint.as_mut_ptr().cast(),
        )
    };
    (found != 0).then(|| {
        let end = fingerprint.iter().position(|b| *b == 0).unwrap_or(8);
        String::from_utf8_lossy(&fingerprint[..end]).into_owned()
    })
}

/// Whether libinjection reads `input` as cross-site scripting.
pub(crate) fn xss(input: &[u8]) -> bool {
    // SAFETY: `input` is valid for `input.len()` bytes; libinjection only
    // reads them.
    unsafe { libinjection_xss(input.as_ptr().cast(), input.len()) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_sql_injection_with_its_fingerprint() {
        assert_eq!(sqli(b"1' OR '1'='1").as_deref(), Some("s&sos"));
        assert_eq!(
            sqli(b"-1 UNION SELECT password FROM users--").as_deref(),
            Some("1UEnk")
        );
        assert_eq!(sqli(b"O'Brien"), None);
        assert_eq!(sqli(b"select a plan"), None);
    }

    #[test]
    fn detects_cross_site_scripting() {
        assert!(xss(b"<script>alert(1)</script>"));
        assert!(xss(b"<img src=x onerror=alert(1)>"));
        assert!(xss(b"\" onmouseover=\"alert(1)"));
        assert!(!xss(b"fish & chips < 5 euros"));
        assert!(!xss(b"<b>bold</b>"));
    }
}
