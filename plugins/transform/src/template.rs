//! Templates: values with `${…}` placeholders for what is known about the
//! request (its consumer, a header, a query parameter, a JWT claim, the
//! route, the request id), parsed once at configure time and rendered per
//! request from a [`Vars`] that reads each source at most once.

use serde_json::Value;
use weir_sdk::{Filter, Http};

/// The property jwt-auth leaves the verified claims in.
const JWT_CLAIMS: [&str; 2] = ["weir", "jwt_claims"];
/// The property of the route's name.
const ROUTE: [&str; 1] = ["route_name"];

/// What a placeholder stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    /// `${consumer}`: the consumer's name.
    Consumer,
    /// `${header.NAME}`: the request's header NAME (lower-cased).
    Header(String),
    /// `${query.NAME}`: the request's query parameter NAME (decoded).
    Query(String),
    /// `${jwt.CLAIM}`: the verified JWT's claim CLAIM (strings as they are,
    /// other values as JSON).
    Jwt(String),
    /// `${route}`: the route's name.
    Route,
    /// `${request_id}`: the request's id.
    RequestId,
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed template: text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`: `${name}` is a placeholder, `$${` writes a literal `${`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at..];
            if let Some(escaped) = after.strip_prefix("$${") {
                literal.push_str("${");
                rest = escaped;
            } else if let Some(open) = after.strip_prefix("${") {
                let end = open
                    .find('}')
                    .ok_or_else(|| format!("`{text}`: a `${{` is not closed by `}}`"))?;
                let var = Var::parse(&open[..end]).map_err(|why| format!("`{text}`: {why}"))?;
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Var(var));
                rest = &open[end + 1..];
            } else {
                literal.push('$');
                rest = &after[1..];
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() || parts.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Self { parts })
    }

    /// The template's text for this request; `None` when a placeholder
    /// names something the request does not have.
    pub fn render<F: Filter>(&self, vars: &mut Vars, http: &mut Http<'_, F>) -> Option<String> {
        if let [Part::Text(text)] = self.parts.as_slice() {
            return Some(text.clone());
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(var) => out.push_str(&vars.get(var, http)?),
            }
        }
        Some(out)
    }
}

impl Var {
    fn parse(name: &str) -> Result<Self, String> {
        let named = |prefix: &str| {
            name.strip_prefix(prefix)
                .filter(|rest| !rest.is_empty())
                .map(str::to_owned)
        };
        Ok(match name {
            "consumer" => Self::Consumer,
            "route" => Self::Route,
            "request_id" => Self::RequestId,
            _ => {
                if let Some(header) = named("header.") {
                    Self::Header(header.to_ascii_lowercase())
                } else if let Some(param) = named("query.") {
                    Self::Query(param)
                } else if let Some(claim) = named("jwt.") {
                    Self::Jwt(claim)
                } else {
                    return Err(format!(
                        "unknown placeholder `${{{name}}}` (known: consumer, header.NAME, \
                         query.NAME, jwt.CLAIM, route, request_id)"
                    ));
                }
            }
        })
    }
}

/// What one request's templates read, each source read at most once.
#[derive(Debug, Default)]
pub struct Vars {
    consumer: Option<Option<String>>,
    claims: Option<Option<serde_json::Map<String, Value>>>,
    route: Option<Option<String>>,
}

impl Vars {
    fn get<F: Filter>(&mut self, var: &Var, http: &mut Http<'_, F>) -> Option<String> {
        match var {
            Var::Consumer => self
                .consumer
                .get_or_insert_with(|| http.consumer().ok().flatten().map(|consumer| consumer.name))
                .clone(),
            Var::Header(name) => http.request_header(name).ok().flatten(),
            Var::Query(name) => http.query_param(name).ok().flatten(),
            Var::Jwt(claim) => {
                let claims = self.claims.get_or_insert_with(|| {
                    let bytes = http.property(&JWT_CLAIMS).ok().flatten()?;
                    serde_json::from_slice(&bytes).ok()
                });
                match claims.as_ref()?.get(claim)? {
                    Value::String(text) => Some(text.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                }
            }
            Var::Route => self
                .route
                .get_or_insert_with(|| {
                    let bytes = http.property(&ROUTE).ok().flatten()?;
                    String::from_utf8(bytes).ok()
                })
                .clone(),
            Var::RequestId => http.request_id(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_placeholders() {
        let template = Template::parse("Bearer ${jwt.sub}/${header.X-Tenant}!").expect("parses");
        assert_eq!(
            template.parts,
            [
                Part::Text("Bearer ".into()),
                Part::Var(Var::Jwt("sub".into())),
                Part::Text("/".into()),
                Part::Var(Var::Header("x-tenant".into())),
                Part::Text("!".into()),
            ]
        );
        let literal = Template::parse("costs $5 and $${x}").expect("parses");
        assert_eq!(literal.parts, [Part::Text("costs $5 and ${x}".into())]);
        assert_eq!(
            Template::parse("").expect("empty").parts,
            [Part::Text(String::new())]
        );
    }

    #[test]
    fn refuses_unknown_and_unclosed_placeholders() {
        let error = Template::parse("${user}").expect_err("unknown");
        assert!(error.contains("unknown placeholder `${user}`"), "{error}");
        assert!(Template::parse("${header.}").is_err());
        let error = Template::parse("a ${consumer").expect_err("unclosed");
        assert!(error.contains("not closed"), "{error}");
    }
}
