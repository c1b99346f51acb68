//! Path templates of the calls (`/users/${path.id}?q=${query.q}`): parsed
//! once when configured, rendered for each request from its path, the
//! named captures of `path_pattern`, its query parameters and headers.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What is escaped in a query parameter's or header's value before it goes
/// into a path: every byte but RFC 3986's unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One value a template reads from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `${path}`: the request's path, without its query.
    Path,
    /// `${path.NAME}`: named group `NAME` of `path_pattern`.
    Capture(String),
    /// `${query.NAME}`: query parameter `NAME`, decoded.
    Query(String),
    /// `${header.NAME}`: request header `NAME` (lower case).
    Header(String),
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Text written as is.
    Literal(String),
    /// A value of the request.
    Value(Source),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// What a request gives templates to read.
pub trait Values {
    /// The value of `source`, when the request has it.
    fn get(&self, source: &Source) -> Option<String>;
}

impl Template {
    /// Parses `text`; `captures` are the named groups of `path_pattern`.
    /// The error says what is wrong, for the configuration's pointer.
    pub fn parse(text: &str, captures: &[&str]) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("${") {
            if at > 0 {
                pieces.push(Piece::Literal(rest[..at].to_owned()));
            }
            let after = &rest[at + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("`${{` without its `}}` in `{text}`"))?;
            pieces.push(Piece::Value(source(&after[..end], captures)?));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        Ok(Self { pieces })
    }

    /// The template with the request's values; a value the request lacks is
    /// empty. Query parameters and headers are percent-encoded, path values
    /// go in as the request's path has them.
    pub fn render(&self, values: &impl Values) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Value(source) => {
                    let Some(value) = values.get(source) else {
                        continue;
                    };
                    match source {
                        Source::Path | Source::Capture(_) => out.push_str(&value),
                        Source::Query(_) | Source::Header(_) => {
                            out.extend(utf8_percent_encode(&value, COMPONENT));
                        }
                    }
                }
            }
        }
        out
    }

    /// The values the template reads.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Value(source) => Some(source),
            Piece::Literal(_) => None,
        })
    }
}

/// The source named `name` (what is between `${` and `}`).
fn source(name: &str, captures: &[&str]) -> Result<Source, String> {
    let unknown = || {
        format!(
            "unknown template `${{{name}}}`: write ${{path}}, ${{path.NAME}} (a named group of \
             path_pattern), ${{query.NAME}} or ${{header.NAME}}"
        )
    };
    if name == "path" {
        return Ok(Source::Path);
    }
    let (kind, key) = name.split_once('.').ok_or_else(unknown)?;
    if key.is_empty() {
        return Err(unknown());
    }
    match kind {
        "path" if captures.contains(&key) => Ok(Source::Capture(key.to_owned())),
        "path" if captures.is_empty() => Err(format!(
            "`${{{name}}}` needs path_pattern, a regex with a group named `{key}`"
        )),
        "path" => Err(format!(
            "`${{{name}}}`: path_pattern has no group named `{key}` (it has {})",
            captures.join(", ")
        )),
        "query" => Ok(Source::Query(key.to_owned())),
        "header" if crate::config::is_header_name(&key.to_ascii_lowercase()) => {
            Ok(Source::Header(key.to_ascii_lowercase()))
        }
        "header" => Err(format!("`{key}` is not a header name")),
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Values for Fixed {
        fn get(&self, source: &Source) -> Option<String> {
            match source {
                Source::Path => Some("/v1/users/42".into()),
                Source::Capture(name) if name == "id" => Some("42".into()),
                Source::Query(name) if name == "q" => Some("a b&c=d/é".into()),
                Source::Header(name) if name == "x-tenant" => Some("acme".into()),
                _ => None,
            }
        }
    }

    #[test]
    fn renders_path_values_as_is_and_escapes_query_and_header_values() {
        let template = Template::parse(
            "/users/${path.id}/orders?q=${query.q}&t=${header.X-Tenant}&none=${query.none}",
            &["id"],
        )
        .expect("parsed");
        assert_eq!(
            template.render(&Fixed),
            "/users/42/orders?q=a%20b%26c%3Dd%2F%C3%A9&t=acme&none="
        );
        let whole = Template::parse("/mirror${path}", &[]).expect("parsed");
        assert_eq!(whole.render(&Fixed), "/mirror/v1/users/42");
        let plain = Template::parse("/status", &[]).expect("parsed");
        assert_eq!(plain.render(&Fixed), "/status");
        assert_eq!(plain.sources().count(), 0);
    }

    #[test]
    fn unknown_names_are_refused_with_what_to_write() {
        let refused =
            |text: &str, captures: &[&str]| Template::parse(text, captures).expect_err("refused");
        assert!(refused("/x/${user}", &[]).starts_with("unknown template `${user}`"));
        assert!(refused("/x/${cookie.a}", &[]).starts_with("unknown template"));
        assert!(refused("/x/${query.}", &[]).starts_with("unknown template"));
        assert_eq!(
            refused("/x/${path.id}", &[]),
            "`${path.id}` needs path_pattern, a regex with a group named `id`"
        );
        assert_eq!(
            refused("/x/${path.uid}", &["id", "org"]),
            "`${path.uid}`: path_pattern has no group named `uid` (it has id, org)"
        );
        assert_eq!(
            refused("/x/${header.a b}", &[]),
            "`a b` is not a header name"
        );
        assert_eq!(
            refused("/x/${path", &[]),
            "`${` without its `}` in `/x/${path`"
        );
    }
}
