//! `check`: the governance evaluation of manifest files without a cluster, and the reports made
//! of it (text for people, a stable JSON shape for scripts, SARIF 2.1.0 for code-scanning tools).
//! The JSON and SARIF shapes are documented in `docs/check.md`.

use kube::ResourceExt as _;
use serde_json::{Value, json};

use super::load::Origin;
use super::{Located, ManifestSet, OfflineError, render_server};
use crate::api::MCPServer;
use crate::api::common::Enforcement;
use crate::builders::BuildContext;
use crate::governance::catalogue::{Mode, RULES, Rule, Severity};
use crate::governance::{self, Evaluation};

/// Version of the JSON report's shape; bumped only on a breaking change.
pub const JSON_REPORT_VERSION: u32 = 1;
/// The SARIF version written, and the schema URI code-scanning tools recognise.
const SARIF_VERSION: &str = "2.1.0";
const SARIF_SCHEMA_URI: &str = "https://json.schemastore.org/sarif-2.1.0.json";
/// Name of the partial fingerprint that identifies a result across runs.
const SARIF_FINGERPRINT: &str = "mcpOperatorFinding/v1";

/// Exit code when an enforced rule fails.
pub const EXIT_ENFORCED_FAILURE: u8 = 1;
/// Exit code when the input cannot be evaluated.
pub const EXIT_INVALID_INPUT: u8 = 2;

/// One server's evaluation.
#[derive(Clone, Debug)]
pub struct CheckedServer {
    /// `namespace/name`.
    pub server: String,
    pub origin: Origin,
    /// Names and enforcement of the selecting policies, by name.
    pub policies: Vec<(String, Enforcement)>,
    pub evaluation: Evaluation,
    /// What `render` would warn about.
    pub warnings: Vec<String>,
}

/// Evaluate every server of `set` with the policies that select it, in namespace/name order.
pub fn check(set: &ManifestSet, ctx: &BuildContext) -> Result<Vec<CheckedServer>, OfflineError> {
    set.servers_in_order()
        .into_iter()
        .map(|located| check_server(set, located, ctx))
        .collect()
}

fn check_server(
    set: &ManifestSet,
    located: &Located<MCPServer>,
    ctx: &BuildContext,
) -> Result<CheckedServer, OfflineError> {
    let rendered = render_server(set, located, ctx)?;
    let policies = set.policies_for(&located.object);
    let evaluation = governance::evaluate(&located.object, &policies, &rendered.desired);
    Ok(CheckedServer {
        server: rendered.server,
        origin: located.origin.clone(),
        policies: policies
            .iter()
            .map(|p| (p.name_any(), p.spec.enforcement))
            .collect(),
        evaluation,
        warnings: rendered.warnings,
    })
}

/// 0 when no enforced rule fails, [`EXIT_ENFORCED_FAILURE`] otherwise.
pub fn exit_code(servers: &[CheckedServer]) -> u8 {
    if servers.iter().any(|s| s.evaluation.blocked()) {
        EXIT_ENFORCED_FAILURE
    } else {
        0
    }
}

/// Report formats of `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    /// Findings per server, for people.
    Text,
    /// The stable JSON shape documented in docs/check.md.
    Json,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
}

/// Format the report. Same input, same bytes.
pub fn format_report(
    servers: &[CheckedServer],
    format: CheckFormat,
) -> Result<String, OfflineError> {
    match format {
        CheckFormat::Text => Ok(text_report(servers)),
        CheckFormat::Json => pretty(&json_report(servers)),
        CheckFormat::Sarif => pretty(&sarif_report(servers)),
    }
}

fn pretty(value: &Value) -> Result<String, OfflineError> {
    serde_json::to_string_pretty(value)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| OfflineError::Output(e.to_string()))
}

fn enforcement_name(enforcement: Enforcement) -> &'static str {
    match enforcement {
        Enforcement::Enforce => "Enforce",
        Enforcement::Audit => "Audit",
    }
}

