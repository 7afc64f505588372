//! `mcp-operator check`: the findings the examples' comments promise, the exit codes a CI gate
//! relies on, the documented JSON shape, and SARIF that validates against the published
//! SARIF 2.1.0 schema.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-operator");
/// Marks an expected finding in an example's comments: `# check: RULE reported|blocks`, or
/// `# check: no findings`.
const EXPECTATION_MARKER: &str = "# check:";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check(args: &[&str]) -> Output {
    Command::new(BINARY)
        .arg("check")
        .args(args)
        .current_dir(root())
        .output()
        .expect("run mcp-operator check")
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn example_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("examples"), &mut files);
    files.sort();
    files
}

/// `(rule, enforced)` pairs the file's comments promise.
fn expected_findings(file: &Path) -> BTreeSet<(String, bool)> {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(EXPECTATION_MARKER))
        .map(str::trim)
        .collect();
    assert!(
        !lines.is_empty(),
        "{} says nothing about what check finds: add `{EXPECTATION_MARKER} ...` lines",
        file.display()
    );
    lines
        .iter()
        .filter(|l| !l.starts_with("no findings"))
        .map(|l| {
            let (rule, what) = l.split_once(' ').unwrap_or((l, ""));
            let enforced = match what.trim() {
                "blocks" => true,
                "reported" => false,
                other => panic!(
                    "{}: `{other}` is neither blocks nor reported",
                    file.display()
                ),
            };
            (rule.to_owned(), enforced)
        })
        .collect()
}

#[test]
fn check_on_the_examples_gives_the_findings_their_comments_state() {
    let output = check(&["-f", "examples/", "--format", "json"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = json_of(&output);
    let mut found: BTreeMap<String, BTreeSet<(String, bool)>> = BTreeMap::new();
    for finding in report["findings"].as_array().unwrap() {
        found
            .entry(
                finding["file"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("./")
                    .to_owned(),
            )
            .or_default()
            .insert((
                finding["rule"].as_str().unwrap().to_owned(),
                finding["enforced"].as_bool().unwrap(),
            ));
    }
    let files = example_files();
    assert!(files.len() >= 6, "examples: {files:?}");
    for file in &files {
        let relative = file
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            found.remove(&relative).unwrap_or_default(),
            expected_findings(file),
            "{relative}: the findings differ from what its comments say"
        );
        // Each file alone is valid input: exit 0 or 1, never 2.
        let alone = check(&["-f", &relative]);
        assert!(
            matches!(alone.status.code(), Some(0 | 1)),
            "check -f {relative}: {:?} {}",
            alone.status,
            String::from_utf8_lossy(&alone.stderr)
        );
    }
    assert!(found.is_empty(), "findings in no example file: {found:?}");
}

/// A production namespace, an Enforce policy, and two servers: one compliant, one with an
/// image by tag from another registry.
const PROD_MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {env: prod}}
---
apiVersion: mcp-operator.dev/v1alpha1
kind: MCPPolicy
metadata: {name: prod}
spec:
  enforcement: Enforce
  namespaceSelector: {matchLabels: {env: prod}}
  workload:
    allowedRegistries: ["registry.example.com/mcp/"]
    requireDigest: true
  overrides:
    - rule: MCP-RATE-001
      enforcement: Audit
      reason: "limits are set at the ingress until 2027-01 (ticket OPS-12)"
    - rule: MCP-TRANS-004
      enforcement: Disabled
      reason: "no legacy servers here"
---
apiVersion: mcp-operator.dev/v1alpha1
kind: MCPServer
metadata: {name: good, namespace: shop}
spec:
  image: registry.example.com/mcp/orders@sha256:3f1c9a0e5b7d2c4a8e6f0b1d3c5a7e9f2b4d6c8a0e1f3b5d7c9a2e4f6b8d0c1a
  authentication: {issuer: "https://login.example.com"}
  authorization:
    - tools: ["get_*"]
---
apiVersion: mcp-operator.dev/v1alpha1
kind: MCPServer
metadata: {name: bad, namespace: shop}
spec:
  image: docker.io/someone/orders:latest
  authentication: {issuer: "https://login.example.com"}
  authorization:
    - tools: ["get_*"]
"#;

fn write_manifests(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prod.yaml");
    std::fs::write(&file, text).unwrap();
    let name = file.to_string_lossy().into_owned();
    (dir, name)
}

#[test]
fn an_enforced_failure_exits_1_and_names_the_rule_the_server_and_the_fix() {
    let (_dir, file) = write_manifests(PROD_MANIFESTS);
    let output = check(&["-f", &file]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    let bad_lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("shop/bad"))
        .take_while(|l| !l.starts_with("shop/good"))
        .collect();
    let joined = bad_lines.join("\n");
    for expected in [
        "BLOCK",
        "MCP-SUPPLY-001",
        "MCP-SUPPLY-002",
        "docker.io/someone/orders:latest",
        "fix: Pin spec.image by digest",
        // An override's reason shows in the report.
        "override: MCPPolicy prod: limits are set at the ingress until 2027-01 (ticket OPS-12)",
        "MCP-TRANS-004 disabled: MCPPolicy prod: no legacy servers here",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in:\n{text}"
        );
    }
    assert!(
        text.contains("an enforced rule fails for shop/bad"),
        "summary:\n{text}"
    );
    // The audit override means the rate-limit finding is reported, not blocking.
    assert!(
        joined
            .lines()
            .any(|l| l.contains("report") && l.contains("MCP-RATE-001")),
        "{joined}"
    );
}

