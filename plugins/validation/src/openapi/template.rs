//! OpenAPI path templates (`/pets/{petId}`, `/files/{name}.json`) and how
//! a request path matches one.

use percent_encoding::percent_decode_str;

/// One `/`-separated segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matched as written.
    Literal(String),
    /// `prefix{name}suffix`: the rest, non-empty, is parameter `name`.
    Variable {
        prefix: String,
        name: String,
        suffix: String,
    },
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    /// Parses `text`; at most one `{variable}` per segment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("`{text}` does not start with /"));
        };
        let segments = rest
            .split('/')
            .map(|segment| match segment.split_once('{') {
                None if segment.contains('}') => Err(format!("`{text}` has a stray }}")),
                None => Ok(Segment::Literal(segment.to_owned())),
                Some((prefix, tail)) => {
                    let (name, suffix) = tail
                        .split_once('}')
                        .ok_or_else(|| format!("`{text}` has an unclosed {{"))?;
                    if name.is_empty() || suffix.contains(['{', '}']) {
                        return Err(format!(
                            "`{text}`: one named {{parameter}} per segment is supported"
                        ));
                    }
                    Ok(Segment::Variable {
                        prefix: prefix.to_owned(),
                        name: name.to_owned(),
                        suffix: suffix.to_owned(),
                    })
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { segments })
    }

    /// The names of its parameters.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Variable { name, .. } => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Orders templates so that a literal segment is tried before a
    /// variable one at the same place (`/pets/mine` before `/pets/{id}`).
    pub fn rank(&self) -> Vec<u8> {
        self.segments
            .iter()
            .map(|s| u8::from(matches!(s, Segment::Variable { .. })))
            .collect()
    }

    /// The parameters (name, percent-decoded value) when `path` (without
    /// its query) matches.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let rest = path.strip_prefix('/')?;
        let mut captures = Vec::new();
        let mut parts = rest.split('/');
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(literal) => {
                    if part != literal {
                        return None;
                    }
                }
                Segment::Variable {
                    prefix,
                    name,
                    suffix,
                } => {
                    let value = part.strip_prefix(prefix.as_str())?;
                    let value = value.strip_suffix(suffix.as_str())?;
                    if value.is_empty() {
                        return None;
                    }
                    let decoded = percent_decode_str(value).decode_utf8_lossy();
                    captures.push((name.clone(), decoded.into_owned()));
                }
            }
        }
        parts.next().is_none().then_some(captures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(template).expect("parses").matches(path)
    }

    #[test]
    fn variables_capture_whole_segments_or_between_a_prefix_and_suffix() {
        assert_eq!(
            capture("/pets/{id}", "/pets/a%20b"),
            Some(vec![("id".into(), "a b".into())])
        );
        assert_eq!(capture("/pets/{id}", "/pets/"), None);
        assert_eq!(capture("/pets/{id}", "/pets/1/toys"), None);
        assert_eq!(capture("/pets/{id}", "/pets"), None);
        assert_eq!(
            capture("/files/{name}.json", "/files/report.json"),
            Some(vec![("name".into(), "report".into())])
        );
        assert_eq!(capture("/files/{name}.json", "/files/report.xml"), None);
        assert_eq!(capture("/pets", "/pets"), Some(vec![]));
        assert_eq!(capture("/pets", "/pets/"), None);
    }

    #[test]
    fn literal_segments_rank_before_variables_and_bad_templates_are_refused() {
        let mine = Template::parse("/pets/mine").expect("parses");
        let any = Template::parse("/pets/{id}").expect("parses");
        assert!(mine.rank() < any.rank());
        assert!(Template::parse("pets").is_err());
        assert!(Template::parse("/pets/{id").is_err());
        assert!(Template::parse("/pets/{a}{b}").is_err());
        assert_eq!(any.names().collect::<Vec<_>>(), ["id"]);
    }
}
