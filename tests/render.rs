//! `render -f examples/`: succeeds, is deterministic, and what it prints passes third-party
//! validators: the official Kubernetes schemas of our oldest supported version
//! (kubernetes-validate) and a security scanner (checkov). The example custom resources pass
//! the generated CRD schemas under the Python `jsonschema` library.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// checkov checks about privilege, root, capabilities, seccomp, service-account tokens, host
/// namespaces, limits, probes and network isolation. Every one must pass on every workload.
const SECURITY_CHECKS: &[(&str, &str)] = &[
    ("CKV_K8S_16", "container not privileged"),
    ("CKV_K8S_20", "no allowPrivilegeEscalation"),
    ("CKV_K8S_23", "no root containers"),
    ("CKV_K8S_40", "high UID"),
    ("CKV_K8S_22", "read-only root filesystem"),
    ("CKV_K8S_25", "no added capabilities"),
    ("CKV_K8S_28", "no NET_RAW"),
    ("CKV_K8S_37", "capabilities minimised"),
    ("CKV_K8S_39", "no SYS_ADMIN"),
    ("CKV_K8S_31", "seccomp RuntimeDefault"),
    ("CKV_K8S_38", "service-account token not mounted"),
    ("CKV_K8S_17", "no host PID"),
    ("CKV_K8S_18", "no host IPC"),
    ("CKV_K8S_19", "no host network"),
    ("CKV_K8S_26", "no hostPort"),
    ("CKV_K8S_27", "no docker socket"),
    ("CKV_K8S_10", "cpu requests"),
    ("CKV_K8S_11", "cpu limits"),
    ("CKV_K8S_12", "memory requests"),
    ("CKV_K8S_13", "memory limits"),
    ("CKV_K8S_8", "liveness probe"),
    ("CKV_K8S_9", "readiness probe"),
    ("CKV_K8S_29", "pod security context"),
    ("CKV_K8S_30", "container security context"),
    ("CKV2_K8S_6", "pod covered by a NetworkPolicy"),
    ("CKV_K8S_21", "not in the default namespace"),
];

fn render_examples(format: &str) -> String {
    common::stdout_of(&common::run(&["render", "-f", "examples/", "-o", format]))
}

fn yaml_objects(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text).unwrap()
}

#[test]
fn render_examples_succeeds_and_is_deterministic() {
    let first = render_examples("yaml");
    let second = render_examples("yaml");
    assert_eq!(first, second, "same input, same bytes");

    let objects = yaml_objects(&first);
    let kinds: BTreeMap<String, usize> = objects.iter().fold(BTreeMap::new(), |mut acc, o| {
        *acc.entry(o["kind"].as_str().unwrap().to_string())
            .or_default() += 1;
        acc
    });
    // Three servers: github (autoscaled, so HPA + PDB), files (stdio, one replica), weather (two replicas, so a PDB).
    let expected: BTreeMap<String, usize> = [
        ("ServiceAccount", 3),
        ("ConfigMap", 3),
        ("Deployment", 3),
        ("Service", 3),
        ("NetworkPolicy", 3),
        ("HorizontalPodAutoscaler", 1),
        ("PodDisruptionBudget", 2),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(kinds, expected);

    let json: Value = serde_json::from_str(&render_examples("json")).unwrap();
    assert_eq!(json["apiVersion"], "v1");
    assert_eq!(json["kind"], "List");
    assert_eq!(
        json["items"].as_array().unwrap(),
        &objects,
        "JSON and YAML carry the same objects"
    );
}

#[test]
fn rendered_objects_pass_the_official_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let text = render_examples("yaml");
    let count = yaml_objects(&text).len();
    let file = common::write(dir.path(), "rendered.yaml", &text);
    let report = common::kubernetes_validate(&[file]);
    assert_eq!(
        report.matches(" passed for resource ").count(),
        count,
        "every object validated:\n{report}"
    );
}

