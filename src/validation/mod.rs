//! Admission of manifests: checks a custom resource exactly as the API server would (CRD schema
//! and CEL rules, see [`schema`]) plus the checks only Rust can make (see [`semantic`]), and
//! turns it into a typed object. Used by `render`/`check` and by the in-process API server.
//! Depends only on [`crate::api`].

pub mod admission;
pub mod schema;
pub mod semantic;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use kube::Resource;
use regex::Regex;
use serde_json::Value;

use crate::api::{self, MCPPolicy, MCPPromptVersion, MCPServer};

use self::schema::{CrdSchema, SchemaCompileError};

/// One problem at one field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldError {
    /// Field path (`spec.egress[0].cidr`); empty for the whole object.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A manifest the operator understands.
#[derive(Clone, Debug, PartialEq)]
pub enum Manifest {
    Server(Box<MCPServer>),
    Policy(Box<MCPPolicy>),
    PromptVersion(Box<MCPPromptVersion>),
    /// A Namespace, read only for its labels (policies select namespaces by label).
    Namespace {
        name: String,
        labels: BTreeMap<String, String>,
    },
}

/// The compiled schemas of the three kinds.
pub struct Admission {
    server: CrdSchema,
    policy: CrdSchema,
    prompt_version: CrdSchema,
}

const NAMESPACE_API_VERSION: &str = "v1";

impl Admission {
    /// Compile the CRD schemas of every kind.
    pub fn new() -> Result<Self, SchemaCompileError> {
        let compile = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
            let kind = crd.spec.names.kind.clone();
            let schema = crd
                .spec
                .versions
                .first()
                .and_then(|v| v.schema.as_ref())
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .map(serde_json::to_value)
                .transpose()
                .map_err(|e| SchemaCompileError {
                    kind: kind.clone(),
                    message: e.to_string(),
                })?
                .ok_or_else(|| SchemaCompileError {
                    kind: kind.clone(),
                    message: "no openAPIV3Schema".into(),
                })?;
            CrdSchema::compile(&kind, &schema)
        };
        use kube::CustomResourceExt;
        Ok(Admission {
            server: compile(MCPServer::crd())?,
            policy: compile(MCPPolicy::crd())?,
            prompt_version: compile(MCPPromptVersion::crd())?,
        })
    }

    /// The CRD schema of `kind`, if it is one of ours.
    pub fn schema_for(&self, kind: &str) -> Option<&CrdSchema> {
        match kind {
            "MCPServer" => Some(&self.server),
            "MCPPolicy" => Some(&self.policy),
            "MCPPromptVersion" => Some(&self.prompt_version),
            _ => None,
        }
    }

    /// Check `object` and return it typed, or every problem found.
    pub fn admit(&self, object: &Value) -> Result<Manifest, Vec<FieldError>> {
        let Value::Object(map) = object else {
            return Err(vec![FieldError::new(
                "",
                format!(
                    "expected a mapping with apiVersion, kind and metadata, got {}",
                    schema_type_name(object)
                ),
            )]);
        };
        let api_version = string_field(map.get("apiVersion"), "apiVersion")?;
        let kind = string_field(map.get("kind"), "kind")?;

        if kind == "Namespace" {
            if api_version != NAMESPACE_API_VERSION {
                return Err(vec![FieldError::new(
                    "apiVersion",
                    format!(
                        "expected {NAMESPACE_API_VERSION:?} for a Namespace, got {api_version:?}"
                    ),
                )]);
            }
            let errors = check_metadata(map.get("metadata"), true);
            if !errors.is_empty() {
                return Err(errors);
            }
            let metadata = map.get("metadata").cloned().unwrap_or_default();
            let name = metadata["name"].as_str().unwrap_or_default().to_string();
            let labels = metadata
                .get("labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .unwrap_or_default();
            return Ok(Manifest::Namespace { name, labels });
        }

        let Some(schema) = self.schema_for(kind) else {
            return Err(vec![FieldError::new(
                "kind",
                format!(
                    "kind {kind:?} is not one the operator reads: expected MCPServer, MCPPolicy or MCPPromptVersion ({}), or Namespace (v1)",
                    api::API_VERSION
                ),
            )]);
        };
        if api_version != api::API_VERSION {
            return Err(vec![FieldError::new(
                "apiVersion",
                format!(
                    "expected {:?} for {kind}, got {api_version:?}",
                    api::API_VERSION
                ),
            )]);
        }

        let mut errors = check_metadata(map.get("metadata"), kind == "MCPServer");
        let mut object = object.clone();
        if let Value::Object(m) = &mut object {
            // The API server ignores status on create when the status subresource is enabled.
            m.remove("status");
        }
        errors.extend(schema.check(&object, None));
        if !errors.is_empty() {
            errors.sort();
            errors.dedup();
            return Err(errors);
        }

        let typed = match kind {
            "MCPServer" => typed::<MCPServer>(object).map(|o| Manifest::Server(Box::new(o))),
            "MCPPolicy" => typed::<MCPPolicy>(object).map(|o| Manifest::Policy(Box::new(o))),
            _ => typed::<MCPPromptVersion>(object).map(|o| Manifest::PromptVersion(Box::new(o))),
        }?;
        let semantic_errors = match &typed {
            Manifest::Server(s) => semantic::check_server(&s.spec),
            Manifest::Policy(p) => semantic::check_policy(&p.spec),
            Manifest::PromptVersion(p) => semantic::check_prompt_version(&p.spec),
            Manifest::Namespace { .. } => Vec::new(),
        };
        if semantic_errors.is_empty() {
            Ok(typed)
        } else {
            Err(semantic_errors)
        }
    }
}

