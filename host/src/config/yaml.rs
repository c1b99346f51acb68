//! Manifest text → located YAML tree, within a parse budget that grows with
//! the size cap rather than a fixed node count.
//!
//! serde-saphyr's default budget stops at 250,000 nodes (about 19,000
//! routes). Weir's budget allows one node per [`BYTES_PER_NODE`] bytes of
//! [`MAX_MANIFEST_BYTES`], so any manifest within the size cap that is not
//! built to be dense fits. Aliases keep serde-saphyr's bounds (at most 50,000
//! aliases and anchors, an alias-to-anchor ratio, and 1,000,000 replayed
//! events in all), so a "billion laughs" manifest is refused early.

use serde_saphyr::budget::BudgetBreach;

use super::decode::Diagnostic;
use super::file::MAX_MANIFEST_BYTES;
use super::node::{Location, Node};

/// Bytes of manifest per YAML node the budget allows. A real manifest spends
/// more on each (a key, `: `, a value, a line break or `, `).
pub const BYTES_PER_NODE: usize = 4;

/// YAML nodes (scalars, lists and mappings) a manifest may hold: 16,777,216.
/// 100,000 routes in block style take about 1.3 million.
pub const MAX_NODES: usize = MAX_MANIFEST_BYTES as usize / BYTES_PER_NODE;

/// Parses `text` into a located tree, within the budget.
pub fn parse(text: &str) -> Result<Node, Diagnostic> {
    parse_within(text, MAX_NODES)
}

/// Parses `text` into a located tree of at most `max_nodes` nodes.
fn parse_within(text: &str, max_nodes: usize) -> Result<Node, Diagnostic> {
    serde_saphyr::from_str_with_options(text, options(max_nodes))
        .map_err(|e| diagnostic(&e, max_nodes))
}

/// serde-saphyr's options with the node, event and scalar budgets scaled to
/// the size cap; every alias and anchor limit stays at its default.
fn options(max_nodes: usize) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = max_nodes;
    // Every list and mapping also ends with an event, and the stream and
    // document start and end with two each.
    budget.max_events = 2 * max_nodes + 4;
    // Scalar text comes from the file (aliases are bounded on their own).
    budget.max_total_scalar_bytes = MAX_MANIFEST_BYTES as usize;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// A manifest document that could not be written as YAML.
#[derive(Debug, thiserror::Error)]
#[error("the manifest cannot be written as YAML: {0}")]
pub struct EmitError(String);

/// Writes `document` (a manifest as JSON, from [`super::document`]) as YAML
/// text that loads back to the same document: block style, keys in their
/// order, strings that would read as another type (`"yes"`, `"1.0"`,
/// `"null"`) quoted, multi-line strings as block scalars.
pub fn emit(document: &serde_json::Value) -> Result<String, EmitError> {
    serde_saphyr::to_string(document).map_err(|e| EmitError(e.to_string()))
}

/// Turns a YAML syntax error or budget breach into a diagnostic.
fn diagnostic(error: &serde_saphyr::Error, max_nodes: usize) -> Diagnostic {
    let location = error
        .location()
        .map(|l| Location {
            line: l.line(),
            column: l.column(),
        })
        .unwrap_or_default();
    let message = match error.without_snippet() {
        serde_saphyr::Error::Budget {
            breach: BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. },
            ..
        } => format!(
            "the manifest has more than {max_nodes} YAML nodes (scalars, lists and mappings)"
        ),
        _ => format!("invalid YAML: {}", error.without_snippet()),
    };
    Diagnostic { location, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Emits `document` and reads it back as `config::document` does.
    fn round_trip(document: &serde_json::Value) -> serde_json::Value {
        let text = emit(document).expect("emits");
        parse(&text)
            .unwrap_or_else(|d| panic!("{}: {text}", d.message))
            .to_json()
    }

    #[test]
    fn emitted_yaml_loads_back_to_the_same_document() {
        let document = serde_json::json!({
            "apiVersion": "weir/v1",
            "routes": [{
                "name": "a.b:c",
                "respond": {"status": 200, "body": "line one\nline two\n"},
                "headers": {"x-yes": "yes", "x-no": "No", "x-on": "on", "x-true": "true"},
                "looks": ["1.0", "1", "0x1f", "1e3", "null", "~", "", " padded ", "-", "- x", "a: b", "#c", "*alias", "&anchor", "!tag", "@at", "`tick", "'q'", "\"dq\"", "%p", "{x}", "[y]", "tab\tin", "ünï", "trailing\n\n", "no end\nnewline"],
                "keys": {"with.dot": 1, "with:colon": 2, "1.5": 3, "null": 4, "true": 5, "a b": 6},
                "numbers": [0, -1, 1.5, 1e300, 9007199254740993u64],
                "flags": [true, false, null],
                "empty": {"list": [], "map": {}}
            }]
        });
        assert_eq!(round_trip(&document), document);
    }

    #[test]
    fn emits_block_style_a_person_reads() {
        let document =
            serde_json::json!({"routes": [{"name": "hello", "respond": {"body": "hi"}}]});
        assert_eq!(
            emit(&document).expect("emits"),
            "routes:\n- name: hello\n  respond:\n    body: hi\n"
        );
    }

    #[test]
    fn parses_more_nodes_than_the_library_default() {
        // 300,000 scalars, past serde-saphyr's default budget of 250,000 nodes.
        let text = format!("[{}]", vec!["1"; 300_000].join(","));
        let node = parse(&text).expect("within Weir's budget");
        assert!(
            matches!(node.value, super::super::node::Value::Seq(ref items) if items.len() == 300_000)
        );
    }

    #[test]
    fn refuses_more_nodes_than_the_budget_at_the_node_past_it() {
        let text = "- 1\n- 2\n- 3\n- 4\n";
        assert!(parse_within(text, 5).is_ok(), "a list and four scalars fit");
        let error = parse_within(text, 4).expect_err("five nodes, four allowed");
        assert_eq!(
            error.message,
            "the manifest has more than 4 YAML nodes (scalars, lists and mappings)"
        );
        assert_eq!((error.location.line, error.location.column), (4, 3));
    }

    #[test]
    fn refuses_a_billion_laughs() {
        // Each level is ten aliases of the one before: 10^9 strings if expanded.
        let mut text = String::from("a0: &a0 [lol]\n");
        for level in 1..=9 {
            let previous = format!("*a{}", level - 1);
            let aliases = [previous.as_str(); 10].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{aliases}]\n"));
        }
        let error = parse(&text).expect_err("an alias bomb");
        assert!(
            error
                .message
                .starts_with("invalid YAML: budget breached: RecordedAnchorEvents"),
            "{}",
            error.message
        );
    }
}
