//! A JSON Schema compiled once (at configure) and the violations of an
//! instance against it.

use jsonschema::{Draft, Registry, Validator};
use serde_json::Value;

use crate::violation::{Place, Report};

/// A schema that does not compile: where in it, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// A JSON pointer into the schema; empty for the whole.
    pub pointer: String,
    /// Why.
    pub message: String,
}

/// A compiled schema.
pub struct Schema {
    validator: Validator,
}

/// How schemas are compiled: their draft and whether `format` asserts.
#[derive(Clone, Copy)]
pub struct Dialect<'r> {
    /// The draft; `None` reads `$schema` (2020-12 when there is none).
    pub draft: Option<Draft>,
    /// Whether `format` is checked (`email`, `date-time`, `uuid`, …).
    pub formats: bool,
    /// Where `$ref`s to other documents resolve (an OpenAPI description).
    pub registry: Option<&'r Registry<'r>>,
}

impl Schema {
    /// Compiles `schema`; `$ref`s resolve only inside it (or the registry).
    pub fn compile(schema: &Value, dialect: Dialect<'_>) -> Result<Self, CompileError> {
        let mut options = jsonschema::options()
            .offline()
            .should_validate_formats(dialect.formats);
        if let Some(draft) = dialect.draft {
            options = options.with_draft(draft);
        }
        if let Some(registry) = dialect.registry {
            options = options.with_registry(registry);
        }
        let validator = options.build(schema).map_err(|error| CompileError {
            pointer: error.instance_path().as_str().to_owned(),
            message: error.to_string(),
        })?;
        Ok(Self { validator })
    }

    /// Adds the violations of `instance` to `report`, ordered by pointer
    /// (none when it is valid, which is checked first without collecting
    /// errors).
    pub fn check(&self, instance: &Value, place: Place, report: &mut Report) {
        if self.validator.is_valid(instance) {
            return;
        }
        let start = report.len();
        for error in self.validator.iter_errors(instance) {
            let pointer = error.instance_path().as_str().to_owned();
            if !report.add(place, pointer, &error.to_string()) {
                break;
            }
        }
        report.sort_from(start);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const PLAIN: Dialect<'static> = Dialect {
        draft: None,
        formats: true,
        registry: None,
    };

    #[test]
    fn lists_every_violation_with_its_pointer() {
        let schema = Schema::compile(
            &json!({"type": "object", "required": ["name"],
                "properties": {"age": {"type": "integer", "minimum": 0},
                    "tags": {"type": "array", "items": {"type": "string"}}}}),
            PLAIN,
        )
        .expect("compiles");
        let mut report = Report::new(10);
        schema.check(
            &json!({"age": -1, "tags": ["a", 2]}),
            Place::Body,
            &mut report,
        );
        let found: Vec<(String, String)> = report
            .violations()
            .iter()
            .map(|v| (v.pointer.clone(), v.message.clone()))
            .collect();
        assert_eq!(
            found,
            [
                ("".into(), "\"name\" is a required property".into()),
                ("/age".into(), "-1 is less than the minimum of 0".into()),
                ("/tags/1".into(), "2 is not of type \"string\"".into()),
            ]
        );
    }

    #[test]
    fn bad_and_remote_schemas_do_not_compile() {
        let error = Schema::compile(&json!({"properties": {"a": {"type": "objec"}}}), PLAIN)
            .err()
            .expect("refused");
        assert_eq!(error.pointer, "/properties/a/type");
        let error = Schema::compile(&json!({"$ref": "https://example.com/s.json"}), PLAIN)
            .err()
            .expect("no remote refs");
        assert!(
            error.message.contains("https://example.com/s.json"),
            "{}",
            error.message
        );
    }
}
