//! The generated CRDs: in sync with `crds/`, valid and structural, fully described, and their
//! CEL rules compile, stay within the API server's cost budget and do what they say.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use kube::CustomResourceExt;
use kube::core::cel::{ScopeContext, Validator, analyze_rule, compile_schema};
use mcp_operator::api::{self, MCPPolicy, MCPPromptVersion, MCPServer};
use serde_json::{Value, json};

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

/// Visit every schema node with its path.
fn walk<'a>(node: &'a Value, path: String, visit: &mut dyn FnMut(&str, &'a Value)) {
    visit(&path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(child, format!("{path}.{name}"), visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(items, format!("{path}[]"), visit);
    }
    if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object()) {
        walk(additional, format!("{path}{{}}"), visit);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        for (i, branch) in node
            .get(junctor)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            walk(branch, format!("{path}<{junctor}{i}>"), visit);
        }
    }
}

#[test]
fn crds_folder_matches_crdgen() {
    let files = mcp_operator::crdgen::crd_files().unwrap();
    assert_eq!(files.len(), 3);
    for (name, yaml) in &files {
        let on_disk = std::fs::read_to_string(common::repo().join("crds").join(name))
            .unwrap_or_else(|e| {
                panic!("crds/{name}: {e}; run `cargo run -- crdgen --out-dir crds`")
            });
        assert_eq!(
            &on_disk, yaml,
            "crds/{name} drifted from the types: run `cargo run -- crdgen --out-dir crds`"
        );
    }
    let listed: Vec<_> = std::fs::read_dir(common::repo().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        listed.len(),
        files.len(),
        "crds/ holds files crdgen does not produce: {listed:?}"
    );

    let printed = common::stdout_of(&common::run(&["crdgen"]));
    let expected: String = files
        .iter()
        .map(|(_, yaml)| format!("---\n{yaml}"))
        .collect();
    assert_eq!(
        printed, expected,
        "crdgen prints exactly the files of crds/"
    );
}

#[test]
fn every_property_has_a_description() {
    let mut counted = 0;
    let mut missing = Vec::new();
    for crd in api::crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&crd);
        walk(&schema, kind.clone(), &mut |path, node| {
            if let Some(props) = node.get("properties").and_then(Value::as_object) {
                for (name, child) in props {
                    counted += 1;
                    let described = child
                        .get("description")
                        .and_then(Value::as_str)
                        .is_some_and(|d| !d.trim().is_empty());
                    if !described {
                        missing.push(format!("{path}.{name}"));
                    }
                }
            }
        });
    }
    assert!(
        counted > 150,
        "expected a rich schema, counted only {counted} properties"
    );
    assert!(
        missing.is_empty(),
        "{} of {counted} properties have no description: {missing:#?}",
        missing.len()
    );
}

