//! Server-side apply round trips in the in-process API server, which defaults custom resources
//! from their CRD schema and stores quantities canonically, as the API server does. What Argo CD
//! applies (the examples) and what the operator applies (the rendered children) must come back
//! exactly as sent, and applying the same again must change nothing: otherwise Argo CD shows a
//! perpetual diff, or the operator keeps rewriting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use mcp_operator::testkit::apiserver::ApiServer;
use serde_json::{Value, json};

/// The plural of every kind the examples and the operator apply.
fn api_resource(object: &Value) -> ApiResource {
    let api_version = object["apiVersion"].as_str().unwrap();
    let kind = object["kind"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "MCPServer" => "mcpservers",
        "MCPPolicy" => "mcppolicies",
        "MCPPromptVersion" => "mcppromptversions",
        "Deployment" => "deployments",
        "Service" => "services",
        "ConfigMap" => "configmaps",
        "ServiceAccount" => "serviceaccounts",
        "NetworkPolicy" => "networkpolicies",
        "HorizontalPodAutoscaler" => "horizontalpodautoscalers",
        "PodDisruptionBudget" => "poddisruptionbudgets",
        "Namespace" => "namespaces",
        other => panic!("no plural known for {other}"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn cluster_scoped(object: &Value) -> bool {
    object["kind"] == "MCPPolicy" || object["kind"] == "Namespace"
}

/// Every field of `sent` is in `stored` with the same value; the paths that differ otherwise.
fn changed_fields(sent: &Value, stored: &Value, path: &str, out: &mut Vec<String>) {
    match (sent, stored) {
        (Value::Object(sent), Value::Object(stored)) => {
            for (key, value) in sent {
                match stored.get(key) {
                    Some(s) => changed_fields(value, s, &format!("{path}.{key}"), out),
                    None => out.push(format!("{path}.{key}: sent {value}, dropped")),
                }
            }
        }
        (Value::Array(sent), Value::Array(stored)) if sent.len() == stored.len() => {
            for (i, (a, b)) in sent.iter().zip(stored).enumerate() {
                changed_fields(a, b, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: sent {a}, stored {b}")),
    }
}

/// Apply `object` twice as `manager`; the stored object after the first apply.
async fn apply_twice(client: &kube::Client, object: &Value, manager: &str) -> Value {
    let resource = api_resource(object);
    let name = object["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) if !cluster_scoped(object) => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    };
    let params = PatchParams::apply(manager);
    let first = api
        .patch(name, &params, &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("{} {name} was refused: {e}", object["kind"]));
    let second = api
        .patch(name, &params, &Patch::Apply(object))
        .await
        .unwrap();
    assert_eq!(
        first.metadata.resource_version, second.metadata.resource_version,
        "{} {name}: applying the same manifest again wrote something",
        object["kind"]
    );
    serde_json::to_value(first).unwrap()
}

fn examples() -> Vec<Value> {
    let mut documents = Vec::new();
    for dir in ["servers", "policies", "prompts"] {
        let mut files: Vec<_> = std::fs::read_dir(common::repo().join("examples").join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for chunk in text.split("\n---") {
                let document: Value = serde_saphyr::from_str(chunk).unwrap_or(Value::Null);
                if document.is_object() {
                    documents.push(document);
                }
            }
        }
    }
    documents
}

#[tokio::test]
async fn the_examples_come_back_as_applied_and_a_second_apply_changes_nothing() {
    let api = ApiServer::start().await.unwrap();
    api.install_crds().unwrap();
    let client = api.client("argocd").unwrap();
    let documents = examples();
    assert!(
        documents.len() >= 6,
        "{} example documents",
        documents.len()
    );
    let mut defaulted = 0;
    for document in &documents {
        let mut sent = document.clone();
        if sent["metadata"].get("namespace").is_none() && !cluster_scoped(&sent) {
            sent["metadata"]["namespace"] = json!("default");
        }
        let stored = apply_twice(&client, &sent, "argocd-controller").await;
        let mut changed = Vec::new();
        changed_fields(&sent["spec"], &stored["spec"], "spec", &mut changed);
        assert!(
            changed.is_empty(),
            "{} {}: the API server changed what Argo CD applied: {changed:#?}",
            sent["kind"],
            sent["metadata"]["name"]
        );
        // Defaults fill only what the manifest left out (Argo CD ignores fields it never set).
        if stored["spec"] != sent["spec"] {
            defaulted += 1;
        }
    }
    assert!(
        defaulted > 0,
        "the double defaults custom resources, so this test can fail"
    );
}

#[tokio::test]
async fn rendered_children_come_back_as_the_operator_applies_them() {
    let api = ApiServer::start().await.unwrap();
    let client = api.client("mcp-operator").unwrap();
    // Quantities as people write them: the operator sends the API server's own form.
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::write(
        dir.path(),
        "server.yaml",
        "apiVersion: mcp-operator.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: sized, namespace: tools}\n\
         spec:\n  image: example/sized:1\n  resources:\n    requests: {cpu: \"0.5\", memory: 1024Mi}\n    limits: {cpu: 1000m, memory: 2048Mi}\n",
    );
    let mut objects = Vec::new();
    for path in [manifest.as_path(), &common::repo().join("examples")] {
        let output = common::run(&["render", "-f", path.to_str().unwrap(), "-o", "json"]);
        let list: Value = serde_json::from_str(&common::stdout_of(&output)).unwrap();
        objects.extend(list["items"].as_array().unwrap().iter().cloned());
    }
    assert!(objects.iter().any(|o| o["kind"] == "Deployment"));
    for object in &objects {
        let stored = apply_twice(&client, object, "mcp-operator").await;
        let mut changed = Vec::new();
        for part in ["spec", "data", "metadata"] {
            if let Some(sent) = object.get(part) {
                changed_fields(sent, &stored[part], part, &mut changed);
            }
        }
        assert!(
            changed.is_empty(),
            "{} {}: stored differently than the operator applied it: {changed:#?}",
            object["kind"],
            object["metadata"]["name"]
        );
    }
    let sized = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "sized")
        .unwrap();
    let resources = &sized["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["image"] == "example/sized:1")
        .unwrap()["resources"];
    assert_eq!(resources["requests"]["cpu"], "500m");
    assert_eq!(resources["requests"]["memory"], "1Gi");
    assert_eq!(resources["limits"]["cpu"], "1");
    assert_eq!(resources["limits"]["memory"], "2Gi");
}
