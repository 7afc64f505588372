//! `docs/metrics.md`: every metric the controller and the gateway expose, generated from their
//! live registries (each labelled family given one sample so its labels show), kept in sync.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use mcp_operator::api::server::Finding;
use mcp_operator::controller::Error;
use mcp_operator::controller::children::ChildKind;
use mcp_operator::gateway::metrics::decision;

/// One metric family as exposed: type, help, label names.
#[derive(Default)]
struct Family {
    kind: String,
    help: String,
    labels: Vec<String>,
}

/// Parse the OpenMetrics text: `# TYPE`, `# HELP`, and label names from the samples.
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.entry(name.to_owned()).or_default().kind = kind.to_owned();
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            out.entry(name.to_owned()).or_default().help = help.trim_end_matches('.').to_owned();
        } else if !line.starts_with('#') && line.contains('{') {
            let (series, _) = line.split_once('{').unwrap();
            let labels: Vec<String> = line[series.len() + 1..line.find('}').unwrap()]
                .split(',')
                .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.to_owned()))
                .filter(|k| k != "le")
                .collect();
            // The family is the longest declared name the series starts with.
            let family = out
                .keys()
                .filter(|name| series.starts_with(name.as_str()))
                .max_by_key(|name| name.len())
                .cloned();
            if let Some(family) = family {
                let entry = out.get_mut(&family).unwrap();
                for label in labels {
                    if !entry.labels.contains(&label) {
                        entry.labels.push(label);
                    }
                }
            }
        }
    }
    out
}

fn table(title: &str, endpoint: &str, text: &str) -> String {
    let mut out = format!(
        "\n## {title}\n\n{endpoint}\n\n| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n"
    );
    for (name, family) in families(text) {
        let exposed = if family.kind == "counter" {
            format!("{name}_total")
        } else {
            name
        };
        let labels = if family.labels.is_empty() {
            "—".to_owned()
        } else {
            family
                .labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{exposed}` | {} | {labels} | {} |\n",
            family.kind, family.help
        ));
    }
    out
}

fn reference() -> String {
    let controller = mcp_operator::controller::metrics::Metrics::default();
    controller.observe_reconcile(
        Duration::from_millis(5),
        Some(&Error::Internal("sample".into())),
    );
    controller.child_written(ChildKind::Deployment);
    controller.set_findings(
        [Finding {
            rule: "MCP-SUPPLY-001".into(),
            severity: "high".into(),
            message: "sample".into(),
            enforced: false,
        }]
        .iter(),
    );
    let gateway = mcp_operator::gateway::metrics::Metrics::new();
    gateway.request("tools/call", decision::ALLOW);
    gateway.duration("tools/call", Duration::from_millis(1));
    gateway.upstream_error("timeout");

    let mut out = String::from(
        "# Metrics\n\n\
         Generated from the controller's and the gateway's registries (a test keeps this page in\n\
         sync). Every label has a bounded set of values: `method` is one of the MCP methods or\n\
         `other`; `decision` is `allow`, `deny`, `invalid`, `unauthenticated`, `rate_limited` or\n\
         `error`; `kind` is a child kind (controller) or an upstream failure kind (gateway);\n\
         `category` is `invalid_spec`, `build`, `api` or `internal`; `rule` and `severity` come\n\
         from the rule catalogue ([rules.md](rules.md)).\n",
    );
    out.push_str(&table(
        "Controller",
        "Served on `--metrics-addr` (default `:8080`) at `/metrics`, OpenMetrics text.",
        &controller.encode(),
    ));
    out.push_str(&table(
        "Gateway",
        "Served on the admin port (default 9090) at `/metrics`, OpenMetrics text.",
        &gateway.encode(),
    ));
    out
}

#[test]
fn the_metrics_reference_page_is_in_sync() {
    let expected = reference();
    common::assert_page_in_sync(
        "docs/metrics.md",
        &expected,
        "cargo test --test metrics_docs",
    );
    for metric in [
        "`mcp_operator_reconciles_total`",
        "`mcp_operator_findings`",
        "`mcp_gateway_requests_total`",
        "`mcp_gateway_active_sessions`",
    ] {
        assert!(expected.contains(metric), "{metric} is documented");
    }
    assert!(
        expected.contains("`rule`, `severity`"),
        "labels are listed: {expected}"
    );
}
