//! `render` on invalid input: every case exits 2 without a panic, prints nothing on stdout, and
//! says on stderr which file, which document, which field, and what is expected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

const SERVER_HEAD: &str = "apiVersion: mcp-operator.dev/v1alpha1\nkind: MCPServer\nmetadata:\n  name: demo\n  namespace: tools\n";
const PROMPT_HEAD: &str = "apiVersion: mcp-operator.dev/v1alpha1\nkind: MCPPromptVersion\nmetadata:\n  name: p\n  namespace: tools\n";
const POLICY_HEAD: &str =
    "apiVersion: mcp-operator.dev/v1alpha1\nkind: MCPPolicy\nmetadata:\n  name: p\n";

/// A case: a name, the file content, the field path the message must name (empty when the
/// problem is not about a field), and words of the expectation the message must contain.
struct Case {
    name: &'static str,
    content: String,
    path: &'static str,
    expected: &'static str,
}

fn server(spec: &str) -> String {
    format!("{SERVER_HEAD}spec:\n{spec}")
}

fn cases() -> Vec<Case> {
    let c = |name, content: String, path, expected| Case {
        name,
        content,
        path,
        expected,
    };
    vec![
        c("port-wrong-type", server("  image: i\n  port: eighty\n"), "spec.port", "expected integer"),
        c("port-out-of-range", server("  image: i\n  port: 70000\n"), "spec.port", "at most 65535"),
        c("replicas-negative", server("  image: i\n  replicas: -1\n"), "spec.replicas", "at least 0"),
        c("transport-unknown", server("  image: i\n  transport: websocket\n"), "spec.transport", "expected one of"),
        c("image-missing", server("  port: 8080\n"), "spec.image", "required field is missing"),
        c("image-empty", server("  image: ''\n"), "spec.image", "at least 1 characters"),
        c("spec-missing", SERVER_HEAD.to_string(), "spec", "required field is missing"),
        c("field-misspelt", server("  image: i\n  imagePullPolcy: Always\n"), "spec.imagePullPolcy", "unknown field"),
        c("stdio-without-command", server("  image: i\n  transport: stdio\n"), "spec.command", "required when spec.transport is stdio"),
        c("stdio-with-port", server("  image: i\n  transport: stdio\n  command: [x]\n  port: 80\n"), "spec.port", "no meaning for a stdio server"),
        c("stdio-with-path", server("  image: i\n  transport: stdio\n  command: [x]\n  path: /mcp\n"), "spec.path", "no meaning for a stdio server"),
        c("replicas-and-autoscaling", server("  image: i\n  replicas: 2\n  autoscaling: {maxReplicas: 3}\n"), "spec.replicas", "either spec.replicas or spec.autoscaling"),
        c("autoscaling-min-above-max", server("  image: i\n  autoscaling: {minReplicas: 5, maxReplicas: 3}\n"), "spec.autoscaling.minReplicas", "must not exceed"),
        c("autoscaling-target-range", server("  image: i\n  autoscaling: {maxReplicas: 3, targetCPUUtilization: 150}\n"), "spec.autoscaling.targetCPUUtilization", "at most 100"),
        c("egress-bad-cidr", server("  image: i\n  egress: [{cidr: 10.0.0.0/33, ports: [{port: 443}]}]\n"), "spec.egress[0].cidr", "must be a CIDR"),
        c("egress-no-ports", server("  image: i\n  egress: [{cidr: 10.0.0.0/8, ports: []}]\n"), "spec.egress[0].ports", "at least 1 entries"),
        c("ingress-empty-peer", server("  image: i\n  ingress: [{}]\n"), "spec.ingress[0]", "needs namespaceSelector, podSelector"),
        c("issuer-not-https", server("  image: i\n  authentication: {issuer: 'http://idp.example.com'}\n"), "spec.authentication.issuer", "https URL"),
        c("name-not-dns-label", server("  image: i\n").replace("name: demo", "name: GitHub"), "metadata.name", "DNS label"),
        c("quantity-invalid", server("  image: i\n  resources: {limits: {memory: lots}}\n"), "spec.resources.limits.memory", "not a Kubernetes quantity"),
        c("request-above-limit", server("  image: i\n  resources: {requests: {cpu: '2'}, limits: {cpu: 500m}}\n"), "spec.resources.requests.cpu", "must not exceed its limit"),
        c("prompt-requirement-invalid", server("  image: i\n  prompts: [{name: triage, version: 'one point two'}]\n"), "spec.prompts[0].version", "not a semver requirement"),
        c("env-duplicate", server("  image: i\n  env: [{name: A, value: '1'}]\n  secretEnv: [{name: A, secretKeyRef: {name: s, key: k}}]\n"), "spec.secretEnv[0].name", "already set"),
        c("label-value-invalid", server("  image: i\n").replace("  namespace: tools\n", "  namespace: tools\n  labels: {team: 'platform team'}\n"), "metadata.labels.team", "label value"),
        c("tool-glob-invalid", server("  image: i\n  authorization: [{tools: ['get_[']}]\n"), "spec.authorization[0].tools[0]", "not a valid glob"),
        c("prompt-version-not-semver", format!("{PROMPT_HEAD}spec:\n  prompt: triage\n  version: '1.2'\n  messages: [{{role: user, text: hi}}]\n"), "spec.version", "semantic version"),
        c("prompt-message-text-and-resource", format!("{PROMPT_HEAD}spec:\n  prompt: triage\n  version: 1.0.0\n  messages: [{{role: user, text: hi, resource: {{uri: x, text: body}}}}]\n"), "spec.messages[0]", "either text or resource"),
        c("prompt-messages-empty", format!("{PROMPT_HEAD}spec:\n  prompt: triage\n  version: 1.0.0\n  messages: []\n"), "spec.messages", "at least 1 entries"),
        c("prompt-placeholder-undeclared", format!("{PROMPT_HEAD}spec:\n  prompt: triage\n  version: 1.0.0\n  messages: [{{role: user, text: 'see {{{{issue}}}}'}}]\n"), "spec.messages[0].text", "names no declared argument"),
        c("prompt-argument-duplicate", format!("{PROMPT_HEAD}spec:\n  prompt: triage\n  version: 1.0.0\n  arguments: [{{name: a}}, {{name: a}}]\n  messages: [{{role: user, text: '{{{{a}}}}'}}]\n"), "spec.arguments[1]", "Duplicate value: {\"name\":\"a\"}: each item's name must be unique"),
        c("prompt-argument-name-invalid", format!("{PROMPT_HEAD}spec:\n  prompt: triage\n  version: 1.0.0\n  arguments: [{{name: 'two words'}}]\n  messages: [{{role: user, text: hi}}]\n"), "spec.arguments[0].name", "expected pattern"),
        c("prompt-role-unknown", format!("{PROMPT_HEAD}spec:\n  prompt: triage\n  version: 1.0.0\n  messages: [{{role: system, text: hi}}]\n"), "spec.messages[0].role", "expected one of"),
        c("prompt-message-empty", format!("{PROMPT_HEAD}spec:\n  prompt: triage\n  version: 1.0.0\n  messages: [{{role: user}}]\n"), "spec.messages[0]", "either text or resource"),
        c("prompt-lifecycle-unknown", format!("{PROMPT_HEAD}spec:\n  prompt: triage\n  version: 1.0.0\n  lifecycle: Archived\n  messages: [{{role: user, text: hi}}]\n"), "spec.lifecycle", "expected one of"),
        c("prompt-name-invalid", format!("{PROMPT_HEAD}spec:\n  prompt: 'triage prompt'\n  version: 1.0.0\n  messages: [{{role: user, text: hi}}]\n"), "spec.prompt", "expected pattern"),
        c("policy-min-above-max", format!("{POLICY_HEAD}spec:\n  workload: {{minReplicas: 3, maxReplicas: 1}}\n"), "spec.workload.minReplicas", "must not exceed"),
        c("policy-egress-not-cidr", format!("{POLICY_HEAD}spec:\n  network: {{allowedEgress: [everywhere]}}\n"), "spec.network.allowedEgress[0]", "must be a CIDR"),
        c("policy-enforcement-unknown", format!("{POLICY_HEAD}spec:\n  enforcement: Block\n"), "spec.enforcement", "expected one of"),
        c("policy-override-bad-rule", format!("{POLICY_HEAD}spec:\n  overrides: [{{rule: SUPPLY-1, enforcement: Audit, reason: legacy}}]\n"), "spec.overrides[0].rule", "expected pattern"),
        c("policy-selector-operator", format!("{POLICY_HEAD}spec:\n  namespaceSelector: {{matchExpressions: [{{key: env, operator: Equals, values: [prod]}}]}}\n"), "spec.namespaceSelector", "unknown operator"),
        c("kind-unknown", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n".into(), "kind", "expected MCPServer, MCPPolicy or MCPPromptVersion"),
        c("api-version-wrong", "apiVersion: mcp-operator.dev/v1\nkind: MCPServer\nmetadata:\n  name: demo\nspec:\n  image: i\n".into(), "apiVersion", "expected \"mcp-operator.dev/v1alpha1\""),
        c("api-version-missing", "kind: MCPServer\nmetadata:\n  name: demo\nspec:\n  image: i\n".into(), "apiVersion", "required field is missing"),
        c("name-missing", "apiVersion: mcp-operator.dev/v1alpha1\nkind: MCPServer\nmetadata:\n  namespace: tools\nspec:\n  image: i\n".into(), "metadata.name", "required field is missing"),
        c("document-is-a-list", "- apiVersion: v1\n- kind: MCPServer\n".into(), "", "expected a mapping with apiVersion, kind and metadata"),
        c("yaml-syntax", server("  image: i\n  args: [a, b\n"), "", "YAML syntax error at line"),
        c("yaml-duplicate-key", server("  image: i\n  image: j\n"), "", "duplicate mapping key"),
        c("object-twice", format!("{}---\n{}", server("  image: i\n"), server("  image: j\n")), "metadata.name", "already defined at"),
        c("empty-file", String::new(), "", "holds no manifest"),
    ]
}

/// The problem lines of a failed run's stderr.
fn problem_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(str::trim)
        .collect()
}