fn text_report(servers: &[CheckedServer]) -> String {
    let mut out = String::new();
    let mut findings = 0;
    let mut blocked = Vec::new();
    for server in servers {
        let compliance = server.evaluation.compliance();
        let policies = if server.policies.is_empty() {
            "no policy selects it".to_owned()
        } else {
            let names: Vec<String> = server
                .policies
                .iter()
                .map(|(name, e)| format!("{name} ({})", enforcement_name(*e)))
                .collect();
            format!("policies {}", names.join(", "))
        };
        out.push_str(&format!(
            "{} ({}): compliance {}% ({} passed, {} failed); {policies}\n",
            server.server, server.origin, compliance.score, compliance.passed, compliance.failed
        ));
        for check in server.evaluation.checks.iter().filter(|c| !c.passed()) {
            for problem in &check.problems {
                findings += 1;
                out.push_str(&format!(
                    "  {:<6} {:<8} {:<16} {problem}\n",
                    if check.enforced { "BLOCK" } else { "report" },
                    check.rule.severity.as_str(),
                    check.rule.id,
                ));
            }
            out.push_str(&format!("{:35}fix: {}\n", "", check.rule.remediation));
            for reason in &check.override_reasons {
                out.push_str(&format!("{:35}override: {reason}\n", ""));
            }
        }
        for (rule, reason) in &server.evaluation.disabled {
            out.push_str(&format!("  {rule} disabled: {reason}\n"));
        }
        for warning in &server.warnings {
            out.push_str(&format!("  warning: {warning}\n"));
        }
        if server.evaluation.blocked() {
            blocked.push(server.server.as_str());
        }
    }
    out.push_str(&format!(
        "\n{} server(s), {findings} finding(s); ",
        servers.len()
    ));
    if blocked.is_empty() {
        out.push_str("no enforced rule fails\n");
    } else {
        out.push_str(&format!(
            "an enforced rule fails for {}: the rollout would be blocked\n",
            blocked.join(", ")
        ));
    }
    out
}

fn json_report(servers: &[CheckedServer]) -> Value {
    let mut findings = Vec::new();
    let mut server_entries = Vec::new();
    for server in servers {
        for check in server.evaluation.checks.iter().filter(|c| !c.passed()) {
            for problem in &check.problems {
                findings.push(json!({
                    "rule": check.rule.id,
                    "title": check.rule.title,
                    "severity": check.rule.severity.as_str(),
                    "server": server.server,
                    "message": problem,
                    "enforced": check.enforced,
                    "remediation": check.rule.remediation,
                    "overrideReasons": check.override_reasons,
                    "file": server.origin.file,
                    "line": server.origin.document.map(|(_, line)| line),
                }));
            }
        }
        let compliance = server.evaluation.compliance();
        server_entries.push(json!({
            "server": server.server,
            "file": server.origin.file,
            "line": server.origin.document.map(|(_, line)| line),
            "blocked": server.evaluation.blocked(),
            "compliance": {
                "score": compliance.score,
                "passed": compliance.passed,
                "failed": compliance.failed,
            },
            "policies": server.policies.iter().map(|(name, e)| json!({
                "name": name,
                "enforcement": enforcement_name(*e),
            })).collect::<Vec<_>>(),
            "disabledRules": server.evaluation.disabled.iter().map(|(rule, reason)| json!({
                "rule": rule,
                "reason": reason,
            })).collect::<Vec<_>>(),
            "warnings": server.warnings,
        }));
    }
    let enforced = findings
        .iter()
        .filter(|f| f["enforced"] == Value::Bool(true))
        .count();
    json!({
        "version": JSON_REPORT_VERSION,
        "summary": {
            "servers": servers.len(),
            "blockedServers": servers.iter().filter(|s| s.evaluation.blocked()).count(),
            "findings": findings.len(),
            "enforcedFindings": enforced,
        },
        "servers": server_entries,
        "findings": findings,
    })
}