#[test]
fn json_report_has_the_documented_shape() {
    let (_dir, file) = write_manifests(PROD_MANIFESTS);
    let output = check(&["-f", &file, "--format", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output);
    assert_eq!(report["version"], 1);
    assert_eq!(report["summary"]["servers"], 2);
    assert_eq!(report["summary"]["blockedServers"], 1);
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(
        report["summary"]["findings"].as_u64().unwrap() as usize,
        findings.len()
    );
    let digest = findings
        .iter()
        .find(|f| f["rule"] == "MCP-SUPPLY-001")
        .expect("a digest finding");
    assert_eq!(digest["severity"], "high");
    assert_eq!(digest["server"], "shop/bad");
    assert_eq!(digest["enforced"], true);
    assert_eq!(digest["file"], file.as_str());
    assert!(digest["line"].as_u64().unwrap() > 1);
    assert!(digest["message"].as_str().unwrap().contains("sha256"));
    let rate = findings
        .iter()
        .find(|f| f["rule"] == "MCP-RATE-001" && f["server"] == "shop/bad")
        .unwrap();
    assert_eq!(rate["enforced"], false);
    assert!(
        rate["overrideReasons"][0]
            .as_str()
            .unwrap()
            .contains("OPS-12")
    );
    let servers = report["servers"].as_array().unwrap();
    let good = servers.iter().find(|s| s["server"] == "shop/good").unwrap();
    assert_eq!(good["blocked"], false);
    assert_eq!(good["policies"][0]["name"], "prod");
    assert_eq!(good["policies"][0]["enforcement"], "Enforce");
    assert_eq!(good["disabledRules"][0]["rule"], "MCP-TRANS-004");
    let bad = servers.iter().find(|s| s["server"] == "shop/bad").unwrap();
    assert!(
        bad["compliance"]["score"].as_i64().unwrap()
            < good["compliance"]["score"].as_i64().unwrap()
    );
}

#[test]
fn sarif_report_validates_against_the_published_schema_and_points_at_the_document() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/schemas/sarif-schema-2.1.0.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&schema)
        .expect("the SARIF schema compiles");
    let (_dir, file) = write_manifests(PROD_MANIFESTS);
    for args in [
        vec!["-f", file.as_str(), "--format", "sarif"],
        vec!["-f", "examples/", "--format", "sarif"],
    ] {
        let output = check(&args);
        let sarif = json_of(&output);
        let errors: Vec<String> = validator
            .iter_errors(&sarif)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "invalid SARIF for {args:?}: {errors:#?}");
    }
    let sarif = json_of(&check(&["-f", &file, "--format", "sarif"]));
    // The validator does reject what SARIF forbids.
    let mut broken = sarif.clone();
    broken["runs"][0]["results"][0]["level"] = Value::from("fatal");
    assert!(!validator.is_valid(&broken));
    let run = &sarif["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let results = run["results"].as_array().unwrap();
    let digest = results
        .iter()
        .find(|r| r["ruleId"] == "MCP-SUPPLY-001")
        .unwrap();
    assert_eq!(digest["level"], "error");
    let rule = &rules[digest["ruleIndex"].as_u64().unwrap() as usize];
    assert_eq!(rule["id"], "MCP-SUPPLY-001");
    assert!(rule["help"]["text"].as_str().unwrap().contains("digest"));
    assert_eq!(rule["properties"]["security-severity"], "7.5");
    let location = &digest["locations"][0];
    let uri = location["physicalLocation"]["artifactLocation"]["uri"]
        .as_str()
        .unwrap();
    assert!(
        uri.starts_with("file:///") && uri.ends_with("/prod.yaml"),
        "{uri}"
    );
    // The `bad` server is the fourth document; its first line is its `apiVersion`.
    let line = location["physicalLocation"]["region"]["startLine"]
        .as_u64()
        .unwrap() as usize;
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.lines()
            .nth(line - 1)
            .unwrap()
            .starts_with("apiVersion")
    );
    assert!(
        text.lines()
            .skip(line)
            .take(3)
            .any(|l| l.contains("name: bad"))
    );
    assert_eq!(
        location["logicalLocations"][0]["fullyQualifiedName"],
        "MCPServer/shop/bad"
    );
    // Relative paths stay relative, as code-scanning tools resolve them against the repository.
    let examples = json_of(&check(&["-f", "examples/", "--format", "sarif"]));
    let uri = examples["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
        ["artifactLocation"]["uri"]
        .as_str()
        .unwrap();
    assert_eq!(uri, "examples/servers/legacy-sse.yaml");
}

#[test]
fn invalid_input_exits_2_with_the_problem() {
    let (_dir, file) = write_manifests(
        "apiVersion: mcp-operator.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: x}\nspec:\n  image: \"\"\n",
    );
    let output = check(&["-f", &file]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("spec.image"), "{stderr}");
    let missing = check(&["-f", "no/such/dir"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(missing.stdout.is_empty());
}
