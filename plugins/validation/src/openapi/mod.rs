//! An OpenAPI 3.0 or 3.1 description, compiled once: its path templates,
//! each with its operations, and how a request finds its operation.

mod dialect;
mod operation;
mod template;

use std::rc::Rc;

use jsonschema::Registry;
use serde_json::Value;

pub use self::operation::{BodySchema, Location, Operation};
use self::operation::{Compiler, DOCUMENT_URI, METHODS, escape};
use self::template::Template;
use crate::schema::{CompileError, Dialect};

/// A path template and its operations (method in upper case).
struct PathItem {
    template: Template,
    operations: Vec<(String, Rc<Operation>)>,
}

/// A compiled description.
pub struct Api {
    paths: Vec<PathItem>,
    base_path: String,
}

/// What a request's method and path find.
pub enum Lookup {
    /// Its operation, and the path parameters.
    Found(Rc<Operation>, Vec<(String, String)>),
    /// No path template matches.
    NoPath,
    /// A template matches, but has no operation for the method; the ones it has.
    NoMethod(String),
}

impl Api {
    /// Compiles `document`; requests are matched below `base_path`.
    pub fn compile(document: &Value, base_path: &str, formats: bool) -> Result<Self, CompileError> {
        let version = dialect::Version::of(document).map_err(|message| CompileError {
            pointer: "/openapi".to_owned(),
            message,
        })?;
        let document = version.convert(document.clone());
        let registry = Registry::new()
            .draft(version.draft())
            .add(DOCUMENT_URI, document.clone())
            .and_then(|builder| builder.prepare())
            .map_err(|e| CompileError {
                pointer: String::new(),
                message: e.to_string(),
            })?;
        let compiler = Compiler {
            document: &document,
            dialect: Dialect {
                draft: Some(version.draft()),
                formats,
                registry: Some(&registry),
            },
        };
        let Some(paths) = document.get("paths").and_then(Value::as_object) else {
            return Err(CompileError {
                pointer: "/paths".to_owned(),
                message: "must map path templates to their operations".to_owned(),
            });
        };
        let mut items = Vec::new();
        for (text, item) in paths {
            let item_pointer = format!("/paths/{}", escape(text));
            let template = Template::parse(text).map_err(|message| CompileError {
                pointer: item_pointer.clone(),
                message,
            })?;
            let names: Vec<&str> = template.names().collect();
            let shared = item
                .get("parameters")
                .map(|p| (format!("{item_pointer}/parameters"), p));
            let mut operations = Vec::new();
            for method in METHODS {
                let Some(operation) = item.get(method) else {
                    continue;
                };
                let name = format!("{} {text}", method.to_ascii_uppercase());
                let pointer = format!("{item_pointer}/{method}");
                let compiled = Operation::compile(
                    &compiler,
                    name,
                    &pointer,
                    operation,
                    shared.clone(),
                    &names,
                )?;
                operations.push((method.to_ascii_uppercase(), Rc::new(compiled)));
            }
            items.push(PathItem {
                template,
                operations,
            });
        }
        items.sort_by_key(|item| item.template.rank());
        Ok(Self {
            paths: items,
            base_path: base_path.trim_end_matches('/').to_owned(),
        })
    }

    /// The operation for `method` on `path` (without its query); a `HEAD`
    /// with no operation of its own finds the `GET`'s.
    pub fn lookup(&self, method: &str, path: &str) -> Lookup {
        let Some(path) = path
            .strip_prefix(self.base_path.as_str())
            .filter(|p| p.starts_with('/'))
        else {
            return Lookup::NoPath;
        };
        for item in &self.paths {
            let Some(captures) = item.template.matches(path) else {
                continue;
            };
            let find = |m: &str| item.operations.iter().find(|(name, _)| name == m);
            let found = find(method).or_else(|| (method == "HEAD").then(|| find("GET")).flatten());
            return match found {
                Some((_, operation)) => Lookup::Found(operation.clone(), captures),
                None => Lookup::NoMethod(
                    item.operations
                        .iter()
                        .map(|(m, _)| m.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            };
        }
        Lookup::NoPath
    }

    /// How many operations it has.
    pub fn operations(&self) -> usize {
        self.paths.iter().map(|p| p.operations.len()).sum()
    }
}
