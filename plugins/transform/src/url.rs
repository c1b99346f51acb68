//! The request target: the path rewritten by a regular expression, and
//! query parameters removed, set, added and appended. Parameters the edits
//! leave alone keep the encoding the client gave them.

use regex::Regex;
use weir_sdk::params::decode;

/// A path rewrite: the first match of `regex` in the path (without its
/// query) is replaced by `replace`, where `$1` and `${name}` are captures.
#[derive(Debug, Clone)]
pub struct PathRewrite {
    regex: Regex,
    replace: String,
}

impl PathRewrite {
    /// Compiles the rewrite; the error says what is wrong with it.
    pub fn new(regex: &str, replace: &str) -> Result<Self, (&'static str, String)> {
        let regex = Regex::new(regex).map_err(|e| ("regex", e.to_string()))?;
        check_captures(&regex, replace).map_err(|e| ("replace", e))?;
        Ok(Self {
            regex,
            replace: replace.to_owned(),
        })
    }

    /// The rewritten path, or `None` when the regex does not match.
    fn apply(&self, path: &str) -> Option<String> {
        let captures = self.regex.captures(path)?;
        let whole = captures.get(0)?;
        let mut out = String::with_capacity(path.len() + self.replace.len());
        out.push_str(&path[..whole.start()]);
        captures.expand(&self.replace, &mut out);
        out.push_str(&path[whole.end()..]);
        Some(out)
    }
}

/// Refuses a `replace` that names a capture the regex does not have (the
/// regex crate would put nothing there, silently).
fn check_captures(regex: &Regex, replace: &str) -> Result<(), String> {
    let mut rest = replace;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(escaped) = rest.strip_prefix('$') {
            rest = escaped;
            continue;
        }
        let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => return Err(format!("`{replace}`: a `${{` is not closed by `}}`")),
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        let known = match name.parse::<usize>() {
            Ok(index) => index < regex.captures_len(),
            Err(_) => regex.capture_names().flatten().any(|n| n == name),
        };
        if name.is_empty() || !known {
            return Err(format!(
                "`{replace}` names capture `{name}`, which the regex does not have \
                 (write `$$` for a `$`)"
            ));
        }
        rest = after;
    }
    Ok(())
}

/// One edit of the query; values are template indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryEdit {
    /// Removes every parameter `name`.
    Remove(String),
    /// Makes the value the only value of `name` (where its first was).
    Set(String, usize),
    /// Adds `name` when the query has none.
    Add(String, usize),
    /// Adds one more `name`.
    Append(String, usize),
}

/// What to do to the request target.
#[derive(Debug, Clone, Default)]
pub struct TargetEdits {
    /// The path rewrite, if any.
    pub path: Option<PathRewrite>,
    /// The query edits, in order.
    pub query: Vec<QueryEdit>,
}

impl TargetEdits {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.path.is_none() && self.query.is_empty()
    }

    /// The new target for `target` (path and query); `None` when it stays
    /// as it is. `value(i)` is template `i`'s text (`None`: the edit is
    /// skipped).
    pub fn apply(&self, target: &str, value: impl Fn(usize) -> Option<String>) -> Option<String> {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let new_path = self.path.as_ref().and_then(|rewrite| rewrite.apply(path));
        let new_query = (!self.query.is_empty())
            .then(|| edit_query(query.unwrap_or_default(), &self.query, value));
        if new_path.is_none() && new_query.as_deref().is_none_or(|q| Some(q) == query) {
            return None;
        }
        let mut out = new_path.unwrap_or_else(|| path.to_owned());
        let query = new_query.as_deref().or(query).unwrap_or_default();
        if !query.is_empty() {
            out.push('?');
            out.push_str(query);
        }
        Some(out)
    }
}

