//! Validating a custom resource the way the API server does on create: the CRD's structural
//! OpenAPI schema (types, enums, ranges, patterns, required fields, unknown fields refused as
//! with kubectl's default strict field validation) and then its CEL rules.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use kube::core::cel::{CompiledSchema, Validator as CelValidator, compile_schema};
use serde_json::{Map, Value};

use super::FieldError;

/// The compiled checks of one CRD version.
pub struct CrdSchema {
    structural: jsonschema::Validator,
    cel: CompiledSchema,
    /// The OpenAPI schema, for the list rules JSON Schema cannot say (`x-kubernetes-list-type`).
    openapi: Value,
}

/// A CRD schema that cannot be compiled: a bug in the crate, reported rather than panicking.
#[derive(Debug, thiserror::Error)]
#[error("the generated CRD schema of {kind} does not compile: {message}")]
pub struct SchemaCompileError {
    pub kind: String,
    pub message: String,
}

impl CrdSchema {
    /// Compile the openAPIV3Schema `schema` of CRD kind `kind`.
    pub fn compile(kind: &str, schema: &Value) -> Result<Self, SchemaCompileError> {
        let mut json_schema = to_json_schema(schema);
        // The API server checks these itself rather than through the CRD schema.
        if let Some(Value::Object(properties)) = json_schema.get_mut("properties") {
            properties.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
            properties.insert("kind".into(), serde_json::json!({"type": "string"}));
            properties.insert("metadata".into(), serde_json::json!({"type": "object"}));
        }
        let structural = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .should_validate_formats(false)
            .build(&json_schema)
            .map_err(|e| SchemaCompileError {
                kind: kind.into(),
                message: e.to_string(),
            })?;
        let cel = compile_schema(schema);
        if cel.has_errors() {
            let message = cel
                .compilation_errors()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(SchemaCompileError {
                kind: kind.into(),
                message,
            });
        }
        Ok(CrdSchema {
            structural,
            cel,
            openapi: schema.clone(),
        })
    }

    /// Fill in what the API server fills in before it validates and stores a custom resource:
    /// `null` where the schema is not `nullable` is dropped, then every absent property with a
    /// `default` gets it, recursively (properties, list items, map values).
    pub fn apply_defaults(&self, object: &mut Value) {
        apply_defaults(&self.openapi, object);
    }

    /// Every problem with `object` (without `status`, which the API server ignores on create).
    /// CEL rules run only once the structure is right, as their inputs are typed.
    pub fn check(&self, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errors: Vec<FieldError> = self
            .structural
            .iter_errors(object)
            .map(|e| describe(&e))
            .collect();
        duplicate_list_keys(&self.openapi, object, "", &mut errors);
        if errors.is_empty()
            && let Err(cel_errors) = CelValidator::new().validate_compiled(&self.cel, object, old)
        {
            errors.extend(cel_errors.iter().map(|e| FieldError {
                path: e.field_path.clone(),
                message: e.message.clone(),
            }));
        }
        errors.sort();
        errors.dedup();
        errors
    }
}