#[test]
fn every_invalid_document_is_refused_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for case in &cases {
        let file = common::write(dir.path(), &format!("{}.yaml", case.name), &case.content);
        let file_name = file.display().to_string();
        let output = common::run(&["render", "-f", &file_name]);
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        let lines = problem_lines(&stderr);
        let mut problems = Vec::new();
        if output.status.code() != Some(2) {
            problems.push(format!("exit code {:?}, expected 2", output.status.code()));
        }
        if !output.stdout.is_empty() {
            problems.push("printed to stdout".into());
        }
        if stderr.contains("panicked") {
            problems.push("panicked".into());
        }
        let needs_document = case.name != "empty-file";
        let matching = lines.iter().find(|line| {
            line.starts_with(&file_name)
                && (!needs_document || line.contains("document "))
                && (case.path.is_empty() || line.contains(&format!(": {}: ", case.path)))
                && line.contains(case.expected)
        });
        if matching.is_none() {
            problems.push(format!(
                "no line names the file, {}field path {:?} and {:?}",
                if needs_document { "document, " } else { "" },
                case.path,
                case.expected
            ));
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n{stderr}", case.name, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_problem_of_a_run_is_reported_and_valid_files_do_not_hide_them() {
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), "a-good.yaml", &server("  image: i\n"));
    common::write(
        dir.path(),
        "b-bad.yaml",
        &format!(
            "{}---\n{}",
            server("  image: i\n  port: 0\n").replace("demo", "one"),
            server("  transport: nope\n").replace("demo", "two")
        ),
    );
    let output = common::run(&["render", "-f", &dir.path().display().to_string()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines = problem_lines(&stderr);
    assert!(
        lines.iter().any(|l| l.contains(
            "b-bad.yaml: document 1 (line 1), MCPServer tools/one: spec.port: expected at least 1"
        )),
        "{stderr}"
    );
    assert!(lines.iter().any(|l| l.contains("b-bad.yaml: document 2 (line 10), MCPServer tools/two: spec.image: required field is missing")), "{stderr}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("MCPServer tools/two: spec.transport: expected one of")),
        "{stderr}"
    );
}

#[test]
fn unusable_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty_dir = dir.path().join("nothing-here");
    std::fs::create_dir(&empty_dir).unwrap();
    common::write(&empty_dir, "README.md", "not a manifest");
    for (path, expected) in [
        (
            empty_dir.display().to_string(),
            "is a directory with no manifests",
        ),
        (
            dir.path().join("missing.yaml").display().to_string(),
            "cannot be read",
        ),
    ] {
        let output = common::run(&["render", "-f", &path]);
        assert_eq!(output.status.code(), Some(2), "{path}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&path) && stderr.contains(expected),
            "{stderr}"
        );
    }
}

#[test]
fn bad_flags_exit_2_with_usage() {
    let output = common::run(&["render", "-f", "examples/", "-o", "xml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("possible values: yaml, json"));
}