#[test]
fn schemas_are_structural() {
    for crd in api::crds() {
        assert_eq!(crd.api_version_str(), "apiextensions.k8s.io/v1");
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&crd);
        let mut problems = Vec::new();
        walk(&schema, kind, &mut |path, node| {
            let typed = node.get("type").and_then(Value::as_str).is_some()
                || node.get("x-kubernetes-int-or-string") == Some(&json!(true))
                || node.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
            let in_junctor = path.contains("<");
            if !typed && !in_junctor {
                problems.push(format!("{path}: no type"));
            }
            if node.get("$ref").is_some() {
                problems.push(format!("{path}: $ref is not allowed"));
            }
            if node.get("properties").is_some() && node.get("additionalProperties").is_some() {
                problems.push(format!(
                    "{path}: properties and additionalProperties together"
                ));
            }
            if node.get("additionalProperties") == Some(&json!(false)) {
                problems.push(format!(
                    "{path}: additionalProperties: false is not allowed"
                ));
            }
            if in_junctor {
                for forbidden in [
                    "description",
                    "type",
                    "default",
                    "additionalProperties",
                    "nullable",
                ] {
                    if node.get(forbidden).is_some() {
                        problems.push(format!("{path}: {forbidden} inside a logical junctor"));
                    }
                }
            }
        });
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

trait ApiVersionStr {
    fn api_version_str(&self) -> String;
}
impl ApiVersionStr
    for k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition
{
    fn api_version_str(&self) -> String {
        let value = serde_json::to_value(self).unwrap();
        value["apiVersion"].as_str().unwrap().to_string()
    }
}

#[test]
fn crds_pass_the_official_kubernetes_schema() {
    let files: Vec<_> = mcp_operator::crdgen::crd_files()
        .unwrap()
        .into_iter()
        .map(|(name, _)| common::repo().join("crds").join(name))
        .collect();
    let text = common::kubernetes_validate(&files);
    assert_eq!(
        text.matches("passed for resource customresourcedefinition")
            .count(),
        3,
        "{text}"
    );
}

#[test]
fn cel_rules_compile_and_fit_the_cost_budget() {
    let mut rules = 0;
    for crd in api::crds() {
        let schema = schema_of(&crd);
        assert!(
            !compile_schema(&schema).has_errors(),
            "{}: CEL compile errors",
            crd.spec.names.kind
        );
        walk(&schema, crd.spec.names.kind.clone(), &mut |path, node| {
            let Some(list) = node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
            else {
                return;
            };
            let compiled = compile_schema(node);
            for rule in list {
                rules += 1;
                let text = rule["rule"].as_str().unwrap();
                assert!(
                    rule.get("message").is_some(),
                    "{path}: rule {text:?} has no message for the user"
                );
                let warnings = analyze_rule(text, &compiled, ScopeContext::CrdValidation);
                assert!(warnings.is_empty(), "{path}: {text:?}: {warnings:?}");
            }
        });
    }
    assert!(rules >= 15, "expected at least 15 CEL rules, found {rules}");
}

#[test]
fn names_subresources_and_columns() {
    for crd in api::crds() {
        let names = &crd.spec.names;
        assert_eq!(
            names.categories.as_deref(),
            Some(&["mcp".to_string()][..]),
            "{}: category mcp",
            names.kind
        );
        assert!(
            names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
            "{}: short name",
            names.kind
        );
        let version = &crd.spec.versions[0];
        assert!(
            version.subresources.as_ref().unwrap().status.is_some(),
            "{}: status subresource",
            names.kind
        );
    }
    let server = MCPServer::crd();
    let version = &server.spec.versions[0];
    let scale = version
        .subresources
        .as_ref()
        .unwrap()
        .scale
        .as_ref()
        .expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    let columns: Vec<_> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        ["Ready", "Replicas", "Compliance", "Endpoint", "Age"]
    );
    assert_eq!(MCPPolicy::crd().spec.scope, "Cluster");
    assert_eq!(MCPPromptVersion::crd().spec.scope, "Namespaced");
}

fn cel_errors(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    object: Value,
    old: Option<Value>,
) -> Vec<String> {
    let schema = schema_of(crd);
    match Validator::new().validate(&schema, &object, old.as_ref()) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

fn server(spec: Value) -> Value {
    json!({"apiVersion": api::API_VERSION, "kind": "MCPServer", "metadata": {"name": "s", "namespace": "n"}, "spec": spec})
}

#[test]
fn server_cel_rules() {
    let crd = MCPServer::crd();
    let ok = cel_errors(&crd, server(json!({"image": "i", "replicas": 2})), None);
    assert!(ok.is_empty(), "{ok:?}");
    let cases = [
        (
            json!({"image": "i", "transport": "stdio"}),
            "spec.command is required",
        ),
        (
            json!({"image": "i", "transport": "stdio", "command": ["x"], "port": 80}),
            "spec.port has no meaning",
        ),
        (
            json!({"image": "i", "transport": "stdio", "command": ["x"], "path": "/m"}),
            "spec.path has no meaning",
        ),
        (
            json!({"image": "i", "replicas": 2, "autoscaling": {"maxReplicas": 3}}),
            "either spec.replicas or spec.autoscaling",
        ),
        (
            json!({"image": "i", "autoscaling": {"minReplicas": 4, "maxReplicas": 3}}),
            "minReplicas must not exceed",
        ),
        (
            json!({"image": "i", "egress": [{"cidr": "10.0.0.0/33", "ports": [{"port": 443}]}]}),
            "must be a CIDR",
        ),
        (
            json!({"image": "i", "ingress": [{}]}),
            "needs namespaceSelector, podSelector",
        ),
        (
            json!({"image": "i", "authentication": {"issuer": "http://idp"}}),
            "must be an https URL",
        ),
    ];
    for (spec, expected) in cases {
        let errors = cel_errors(&crd, server(spec.clone()), None);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{spec}: expected {expected:?}, got {errors:?}"
        );
    }
    let bad_name = json!({"apiVersion": api::API_VERSION, "kind": "MCPServer", "metadata": {"name": "9lives", "namespace": "n"}, "spec": {"image": "i"}});
    assert!(
        cel_errors(&crd, bad_name, None)
            .iter()
            .any(|e| e.contains("DNS-1035"))
    );
}