fn typed<K: Resource + serde::de::DeserializeOwned>(object: Value) -> Result<K, Vec<FieldError>> {
    serde_json::from_value(object).map_err(|e| {
        vec![FieldError::new(
            "",
            format!(
                "does not match the {} type: {e}",
                std::any::type_name::<K>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("resource")
            ),
        )]
    })
}

fn schema_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "an empty document",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn string_field<'a>(value: Option<&'a Value>, field: &str) -> Result<&'a str, Vec<FieldError>> {
    match value {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(other) => Err(vec![FieldError::new(
            field,
            format!(
                "expected a non-empty string, got {}",
                schema_type_name(other)
            ),
        )]),
        None => Err(vec![FieldError::new(field, "required field is missing")]),
    }
}

static DNS_SUBDOMAIN: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").ok()
});
static DNS_LABEL: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").ok());
static LABEL_NAME: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").ok());

fn matches(re: &LazyLock<Option<Regex>>, text: &str) -> bool {
    re.as_ref().is_some_and(|r| r.is_match(text))
}

/// `metadata` checks the API server makes on every object.
fn check_metadata(metadata: Option<&Value>, name_is_dns_label: bool) -> Vec<FieldError> {
    let Some(metadata) = metadata else {
        return vec![FieldError::new(
            "metadata",
            "required field is missing: every object needs metadata.name",
        )];
    };
    let Value::Object(metadata) = metadata else {
        return vec![FieldError::new(
            "metadata",
            format!("expected a mapping, got {}", schema_type_name(metadata)),
        )];
    };
    let mut errors = Vec::new();
    match metadata.get("name") {
        None => errors.push(FieldError::new(
            "metadata.name",
            "required field is missing",
        )),
        Some(Value::String(name)) => {
            let (ok, expected) = if name_is_dns_label {
                (
                    matches(&DNS_LABEL, name) && name.len() <= 63,
                    "a DNS label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
                )
            } else {
                (
                    matches(&DNS_SUBDOMAIN, name) && name.len() <= 253,
                    "a DNS subdomain: at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
                )
            };
            if !ok {
                errors.push(FieldError::new(
                    "metadata.name",
                    format!("{name:?} is not {expected}"),
                ));
            }
        }
        Some(other) => errors.push(FieldError::new(
            "metadata.name",
            format!("expected a string, got {}", schema_type_name(other)),
        )),
    }
    match metadata.get("namespace") {
        None => {}
        Some(Value::String(ns)) if matches(&DNS_LABEL, ns) && ns.len() <= 63 => {}
        Some(other) => errors.push(FieldError::new(
            "metadata.namespace",
            format!(
                "expected a DNS label (at most 63 lowercase letters, digits and '-'), got {other}"
            ),
        )),
    }
    for field in ["labels", "annotations"] {
        let path = format!("metadata.{field}");
        match metadata.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(entries)) => {
                for (key, value) in entries {
                    let entry_path = format!("{path}.{key}");
                    if !valid_qualified_name(key) {
                        errors.push(FieldError::new(
                            &entry_path,
                            "invalid key: expected an optional DNS-subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
                        ));
                    }
                    match value {
                        Value::String(v)
                            if field == "labels"
                                && !(v.is_empty()
                                    || (v.len() <= 63 && matches(&LABEL_NAME, v))) =>
                        {
                            errors.push(FieldError::new(&entry_path, format!("label value {v:?} is invalid: expected at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")));
                        }
                        Value::String(_) => {}
                        other => errors.push(FieldError::new(
                            &entry_path,
                            format!(
                                "expected a string, got {} (quote it)",
                                schema_type_name(other)
                            ),
                        )),
                    }
                }
            }
            Some(other) => errors.push(FieldError::new(
                &path,
                format!(
                    "expected a mapping of strings, got {}",
                    schema_type_name(other)
                ),
            )),
        }
    }
    errors
}

fn valid_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && matches(&DNS_SUBDOMAIN, p));
    prefix_ok && name.len() <= 63 && matches(&LABEL_NAME, name)
}
