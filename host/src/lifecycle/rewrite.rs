//! Path rewrites applied before a request is forwarded.

use crate::config::model::{PathMatch, PathRewrite};

/// The rewritten path for `path`, given the route's path match.
pub fn rewrite_path(path: &str, rule: &PathRewrite, matched: &PathMatch) -> String {
    match rule {
        PathRewrite::StripPrefix(prefix) => match strip_segment_prefix(path, prefix) {
            Some(rest) => rest.to_owned(),
            None => path.to_owned(),
        },
        PathRewrite::ReplacePrefix(replacement) => {
            let PathMatch::Prefix(prefix) = matched else {
                return path.to_owned();
            };
            match path.strip_prefix(prefix.as_str()) {
                Some(rest) => join(replacement, rest),
                None => path.to_owned(),
            }
        }
        PathRewrite::ReplacePath(replacement) => replacement.clone(),
    }
}

/// `path` without `prefix` when it starts with it at a segment boundary; never empty.
fn strip_segment_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    let rest = path.strip_prefix(prefix)?;
    match rest {
        "" => Some("/"),
        r if r.starts_with('/') => Some(r),
        _ => None,
    }
}

/// Joins two path pieces with exactly one `/` between them.
fn join(base: &str, rest: &str) -> String {
    match (base.ends_with('/'), rest.starts_with('/')) {
        (true, true) => format!("{base}{}", &rest[1..]),
        (false, false) if !rest.is_empty() => format!("{base}/{rest}"),
        _ => format!("{base}{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.to_owned())
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let rule = PathRewrite::StripPrefix("/v1".into());
        assert_eq!(
            rewrite_path("/v1/users/7", &rule, &prefix("/v1")),
            "/users/7"
        );
        assert_eq!(rewrite_path("/v1", &rule, &prefix("/v1")), "/");
        assert_eq!(
            rewrite_path("/v10/users", &rule, &prefix("/")),
            "/v10/users"
        );
    }

    #[test]
    fn replace_prefix_swaps_the_matched_prefix() {
        let rule = PathRewrite::ReplacePrefix("/api/v2".into());
        assert_eq!(
            rewrite_path("/v2/users", &rule, &prefix("/v2")),
            "/api/v2/users"
        );
        let rule = PathRewrite::ReplacePrefix("/".into());
        assert_eq!(rewrite_path("/old/x", &rule, &prefix("/old")), "/x");
    }

    #[test]
    fn replace_path_replaces_everything() {
        let rule = PathRewrite::ReplacePath("/healthz".into());
        assert_eq!(
            rewrite_path("/status/deep", &rule, &prefix("/status")),
            "/healthz"
        );
    }
}