fn prompt(spec: Value) -> Value {
    json!({"apiVersion": api::API_VERSION, "kind": "MCPPromptVersion", "metadata": {"name": "p", "namespace": "n"}, "spec": spec})
}

#[test]
fn prompt_version_cel_rules() {
    let crd = MCPPromptVersion::crd();
    let base = json!({"prompt": "triage", "version": "1.2.0", "messages": [{"role": "user", "text": "hi"}]});
    assert!(cel_errors(&crd, prompt(base.clone()), None).is_empty());

    for bad in ["1.2", "v1.2.0", "01.2.0", "1.2.0-"] {
        let mut spec = base.clone();
        spec["version"] = json!(bad);
        let errors = cel_errors(&crd, prompt(spec), None);
        assert!(
            errors.iter().any(|e| e.contains("semantic version")),
            "{bad}: {errors:?}"
        );
    }
    let mut both = base.clone();
    both["messages"] =
        json!([{"role": "user", "text": "a", "resource": {"uri": "x", "text": "b"}}]);
    assert!(
        cel_errors(&crd, prompt(both), None)
            .iter()
            .any(|e| e.contains("either text or resource"))
    );

    // Updates: content is immutable, lifecycle moves forward only.
    let mut edited = base.clone();
    edited["messages"] = json!([{"role": "user", "text": "changed"}]);
    let errors = cel_errors(&crd, prompt(edited), Some(prompt(base.clone())));
    assert!(errors.iter().any(|e| e.contains("immutable")), "{errors:?}");

    let mut described = base.clone();
    described["description"] = json!("new");
    assert!(
        cel_errors(&crd, prompt(described), Some(prompt(base.clone())))
            .iter()
            .any(|e| e.contains("immutable"))
    );

    let mut deprecated = base.clone();
    deprecated["lifecycle"] = json!("Deprecated");
    assert!(
        cel_errors(&crd, prompt(deprecated.clone()), Some(prompt(base.clone()))).is_empty(),
        "Active -> Deprecated is allowed"
    );
    let back = cel_errors(&crd, prompt(base.clone()), Some(prompt(deprecated)));
    assert!(
        back.iter().any(|e| e.contains("only moves forward")),
        "{back:?}"
    );
}

#[test]
fn policy_cel_rules() {
    let crd = MCPPolicy::crd();
    let policy = |spec: Value| json!({"apiVersion": api::API_VERSION, "kind": "MCPPolicy", "metadata": {"name": "p"}, "spec": spec});
    assert!(
        cel_errors(
            &crd,
            policy(json!({"network": {"allowedEgress": ["10.0.0.0/8"]}})),
            None
        )
        .is_empty()
    );
    assert!(
        cel_errors(
            &crd,
            policy(json!({"network": {"allowedEgress": ["ten"]}})),
            None
        )
        .iter()
        .any(|e| e.contains("CIDR"))
    );
    assert!(
        cel_errors(
            &crd,
            policy(json!({"workload": {"minReplicas": 3, "maxReplicas": 2}})),
            None
        )
        .iter()
        .any(|e| e.contains("must not exceed"))
    );
}

#[test]
fn the_resource_reference_page_is_in_sync() {
    let expected = mcp_operator::crdgen::reference_markdown();
    common::assert_page_in_sync(
        "docs/crds.md",
        &expected,
        "cargo test --test crds the_resource_reference_page_is_in_sync",
    );
    for field in [
        "`spec.toolApprovals[].sha256`",
        "`status.tools[].state`",
        "`spec.lifecycle`",
        "`spec.overrides[].reason`",
    ] {
        assert!(expected.contains(field), "{field} is documented");
    }
}