#[test]
fn example_custom_resources_pass_the_generated_crd_schemas() {
    let python = common::venv_tool("python");
    let output = Command::new(python)
        .arg(common::repo().join("tests/tools/validate_crs.py"))
        .arg(common::repo().join("crds"))
        .arg(common::repo().join("examples"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("7 checked, 0 failed"), "{report}");
}

#[test]
fn rendered_pods_pass_checkov_security_checks() {
    // checkov skips hidden directories, and tempfile's default names start with a dot.
    let dir = tempfile::Builder::new()
        .prefix("rendered-")
        .tempdir()
        .unwrap();
    common::write(dir.path(), "rendered.yaml", &render_examples("yaml"));
    let checks: Vec<&str> = SECURITY_CHECKS.iter().map(|(id, _)| *id).collect();
    let report = common::checkov(dir.path(), &checks);
    let results = &report["results"];

    // Every check ran and passed on every Deployment (so none was silently skipped).
    let passed: BTreeSet<(String, String)> = results["passed_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["check_id"].as_str().unwrap().to_string(),
                c["resource"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Workload checks name the Deployment; the NetworkPolicy graph check names its pod template.
    for (namespace, name) in [
        ("tools", "github"),
        ("tools", "files"),
        ("sandbox", "weather"),
    ] {
        let deployment = format!("Deployment.{namespace}.{name}");
        let pod_prefix = format!("Pod.{namespace}.{name}.");
        for (id, what) in SECURITY_CHECKS {
            let ran = passed.iter().any(|(check, resource)| {
                check == id && (resource == &deployment || resource.starts_with(&pod_prefix))
            });
            assert!(ran, "{id} ({what}) did not pass on {deployment}");
        }
    }
}

#[test]
fn only_servers_without_authentication_run_an_unauthenticated_gateway() {
    let output = common::run(&["render", "-f", "examples/servers/", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&common::stdout_of(&output)).unwrap();
    let mut seen = 0;
    for deployment in list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "Deployment")
    {
        for container in deployment["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
        {
            let args = container["args"].to_string();
            if args.contains("\"gateway\"") {
                seen += 1;
                // Only the legacy SSE example (weather) declares no authentication; without the
                // flag its gateway would refuse to start on the pod network.
                let unauthenticated = deployment["metadata"]["name"] == "weather";
                assert_eq!(
                    args.contains("--allow-unauthenticated"),
                    unauthenticated,
                    "{}: {args}",
                    deployment["metadata"]["name"]
                );
            }
        }
    }
    assert!(seen >= 3, "{seen} gateways");
}

/// The MCPServer of the kind walkthrough (docs/kind.md) is valid and renders.
#[test]
fn the_kind_walkthroughs_server_renders() {
    let page = std::fs::read_to_string(common::repo().join("docs/kind.md")).unwrap();
    let start = page.find("```yaml\napiVersion: mcp-operator.dev").unwrap() + "```yaml\n".len();
    let manifest = &page[start..start + page[start..].find("```").unwrap()];
    let output = common::run_with_stdin(&["render", "-f", "-"], manifest.as_bytes());
    let rendered = common::stdout_of(&output);
    assert!(rendered.contains("kind: Deployment"), "{rendered}");
    assert!(rendered.contains("--allow-unauthenticated"));
    assert!(rendered.contains("npm_config_cache"));
}

/// The cluster-wide defaults `render` and the controller share: gateway resources where a server
/// sets none, and the DNS pods the NetworkPolicy lets servers reach.
#[test]
fn cluster_defaults_reach_the_rendered_objects() {
    let output = common::run(&[
        "render",
        "-f",
        "examples/servers/legacy-sse.yaml",
        "-o",
        "json",
        "--gateway-cpu-request=0.1",
        "--gateway-memory-limit=1024Mi",
        "--dns-namespace=openshift-dns",
        "--dns-pod-labels=dns.operator.openshift.io/daemonset-dns=default",
    ]);
    let list: serde_json::Value = serde_json::from_str(&common::stdout_of(&output)).unwrap();
    let items = list["items"].as_array().unwrap();
    let deployment = items.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let gateway = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "gateway")
        .unwrap();
    assert_eq!(gateway["resources"]["requests"]["cpu"], "100m");
    assert_eq!(gateway["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(
        gateway["resources"]["requests"]["memory"], "64Mi",
        "the built-in default"
    );
    let policy = items
        .iter()
        .find(|o| o["kind"] == "NetworkPolicy")
        .unwrap()
        .to_string();
    assert!(
        policy.contains("openshift-dns") && policy.contains("daemonset-dns"),
        "{policy}"
    );

    let bad = common::run(&["render", "-f", "examples/", "--gateway-cpu-limit=lots"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"lots\" is not a Kubernetes quantity"));
}