/// Structural defaulting of `value` by `schema` (apiextensions-apiserver's order: prune
/// non-nullable nulls, then default absent fields, then descend).
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(fields) => {
            if let Some(Value::Object(properties)) = schema.get("properties") {
                for (name, property) in properties {
                    let nullable = property.get("nullable") == Some(&Value::Bool(true));
                    if fields.get(name) == Some(&Value::Null) && !nullable {
                        fields.remove(name);
                    }
                    if !fields.contains_key(name)
                        && let Some(default) = property.get("default")
                    {
                        fields.insert(name.clone(), default.clone());
                    }
                    if let Some(field) = fields.get_mut(name) {
                        apply_defaults(property, field);
                    }
                }
            } else if let Some(values @ Value::Object(_)) = schema.get("additionalProperties") {
                for field in fields.values_mut() {
                    apply_defaults(values, field);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// Items of a list declared `x-kubernetes-list-type: map` must differ in their
/// `x-kubernetes-list-map-keys`, and those of a `set` must differ: the API server refuses a
/// duplicate with "Duplicate value".
fn duplicate_list_keys(schema: &Value, value: &Value, path: &str, out: &mut Vec<FieldError>) {
    match value {
        Value::Object(members) => {
            for (name, member) in members {
                let sub = schema
                    .pointer(&format!(
                        "/properties/{}",
                        name.replace('~', "~0").replace('/', "~1")
                    ))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                if let Some(sub) = sub {
                    let child = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}.{name}")
                    };
                    duplicate_list_keys(sub, member, &child, out);
                }
            }
        }
        Value::Array(items) => {
            let keys: Option<Vec<&str>> =
                match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("map") => schema
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|k| k.iter().filter_map(Value::as_str).collect()),
                    Some("set") => Some(Vec::new()),
                    _ => None,
                };
            if let Some(keys) = keys {
                let mut seen: Vec<Value> = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    let identity = if keys.is_empty() {
                        item.clone()
                    } else {
                        Value::Object(
                            keys.iter()
                                .filter_map(|k| Some(((*k).to_owned(), item.get(*k)?.clone())))
                                .collect(),
                        )
                    };
                    if seen.contains(&identity) {
                        let rule = if keys.is_empty() {
                            "items must be unique".to_owned()
                        } else {
                            format!("each item's {} must be unique", keys.join(" and "))
                        };
                        out.push(FieldError::new(
                            format!("{path}[{index}]"),
                            format!("Duplicate value: {identity}: {rule}"),
                        ));
                    } else {
                        seen.push(identity);
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    duplicate_list_keys(item_schema, item, &format!("{path}[{index}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Turn an OpenAPI v3 structural schema into JSON Schema draft 7: `nullable` becomes a `null`
/// type, int-or-string becomes a type union, and objects with declared properties refuse
/// undeclared ones unless they preserve unknown fields.
fn to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: Map<String, Value> = map
                .iter()
                .map(|(k, v)| {
                    let converted = match k.as_str() {
                        "properties" | "definitions" => match v {
                            Value::Object(props) => Value::Object(
                                props
                                    .iter()
                                    .map(|(pk, pv)| (pk.clone(), to_json_schema(pv)))
                                    .collect(),
                            ),
                            other => other.clone(),
                        },
                        "items" | "additionalProperties" | "not" => to_json_schema(v),
                        "allOf" | "anyOf" | "oneOf" => match v {
                            Value::Array(items) => {
                                Value::Array(items.iter().map(to_json_schema).collect())
                            }
                            other => other.clone(),
                        },
                        _ => v.clone(),
                    };
                    (k.clone(), converted)
                })
                .collect();
            let nullable = out.remove("nullable") == Some(Value::Bool(true));
            if out.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                && !out.contains_key("type")
            {
                out.insert("type".into(), Value::from(vec!["integer", "string"]));
            }
            if nullable {
                if let Some(Value::String(t)) = out.get("type").cloned() {
                    out.insert("type".into(), Value::from(vec![t, "null".to_string()]));
                }
                if let Some(Value::Array(options)) = out.get_mut("enum") {
                    options.push(Value::Null);
                }
            }
            let preserves =
                out.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if out.contains_key("properties")
                && !out.contains_key("additionalProperties")
                && !preserves
            {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// `/spec/egress/0/cidr` → `spec.egress[0].cidr`.
pub fn pointer_to_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment);
        }
    }
    path
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn describe(error: &jsonschema::ValidationError<'_>) -> FieldError {
    let path = pointer_to_path(error.instance_path().as_str());
    let instance = error.instance();
    let join = |base: &str, child: &str| {
        if base.is_empty() {
            child.to_string()
        } else {
            format!("{base}.{child}")
        }
    };
    let (path, message) = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let field = unexpected.join(", ");
            (
                join(&path, &field),
                "unknown field: remove it or check its spelling (fields are camelCase)".to_string(),
            )
        }
        ValidationErrorKind::Required { property } => {
            let field = property.as_str().unwrap_or_default();
            (join(&path, field), "required field is missing".to_string())
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => t.to_string(),
                // `null` is allowed only where a field may be omitted: not worth suggesting.
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.to_string())
                    .filter(|t| t != "null")
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            (
                path,
                format!(
                    "expected {expected}, got {} {}",
                    json_type_name(instance),
                    short(instance)
                ),
            )
        }
        ValidationErrorKind::Enum { options } => {
            let allowed = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|v| !v.is_null())
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            (
                path,
                format!("expected one of {allowed}, got {}", short(instance)),
            )
        }
        ValidationErrorKind::Minimum { limit } => (
            path,
            format!(
                "expected at least {}, got {}",
                number(limit),
                short(instance)
            ),
        ),
        ValidationErrorKind::Maximum { limit } => (
            path,
            format!(
                "expected at most {}, got {}",
                number(limit),
                short(instance)
            ),
        ),
        ValidationErrorKind::MinLength { limit } => (
            path,
            format!(
                "expected at least {limit} characters, got {}",
                short(instance)
            ),
        ),
        ValidationErrorKind::MaxLength { limit } => {
            (path, format!("expected at most {limit} characters"))
        }
        ValidationErrorKind::MinItems { limit } => {
            (path, format!("expected at least {limit} entries"))
        }
        ValidationErrorKind::MaxItems { limit } => {
            (path, format!("expected at most {limit} entries"))
        }
        ValidationErrorKind::Pattern { pattern } => (
            path,
            format!(
                "{} does not match the expected pattern {pattern}",
                short(instance)
            ),
        ),
        _ => (path, error.to_string()),
    };
    FieldError { path, message }
}

