//! The rule engine: CRS rule definitions (the table in `crs.rs`), compiled
//! once per plugin into a [`RuleSet`] for a paranoia level, and evaluated
//! against a request's [`Variable`]s. Depends on `transform`,
//! `libinjection` and `request`; knows nothing of the host.

use aho_corasick::AhoCorasick;
use regex_automata::meta::{self, Regex};
use regex_automata::nfa::thompson::WhichCaptures;
use regex_automata::util::syntax;

use crate::libinjection;
use crate::request::{Kind, Variable};
use crate::transform::{Chains, Transform, Transformed};

/// How much a rule adds to the request's anomaly score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    /// 5.
    Critical,
    /// 4.
    #[allow(
        dead_code,
        reason = "CRS's scale; no imported request rule is an error"
    )]
    Error,
    /// 3.
    Warning,
    /// 2.
    #[allow(
        dead_code,
        reason = "CRS's scale; no imported request rule is a notice"
    )]
    Notice,
}

impl Severity {
    /// The anomaly score CRS gives the severity.
    pub(crate) fn score(self) -> u32 {
        match self {
            Self::Critical => 5,
            Self::Error => 4,
            Self::Warning => 3,
            Self::Notice => 2,
        }
    }
}

/// What a rule reads (a ModSecurity variable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// `ARGS`: query and body argument values.
    Args,
    /// `ARGS_NAMES`.
    ArgNames,
    /// `ARGS_GET`: query argument values.
    QueryArgs,
    /// `ARGS_GET_NAMES`.
    QueryArgNames,
    /// `REQUEST_COOKIES`: cookie values.
    Cookies,
    /// `REQUEST_COOKIES_NAMES`.
    CookieNames,
    /// `REQUEST_HEADERS`: every header's value.
    Headers,
    /// `REQUEST_HEADERS:<name>` (lower case).
    Header(&'static str),
    /// `REQUEST_HEADERS_NAMES`.
    HeaderNames,
    /// `REQUEST_FILENAME`: the path without the query.
    Filename,
    /// `REQUEST_BASENAME`: the path's last segment.
    Basename,
    /// `REQUEST_URI_RAW`: the path with the query, as sent.
    Uri,
    /// `REQUEST_LINE`: method, path and protocol.
    RequestLine,
    /// `REQUEST_BODY`: a body, raw.
    Body,
    /// `QUERY_STRING`.
    QueryString,
    /// `XML:/*` and `XML://@*`: an XML body's texts and attribute values.
    Xml,
}

impl Target {
    /// Whether this target reads `variable`.
    fn selects(self, variable: &Variable) -> bool {
        match (self, variable.kind) {
            (Self::Args, Kind::Arg { .. })
            | (Self::ArgNames, Kind::ArgName { .. })
            | (Self::QueryArgs, Kind::Arg { query: true })
            | (Self::QueryArgNames, Kind::ArgName { query: true })
            | (Self::Cookies, Kind::Cookie)
            | (Self::CookieNames, Kind::CookieName)
            | (Self::Headers, Kind::Header)
            | (Self::HeaderNames, Kind::HeaderName)
            | (Self::Filename, Kind::Filename)
            | (Self::Basename, Kind::Basename)
            | (Self::Uri, Kind::Uri)
            | (Self::RequestLine, Kind::RequestLine)
            | (Self::Body, Kind::Body)
            | (Self::QueryString, Kind::QueryString)
            | (Self::Xml, Kind::Xml) => true,
            (Self::Header(name), Kind::Header) => variable.name == name.as_bytes(),
            _ => false,
        }
    }
}

