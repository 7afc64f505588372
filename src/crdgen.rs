//! `crdgen` and `install-gateway`: the two commands that only move bytes around.

use std::path::Path;

use kube::ResourceExt;

use crate::api;

/// Why a file command failed.
#[derive(Debug, thiserror::Error)]
pub enum FileCommandError {
    #[error("cannot serialise CRD {name}: {message}")]
    Serialize { name: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find this program's own file to copy: {0}")]
    CurrentExe(#[source] std::io::Error),
}

/// The YAML of every CRD: `(file name, content)`, in the order of [`api::crds`].
pub fn crd_files() -> Result<Vec<(String, String)>, FileCommandError> {
    api::crds()
        .into_iter()
        .map(|crd| {
            let name = crd.name_any();
            serde_saphyr::to_string(&crd)
                .map(|yaml| (format!("{name}.yaml"), yaml))
                .map_err(|e| FileCommandError::Serialize {
                    name,
                    message: e.to_string(),
                })
        })
        .collect()
}

/// Print the CRDs as one YAML stream, or write one file each into `out_dir`.
pub fn run(out_dir: Option<&Path>) -> Result<Option<String>, FileCommandError> {
    let files = crd_files()?;
    let Some(dir) = out_dir else {
        return Ok(Some(
            files
                .iter()
                .map(|(_, yaml)| format!("---\n{yaml}"))
                .collect(),
        ));
    };
    for (name, yaml) in files {
        let path = dir.join(name);
        std::fs::write(&path, yaml).map_err(|source| FileCommandError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(None)
}

/// Copy the running binary to `dir/mcp-operator`, executable, for stdio servers' wrapper.
pub fn install_binary(dir: &Path) -> Result<Option<String>, FileCommandError> {
    let source = std::env::current_exe().map_err(FileCommandError::CurrentExe)?;
    let target = dir.join(crate::builders::pod::BINARY_NAME);
    let write_error = |source| FileCommandError::Write {
        path: target.display().to_string(),
        source,
    };
    std::fs::copy(&source, &target).map_err(write_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            .map_err(write_error)?;
    }
    Ok(None)
}

/// The reference of the three kinds (`docs/crds.md`), generated from the CRD schemas: every
/// field with its type, constraints and description, and the CEL rules with their messages.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Custom resource reference\n\n\
         Generated from the CRD schemas (`mcp-operator crdgen`; a test keeps this page in sync).\n\
         API group `mcp-operator.dev`, version `v1alpha1`. Field paths use `[]` for list items and\n\
         `{}` for map values.\n",
    );
    for crd in api::crds() {
        let names = &crd.spec.names;
        let Some(version) = crd.spec.versions.first() else {
            continue;
        };
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or_default();
        out.push_str(&format!("\n## {}\n\n", names.kind));
        out.push_str(&format!(
            "{} scope; plural `{}`{}.\n",
            crd.spec.scope,
            names.plural,
            names
                .short_names
                .as_ref()
                .filter(|s| !s.is_empty())
                .map(|s| format!(", short name `{}`", s.join("`, `")))
                .unwrap_or_default()
        ));
        if let Some(description) = schema.get("description").and_then(|d| d.as_str()) {
            out.push_str(&format!("\n{description}\n"));
        }
        for part in ["spec", "status"] {
            let Some(node) = schema.pointer(&format!("/properties/{part}")) else {
                continue;
            };
            out.push_str(&format!(
                "\n### {}.{part}\n\n| Field | Type | Description |\n|---|---|---|\n",
                names.kind
            ));
            let mut rules = Vec::new();
            fields(node, part, &mut out, &mut rules);
            if !rules.is_empty() {
                out.push_str(
                    "\nValidation rules (CEL, checked by the API server and by `render`/`check`):\n\n",
                );
                for (path, message) in rules {
                    out.push_str(&format!("- `{path}`: {message}\n"));
                }
            }
        }
    }
    out
}

/// One table row per field under `node` (at `path`), depth first; CEL rules collected.
fn fields(
    node: &serde_json::Value,
    path: &str,
    out: &mut String,
    rules: &mut Vec<(String, String)>,
) {
    for rule in node
        .get("x-kubernetes-validations")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        let message = rule
            .get("message")
            .and_then(|m| m.as_str())
            .or_else(|| rule.get("rule").and_then(|r| r.as_str()))
            .unwrap_or_default();
        rules.push((path.to_owned(), message.to_owned()));
    }
    let Some(properties) = node.get("properties").and_then(|p| p.as_object()) else {
        if let Some(items) = node.get("items") {
            fields(items, &format!("{path}[]"), out, rules);
        } else if let Some(values) = node.get("additionalProperties").filter(|a| a.is_object()) {
            fields(values, &format!("{path}{{}}"), out, rules);
        }
        return;
    };
    let required: Vec<&str> = node
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    for (name, field) in properties {
        let field_path = format!("{path}.{name}");
        let mut notes = Vec::new();
        if required.contains(&name.as_str()) {
            notes.push("required".to_owned());
        }
        for (key, label) in [
            ("default", "default"),
            ("minimum", "min"),
            ("maximum", "max"),
            ("minLength", "min length"),
            ("maxLength", "max length"),
            ("minItems", "min items"),
            ("maxItems", "max items"),
            ("pattern", "pattern"),
        ] {
            if let Some(value) = field.get(key) {
                notes.push(format!("{label} `{value}`"));
            }
        }
        if let Some(values) = field.get("enum").and_then(|e| e.as_array()) {
            let values: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
            notes.push(format!("one of {}", values.join(", ")));
        }
        let description = field
            .get("description")
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .replace('\n', " ")
            .replace('|', "\\|");
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; ").replace('|', "\\|"))
        };
        out.push_str(&format!(
            "| `{field_path}` | {} | {description}{notes} |\n",
            type_name(field)
        ));
        fields(field, &field_path, out, rules);
    }
}

fn type_name(field: &serde_json::Value) -> String {
    if field.get("x-kubernetes-int-or-string").is_some() {
        return "int or string".into();
    }
    match field.get("type").and_then(|t| t.as_str()) {
        Some("array") => format!(
            "list of {}",
            field.get("items").map(type_name).unwrap_or_default()
        ),
        Some("object") if field.get("properties").is_none() => {
            match field.get("additionalProperties").filter(|a| a.is_object()) {
                Some(values) => format!("map of {}", type_name(values)),
                None => "object".into(),
            }
        }
        Some(t) => field
            .get("format")
            .and_then(|f| f.as_str())
            .map_or_else(|| t.to_owned(), |f| format!("{t} ({f})")),
        None => "any".into(),
    }
}