/// A limit as written (`1` rather than `1.0`).
fn number(limit: &Value) -> String {
    match limit.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{}", f as i64),
        _ => limit.to_string(),
    }
}

/// A value for a message, shortened.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(57).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn defaults_fill_absent_fields_and_drop_non_nullable_nulls() {
        let schema = serde_json::json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "enforcement": {"type": "string", "default": "Audit"},
                "tools": {"type": "object", "nullable": true, "properties": {
                    "scan": {"type": "boolean", "default": true}}},
                "rules": {"type": "array", "items": {"type": "object", "properties": {
                    "action": {"type": "string", "default": "Allow"}}}},
                "port": {"type": "integer", "default": 8080}}}}});
        let mut object = serde_json::json!({"spec": {"tools": {}, "rules": [{}, {"action": "Deny"}],
            "port": null, "enforcement": "Enforce"}});
        apply_defaults(&schema, &mut object);
        assert_eq!(
            object,
            serde_json::json!({"spec": {"tools": {"scan": true}, "rules": [{"action": "Allow"}, {"action": "Deny"}],
                "port": 8080, "enforcement": "Enforce"}})
        );
        let mut nullable = serde_json::json!({"spec": {"tools": null}});
        apply_defaults(&schema, &mut nullable);
        assert_eq!(
            nullable["spec"]["tools"],
            Value::Null,
            "a nullable null stays"
        );
    }

    use super::*;

    #[test]
    fn pointers_become_kubernetes_paths() {
        assert_eq!(
            pointer_to_path("/spec/egress/0/cidr"),
            "spec.egress[0].cidr"
        );
        assert_eq!(pointer_to_path(""), "");
        assert_eq!(
            pointer_to_path("/metadata/labels/a~1b"),
            "metadata.labels.a/b"
        );
    }

    #[test]
    fn nullable_and_int_or_string_translate() {
        let s = serde_json::json!({
            "type": "object",
            "properties": {
                "a": {"type": "string", "nullable": true},
                "q": {"x-kubernetes-int-or-string": true}
            }
        });
        let out = to_json_schema(&s);
        assert_eq!(
            out["properties"]["a"]["type"],
            serde_json::json!(["string", "null"])
        );
        assert_eq!(
            out["properties"]["q"]["type"],
            serde_json::json!(["integer", "string"])
        );
        assert_eq!(out["additionalProperties"], serde_json::json!(false));
    }
}