/// A target a rule leaves out (`!REQUEST_HEADERS:Referer`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Exclude {
    /// The entry of the target with this name (case-insensitive).
    Exact(Target, &'static str),
    /// The entries of the target whose name matches this regex.
    Pattern(Target, &'static str),
}

/// How a rule tests a value (a ModSecurity operator).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Operator {
    /// `@rx`: a regular expression, on bytes.
    Rx(&'static str),
    /// `@pm`, `@pmFromFile`: any of the phrases, case-insensitive.
    Pm(&'static [&'static str]),
    /// `@detectSQLi`: libinjection's SQL tokenizer.
    DetectSqli,
    /// `@detectXSS`: libinjection's HTML tokenizer.
    DetectXss,
    /// `@contains`.
    Contains(&'static str),
}

/// One rule as imported from CRS.
#[derive(Debug)]
pub(crate) struct RuleDef {
    /// CRS's id (942100).
    pub(crate) id: u32,
    /// The lowest paranoia level that runs it (1-4).
    pub(crate) paranoia: u8,
    /// Its severity.
    pub(crate) severity: Severity,
    /// What it detects.
    pub(crate) msg: &'static str,
    /// What it reads.
    pub(crate) targets: &'static [Target],
    /// What it leaves out of its targets.
    pub(crate) exclude: &'static [Exclude],
    /// The transformations applied before the operator, in order.
    pub(crate) transforms: &'static [Transform],
    /// Whether the operator also runs on the value before and between
    /// transformations (`multiMatch`).
    pub(crate) multi_match: bool,
    /// Whether the rule matches when the operator does not.
    pub(crate) negated: bool,
    /// The test.
    pub(crate) operator: Operator,
}

/// A rule that could not be compiled (a bug in the imported table).
#[derive(Debug, thiserror::Error)]
#[error("rule {id}: {reason}")]
pub(crate) struct RuleError {
    id: u32,
    reason: String,
}

/// An operator ready to run.
enum Matcher {
    Regex(Regex),
    Phrases(AhoCorasick),
    Sqli,
    Xss,
    Contains(&'static [u8]),
}

impl Matcher {
    fn new(operator: Operator) -> Result<Self, String> {
        Ok(match operator {
            Operator::Rx(pattern) => Self::Regex(regex(pattern)?),
            Operator::Pm(phrases) => Self::Phrases(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(phrases)
                    .map_err(|e| e.to_string())?,
            ),
            Operator::DetectSqli => Self::Sqli,
            Operator::DetectXss => Self::Xss,
            Operator::Contains(s) => Self::Contains(s.as_bytes()),
        })
    }

    fn matches(&self, value: &[u8]) -> bool {
        match self {
            Self::Regex(regex) => regex.is_match(value),
            Self::Phrases(phrases) => phrases.is_match(value),
            Self::Sqli => libinjection::sqli(value).is_some(),
            Self::Xss => libinjection::xss(value),
            Self::Contains(s) => value.windows(s.len()).any(|w| w == *s),
        }
    }
}

/// A CRS pattern compiled as PCRE runs it in ModSecurity: on bytes, with
/// ASCII classes (`\w`, `\s`, `.` any byte but newline).
///
/// Rules only ask whether a value matches, so the regex is built for that
/// alone: no capture groups, and only the lazy DFA (with the PikeVM behind
/// it). Without literal prefilters too: extracting them from CRS's large
/// alternations is most of the build time, and a plugin configures under a
/// CPU deadline (100 ms by default), while the values rules read are short.
fn regex(pattern: &str) -> Result<Regex, String> {
    Regex::builder()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .configure(
            meta::Config::new()
                .which_captures(WhichCaptures::None)
                .onepass(false)
                .backtrack(false)
                .dfa(false)
                .auto_prefilter(false)
                .nfa_size_limit(Some(64 << 20)),
        )
        .build(&byte_escapes(pattern))
        .map_err(|e| e.to_string())
}

/// `pattern` with PCRE's `\x{HH}` byte escapes written `\xHH`: the regex
/// crate, without Unicode, refuses the braced form as a class bound.
fn byte_escapes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        let braced = escape
            .strip_prefix("\\x{")
            .and_then(|hex| hex.split_once('}'))
            .filter(|(hex, _)| {
                (1..=2).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit())
            });
        match braced {
            Some((hex, after)) => {
                out.push_str(&format!("\\x{hex:0>2}"));
                rest = after;
            }
            None => {
                // Copy the backslash and the character it escapes.
                let len = escape[1..].chars().next().map_or(1, |c| 1 + c.len_utf8());
                out.push_str(&escape[..len]);
                rest = &escape[len..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// An exclusion ready to run.
struct Excluded {
    target: Target,
    name: NameMatch,
}

enum NameMatch {
    Exact(&'static str),
    Pattern(Regex),
}

impl Excluded {
    fn covers(&self, variable: &Variable) -> bool {
        // `!ARGS:x` drops x's value, `!ARGS_NAMES:x` its name, as in ModSecurity.
        self.target.selects(variable)
            && match &self.name {
                NameMatch::Exact(name) => variable.name.eq_ignore_ascii_case(name.as_bytes()),
                NameMatch::Pattern(regex) => regex.is_match(&variable.name),
            }
    }
}

/// A rule ready to run.
struct Rule {
    def: &'static RuleDef,
    matcher: Matcher,
    exclude: Vec<Excluded>,
    /// Its transformations' stages in the rule set's [`Chains`]: the value
    /// itself, then after each transformation.
    stages: Vec<usize>,
}

/// A rule that matched a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    /// The rule's id.
    pub(crate) id: u32,
    /// Its severity.
    pub(crate) severity: Severity,
    /// What it detects.
    pub(crate) msg: &'static str,
}

/// The rules of one paranoia level, compiled.
pub(crate) struct RuleSet {
    rules: Vec<Rule>,
    chains: Chains,
}

impl RuleSet {
    /// Compiles the rules of `defs` at or below `paranoia` whose id `keep`s.
    pub(crate) fn new(
        defs: &'static [RuleDef],
        paranoia: u8,
        keep: impl Fn(u32) -> bool,
    ) -> Result<Self, RuleError> {
        let mut chains = Chains::default();
        let rules = defs
            .iter()
            .filter(|def| def.paranoia <= paranoia && keep(def.id))
            .map(|def| {
                let error = |reason: String| RuleError { id: def.id, reason };
                let exclude = def
                    .exclude
                    .iter()
                    .map(|exclude| {
                        Ok(match *exclude {
                            Exclude::Exact(target, name) => Excluded {
                                target,
                                name: NameMatch::Exact(name),
                            },
                            Exclude::Pattern(target, pattern) => Excluded {
                                target,
                                name: NameMatch::Pattern(regex(pattern).map_err(error)?),
                            },
                        })
                    })
                    .collect::<Result<_, RuleError>>()?;
                Ok(Rule {
                    def,
                    matcher: Matcher::new(def.operator).map_err(error)?,
                    exclude,
                    stages: chains.intern(def.transforms),
                })
            })
            .collect::<Result<_, RuleError>>()?;
        Ok(Self { rules, chains })
    }

    /// How many rules run.
    pub(crate) fn len(&self) -> usize {
        self.rules.len()
    }

    /// The rules `variables` match, in rule order; each at most once.
    pub(crate) fn evaluate(&self, variables: &[Variable]) -> Vec<Hit> {
        let mut cache = Transformed::new(&self.chains, variables.len());
        self.rules
            .iter()
            .filter(|rule| rule.matches(variables, &mut cache))
            .map(|rule| Hit {
                id: rule.def.id,
                severity: rule.def.severity,
                msg: rule.def.msg,
            })
            .collect()
    }
}

impl Rule {
    fn matches(&self, variables: &[Variable], cache: &mut Transformed) -> bool {
        let def = self.def;
        variables.iter().enumerate().any(|(index, variable)| {
            if !def.targets.iter().any(|t| t.selects(variable))
                || self.exclude.iter().any(|e| e.covers(variable))
            {
                return false;
            }
            let test = |value: &[u8]| self.matcher.matches(value) != def.negated;
            if def.multi_match {
                // Each distinct value once: a stage that changed nothing was tested.
                self.stages.iter().any(|stage| {
                    cache
                        .distinct(index, &variable.value, *stage)
                        .is_some_and(test)
                })
            } else {
                let last = self.stages.last().copied().unwrap_or_default();
                test(cache.get(index, &variable.value, last))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crs::RULES;

    #[test]
    fn every_imported_rule_compiles() {
        let set = RuleSet::new(RULES, 4, |_| true).expect("the table compiles");
        assert_eq!(set.len(), RULES.len());
        assert!(RULES.len() > 150, "{} rules imported", RULES.len());
    }

    #[test]
    fn braced_byte_escapes_are_rewritten_outside_escaped_backslashes() {
        assert_eq!(
            byte_escapes(r"[\x7f-\x{ff}]\\x{41}\x{e2}"),
            r"[\x7f-\xff]\\x{41}\xe2"
        );
        assert!(regex(r"[a\x7f-\x{ff}]").is_ok());
    }

    #[test]
    fn paranoia_levels_and_exclusions_choose_the_rules() {
        let count = |level| {
            RuleSet::new(RULES, level, |_| true)
                .map(|s| s.len())
                .unwrap_or(0)
        };
        assert!(count(1) < count(2) && count(2) < count(3) && count(3) <= count(4));
        let without = RuleSet::new(RULES, 1, |id| id != 942100).map(|s| s.len());
        assert_eq!(without.ok(), Some(count(1) - 1));
    }
}
