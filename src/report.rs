//! `mcp-operator report`: the governance state of the MCPServers in a cluster, read from their
//! status (written by the controller): compliance, failing rules, quarantined tools.

use crate::governance::pinning::STATE_QUARANTINED;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt as _};
use serde::Serialize;

use crate::api::MCPServer;

/// Report formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// An aligned table.
    Text,
    /// A JSON array, one object per server.
    Json,
}

/// One server's line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportRow {
    /// `namespace/name`.
    pub server: String,
    pub phase: Option<String>,
    /// Percent of evaluated rules passed; absent before the controller evaluated the server.
    pub compliance: Option<i32>,
    /// Failing rule ids, each once, enforced ones first.
    pub failing_rules: Vec<String>,
    /// Whether a failing rule is enforced (the rollout is held back).
    pub blocked: bool,
    pub quarantined_tools: Vec<String>,
    /// Names of the policies that select the server.
    pub policies: Vec<String>,
}

/// The rows of `servers`, in namespace/name order.
pub fn rows(servers: &[MCPServer]) -> Vec<ReportRow> {
    let mut rows: Vec<ReportRow> = servers
        .iter()
        .map(|server| {
            let status = server.status.clone().unwrap_or_default();
            let mut failing: Vec<(bool, String)> = status
                .findings
                .iter()
                .map(|f| (!f.enforced, f.rule.clone()))
                .collect();
            failing.sort();
            let mut failing_rules: Vec<String> = Vec::new();
            for (_, rule) in failing {
                if !failing_rules.contains(&rule) {
                    failing_rules.push(rule);
                }
            }
            ReportRow {
                server: format!(
                    "{}/{}",
                    server.namespace().unwrap_or_default(),
                    server.name_any()
                ),
                phase: status.phase.clone(),
                compliance: status.compliance.as_ref().map(|c| c.score),
                failing_rules,
                blocked: status.findings.iter().any(|f| f.enforced),
                quarantined_tools: status
                    .tools
                    .iter()
                    .filter(|t| t.state == STATE_QUARANTINED)
                    .map(|t| t.name.clone())
                    .collect(),
                policies: status.policies.iter().map(|p| p.name.clone()).collect(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.server.cmp(&b.server));
    rows
}

fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

/// Format the rows.
pub fn format(rows: &[ReportRow], format: ReportFormat) -> Result<String, serde_json::Error> {
    match format {
        ReportFormat::Json => serde_json::to_string_pretty(rows).map(|s| s + "\n"),
        ReportFormat::Text => {
            let header = [
                "SERVER",
                "PHASE",
                "COMPLIANCE",
                "BLOCKED",
                "FAILING RULES",
                "STATE_QUARANTINED TOOLS",
            ]
            .map(str::to_owned);
            let mut table = vec![header];
            for row in rows {
                table.push([
                    row.server.clone(),
                    row.phase.clone().unwrap_or_else(|| "-".into()),
                    row.compliance
                        .map_or_else(|| "-".into(), |c| format!("{c}%")),
                    if row.blocked { "yes" } else { "no" }.into(),
                    list_or_dash(&row.failing_rules),
                    list_or_dash(&row.quarantined_tools),
                ]);
            }
            let widths: Vec<usize> = (0..6)
                .map(|i| {
                    table
                        .iter()
                        .map(|r| r[i].chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let mut out = String::new();
            for row in &table {
                let cells: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(cell, width)| format!("{cell:<width$}"))
                    .collect();
                out.push_str(cells.join("  ").trim_end());
                out.push('\n');
            }
            Ok(out)
        }
    }
}

/// The MCPServers of `namespace`, or of every namespace.
pub async fn fetch(client: Client, namespace: Option<&str>) -> Result<Vec<MCPServer>, kube::Error> {
    let api: Api<MCPServer> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    Ok(api.list(&ListParams::default()).await?.items)
}
