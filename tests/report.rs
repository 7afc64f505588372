//! `mcp-operator report` against the in-process API server: servers' compliance, failing rules
//! and quarantined tools, as a table and as JSON.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kube::api::{Api, Patch, PatchParams, PostParams};
use mcp_operator::api::MCPServer;
use mcp_operator::testkit::apiserver::ApiServer;
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-operator");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_lists_compliance_failing_rules_and_quarantined_tools() {
    let api = ApiServer::start().await.unwrap();
    api.install_crds().unwrap();
    let client = api.client("user").unwrap();
    let servers: Api<MCPServer> = Api::namespaced(client.clone(), "tools");
    for (name, status) in [
        (
            "github",
            json!({"phase": "Ready", "compliance": {"score": 88, "passed": 15, "failed": 2},
            "findings": [
                {"rule": "MCP-RATE-001", "severity": "medium", "message": "no rate limit", "enforced": false},
                {"rule": "MCP-SUPPLY-001", "severity": "high", "message": "not pinned", "enforced": true},
            ],
            "policies": [{"name": "prod", "enforcement": "Enforce"}],
            "tools": [
                {"name": "create_issue", "sha256": "a".repeat(64), "state": "Approved"},
                {"name": "add", "sha256": "b".repeat(64), "state": "Quarantined", "reasons": ["MCP-TOOL-001: description: instruction tag"]},
            ]}),
        ),
        (
            "files",
            json!({"phase": "Ready", "compliance": {"score": 100, "passed": 17, "failed": 0}}),
        ),
    ] {
        let object: MCPServer = serde_json::from_value(
            json!({"apiVersion": "mcp-operator.dev/v1alpha1", "kind": "MCPServer",
            "metadata": {"name": name}, "spec": {"image": "example/x:1"}}),
        )
        .unwrap();
        servers
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
        servers
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig("admin")).unwrap();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(BINARY)
                .arg("report")
                .args(args)
                .output()
                .unwrap()
        })
    };
    let path = kubeconfig.to_string_lossy().into_owned();
    let json_out = run(vec![
        "--kubeconfig".into(),
        path.clone(),
        "--format".into(),
        "json".into(),
    ])
    .await
    .unwrap();
    assert!(
        json_out.status.success(),
        "{}",
        String::from_utf8_lossy(&json_out.stderr)
    );
    let rows: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(rows[0]["server"], "tools/files");
    assert_eq!(rows[0]["blocked"], false);
    let github = &rows[1];
    assert_eq!(github["server"], "tools/github");
    assert_eq!(github["compliance"], 88);
    assert_eq!(github["blocked"], true);
    assert_eq!(
        github["failingRules"],
        json!(["MCP-SUPPLY-001", "MCP-RATE-001"]),
        "enforced first"
    );
    assert_eq!(github["quarantinedTools"], json!(["add"]));
    assert_eq!(github["policies"], json!(["prod"]));

    let text_out = run(vec![
        "--kubeconfig".into(),
        path,
        "-n".into(),
        "tools".into(),
    ])
    .await
    .unwrap();
    let text = String::from_utf8(text_out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("SERVER") && lines[0].contains("QUARANTINED TOOLS"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("tools/github")
            && lines[2].contains("88%")
            && lines[2].ends_with("add"),
        "{text}"
    );

    let missing = run(vec!["--kubeconfig".into(), "/no/such/kubeconfig".into()])
        .await
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read kubeconfig"));
}
