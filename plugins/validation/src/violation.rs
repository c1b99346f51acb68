//! What was wrong with a request (or a response): each violation with where
//! it is (`in`), a JSON pointer into that part, and a message; the list is
//! capped.

use serde::Serialize;

/// The longest message kept, in bytes; longer ones (the validator quotes the
/// offending value) are cut with `…`.
const MAX_MESSAGE: usize = 200;

/// The part of the message a violation is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// The body (JSON, or a form as an object).
    Body,
    /// The query parameters, as an object.
    Query,
    /// The headers, as an object of lower-case names.
    Header,
    /// The path parameters of an OpenAPI path template, as an object.
    Path,
    /// The cookies, as an object.
    Cookie,
    /// A response's status.
    Status,
}

impl Place {
    /// Its name in the `in` member.
    pub fn name(self) -> &'static str {
        match self {
            Self::Body => "body",
            Self::Query => "query",
            Self::Header => "header",
            Self::Path => "path",
            Self::Cookie => "cookie",
            Self::Status => "status",
        }
    }
}

/// One violation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Where.
    #[serde(rename = "in")]
    pub place: Place,
    /// A JSON pointer (RFC 6901) into that part; empty for the whole.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.place.name(),
            self.pointer,
            self.message
        )
    }
}

/// The violations found so far, at most `max`.
#[derive(Debug)]
pub struct Report {
    violations: Vec<Violation>,
    max: usize,
    truncated: bool,
}

impl Report {
    /// An empty report that keeps up to `max` violations.
    pub fn new(max: usize) -> Self {
        Self {
            violations: Vec::new(),
            max,
            truncated: false,
        }
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether no more violations are kept.
    pub fn is_full(&self) -> bool {
        self.violations.len() >= self.max
    }

    /// Adds a violation; `false` (and the report marked truncated) when full.
    pub fn add(&mut self, place: Place, pointer: String, message: &str) -> bool {
        if self.is_full() {
            self.truncated = true;
            return false;
        }
        self.violations.push(Violation {
            place,
            pointer,
            message: shortened(message),
        });
        true
    }

    /// How many violations are kept so far.
    pub fn len(&self) -> usize {
        self.violations.len()
    }

    /// Orders the violations kept since there were `start` by their pointer
    /// (one check's list, in a stable order whatever the keywords' order).
    pub fn sort_from(&mut self, start: usize) {
        if let Some(tail) = self.violations.get_mut(start..) {
            tail.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        }
    }

    /// The violations kept.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// `n violation(s)`, or `more than n violations; the first n are listed`.
    pub fn summary(&self) -> String {
        let n = self.violations.len();
        if self.truncated {
            format!("more than {n} violations; the first {n} are listed")
        } else if n == 1 {
            "1 violation".to_owned()
        } else {
            format!("{n} violations")
        }
    }

    /// The violations on one line, for a log.
    pub fn one_line(&self) -> String {
        let mut line = self
            .violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        if self.truncated {
            line.push_str("; …");
        }
        line
    }
}

/// The extra members of the JSON error: `{"violations": [...]}`.
#[derive(Serialize)]
pub struct Details<'a> {
    /// The list.
    pub violations: &'a [Violation],
}

/// `message` cut to [`MAX_MESSAGE`] bytes at a character boundary.
fn shortened(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_keeps_at_most_max_and_says_so() {
        let mut report = Report::new(2);
        assert!(report.add(Place::Query, "/a".into(), "one"));
        assert_eq!(report.summary(), "1 violation");
        assert!(report.add(Place::Body, String::new(), "two"));
        assert!(!report.add(Place::Body, String::new(), "three"));
        assert_eq!(
            report.summary(),
            "more than 2 violations; the first 2 are listed"
        );
        assert_eq!(report.one_line(), "query /a: one; body : two; …");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(150);
        let cut = shortened(&long);
        assert!(cut.ends_with('…'));
        assert_eq!(cut.len(), MAX_MESSAGE + '…'.len_utf8());
    }
}