/// GitHub code scanning ranks security results by this number (CVSS-like, as a string).
fn security_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "9.5",
        Severity::High => "7.5",
        Severity::Medium => "5.0",
        Severity::Low => "2.0",
    }
}

fn sarif_rule(rule: &Rule) -> Value {
    let level = match (rule.mode, rule.severity) {
        (Mode::Block, Severity::Critical | Severity::High) => "error",
        (_, Severity::Low) => "note",
        _ => "warning",
    };
    json!({
        "id": rule.id,
        "name": rule.id.replace('-', ""),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": format!("{}.", rule.title)},
        "help": {
            "text": rule.remediation,
            "markdown": format!("**Fix:** {}\n\nSee docs/rules.md#{}.", rule.remediation, rule.id.to_ascii_lowercase()),
        },
        "defaultConfiguration": {"level": level},
        "properties": {
            "tags": ["security", "mcp", "kubernetes"],
            "precision": "very-high",
            "problem.severity": match rule.severity {
                Severity::Critical | Severity::High => "error",
                Severity::Medium => "warning",
                Severity::Low => "recommendation",
            },
            "security-severity": security_severity(rule.severity),
        },
    })
}

/// A file name as a SARIF URI reference: relative paths stay relative (code-scanning tools
/// resolve them against the repository root), absolute ones become `file:` URLs.
fn artifact_uri(file: &str) -> String {
    let path = std::path::Path::new(file);
    if path.is_absolute()
        && let Ok(url) = url::Url::from_file_path(path)
    {
        return url.to_string();
    }
    let mut uri = String::new();
    for byte in file.trim_start_matches("./").bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                uri.push(char::from(byte))
            }
            b'\\' => uri.push('/'),
            other => uri.push_str(&format!("%{other:02X}")),
        }
    }
    uri
}

fn sarif_report(servers: &[CheckedServer]) -> Value {
    let mut results = Vec::new();
    for server in servers {
        let mut location = json!({
            "logicalLocations": [{
                "name": server.server.rsplit('/').next().unwrap_or_default(),
                "fullyQualifiedName": format!("MCPServer/{}", server.server),
                "kind": "resource",
            }],
        });
        if let Some((_, line)) = server.origin.document {
            location["physicalLocation"] = json!({
                "artifactLocation": {"uri": artifact_uri(&server.origin.file)},
                "region": {"startLine": line},
            });
        }
        for check in server.evaluation.checks.iter().filter(|c| !c.passed()) {
            let rule_index = RULES.iter().position(|r| r.id == check.rule.id);
            for problem in &check.problems {
                let level = if check.enforced {
                    "error"
                } else {
                    match check.rule.severity {
                        Severity::Critical | Severity::High => "warning",
                        Severity::Medium | Severity::Low => "note",
                    }
                };
                let fingerprint = crate::builders::gateway::sha256_hex(
                    format!("{}\n{}\n{problem}", check.rule.id, server.server).as_bytes(),
                );
                let mut result = json!({
                    "ruleId": check.rule.id,
                    "level": level,
                    "message": {"text": format!("MCPServer {}: {problem}", server.server)},
                    "locations": [location.clone()],
                    "partialFingerprints": {SARIF_FINGERPRINT: fingerprint},
                    "properties": {
                        "server": server.server,
                        "enforced": check.enforced,
                        "severity": check.rule.severity.as_str(),
                        "overrideReasons": check.override_reasons,
                    },
                });
                if let Some(index) = rule_index {
                    result["ruleIndex"] = json!(index);
                }
                results.push(result);
            }
        }
    }
    json!({
        "$schema": SARIF_SCHEMA_URI,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {
                "name": "mcp-operator",
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "rules": RULES.iter().map(sarif_rule).collect::<Vec<_>>(),
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}