/// `query` after `edits`, untouched parameters as they were written.
fn edit_query(query: &str, edits: &[QueryEdit], value: impl Fn(usize) -> Option<String>) -> String {
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(str::to_owned)
        .collect();
    let named =
        |pair: &str, name: &str| decode(pair.split_once('=').map_or(pair, |(k, _)| k)) == name;
    let encoded = |name: &str, value: &str| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair(name, value)
            .finish()
    };
    for edit in edits {
        match edit {
            QueryEdit::Remove(name) => pairs.retain(|pair| !named(pair, name)),
            QueryEdit::Set(name, i) => {
                let Some(value) = value(*i) else { continue };
                let first = pairs.iter().position(|pair| named(pair, name));
                pairs.retain(|pair| !named(pair, name));
                let at = first.unwrap_or(pairs.len());
                pairs.insert(at, encoded(name, &value));
            }
            QueryEdit::Add(name, i) => {
                if !pairs.iter().any(|pair| named(pair, name))
                    && let Some(value) = value(*i)
                {
                    pairs.push(encoded(name, &value));
                }
            }
            QueryEdit::Append(name, i) => {
                if let Some(value) = value(*i) {
                    pairs.push(encoded(name, &value));
                }
            }
        }
    }
    pairs.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(regex: &str, replace: &str) -> PathRewrite {
        PathRewrite::new(regex, replace).expect("valid")
    }

    #[test]
    fn paths_are_rewritten_with_captures() {
        let edits = TargetEdits {
            path: Some(rewrite(r"^/v1/users/(?P<id>\d+)", "/api/people/$id")),
            query: Vec::new(),
        };
        let none = |_| None;
        assert_eq!(
            edits.apply("/v1/users/42/orders?x=1", none).as_deref(),
            Some("/api/people/42/orders?x=1")
        );
        assert_eq!(edits.apply("/v2/users/42", none), None);
        let swap = rewrite(r"^/(\w+)/(\w+)$", "/${2}/$1/$$");
        assert_eq!(swap.apply("/a/b").as_deref(), Some("/b/a/$"));
    }

    #[test]
    fn replacements_naming_unknown_captures_are_refused() {
        assert_eq!(
            PathRewrite::new(r"^/(a)", "/$2").expect_err("no $2").0,
            "replace"
        );
        assert_eq!(
            PathRewrite::new(r"^/(a)", "/$name").expect_err("no name").0,
            "replace"
        );
        assert_eq!(
            PathRewrite::new(r"^/(a)", "/${1").expect_err("unclosed").0,
            "replace"
        );
        assert_eq!(
            PathRewrite::new(r"^/(a", "/").expect_err("bad regex").0,
            "regex"
        );
        assert!(PathRewrite::new(r"^/(a)", "/$0$1$$").is_ok());
    }

    #[test]
    fn query_parameters_are_edited_and_the_rest_kept_as_written() {
        let edits = TargetEdits {
            path: None,
            query: vec![
                QueryEdit::Remove("api_key".into()),
                QueryEdit::Set("page".into(), 0),
                QueryEdit::Add("lang".into(), 1),
                QueryEdit::Add("sort".into(), 1),
                QueryEdit::Append("tag".into(), 2),
                QueryEdit::Append("skipped".into(), 3),
            ],
        };
        let values = ["2", "en", "a b&c"];
        let value = |i: usize| values.get(i).map(|v| (*v).to_owned());
        assert_eq!(
            edits
                .apply(
                    "/items?q=caf%C3%A9&api%5Fkey=s&page=1&page=3&sort=asc",
                    value
                )
                .as_deref(),
            Some("/items?q=caf%C3%A9&page=2&sort=asc&lang=en&tag=a+b%26c")
        );
        assert_eq!(
            edits.apply("/items", value).as_deref(),
            Some("/items?page=2&lang=en&sort=en&tag=a+b%26c")
        );
        let remove_only = TargetEdits {
            path: None,
            query: vec![QueryEdit::Remove("token".into())],
        };
        assert_eq!(
            remove_only.apply("/x?token=1", value).as_deref(),
            Some("/x")
        );
        assert_eq!(remove_only.apply("/x?a=1", value), None);
    }
}
