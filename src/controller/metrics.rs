//! Controller metrics, in the Prometheus text format. Every label has a bounded set of values.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `mcp_operator_reconciles_total` | counter | |
//! | `mcp_operator_reconcile_failures_total` | counter | `category`: invalid_spec, build, api, internal |
//! | `mcp_operator_reconcile_duration_seconds` | histogram | |
//! | `mcp_operator_child_writes_total` | counter | `kind`: the seven child kinds |
//! | `mcp_operator_status_writes_total` | counter | |
//! | `mcp_operator_events_total` | counter | |
//! | `mcp_operator_managed_servers` | gauge | |
//! | `mcp_operator_leader` | gauge | 1 while this replica holds the lease |
//! | `mcp_operator_findings` | gauge | `rule`: a catalogue rule id; `severity`: critical, high, medium, low |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::Error;
use super::children::ChildKind;
use crate::api::server::Finding;
use crate::governance::catalogue;

/// Metric names (without the `_total` suffix counters get on exposition).
pub const METRIC_RECONCILES: &str = "mcp_operator_reconciles";
pub const METRIC_RECONCILE_FAILURES: &str = "mcp_operator_reconcile_failures";
pub const METRIC_RECONCILE_DURATION: &str = "mcp_operator_reconcile_duration_seconds";
pub const METRIC_CHILD_WRITES: &str = "mcp_operator_child_writes";
pub const METRIC_STATUS_WRITES: &str = "mcp_operator_status_writes";
pub const METRIC_EVENTS: &str = "mcp_operator_events";
pub const METRIC_MANAGED_SERVERS: &str = "mcp_operator_managed_servers";
pub const METRIC_LEADER: &str = "mcp_operator_leader";
pub const METRIC_FINDINGS: &str = "mcp_operator_findings";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabel {
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// A catalogue rule and its severity: both from the catalogue, so the label set is bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FindingLabel {
    rule: &'static str,
    severity: &'static str,
}

/// The controller's metrics and their registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Counter,
    failures: Family<CategoryLabel, Counter>,
    duration: Histogram,
    child_writes: Family<KindLabel, Counter>,
    status_writes: Counter,
    events: Counter,
    pub managed_servers: Gauge,
    pub leader: Gauge,
    findings: Family<FindingLabel, Gauge>,
    /// Completed reconciles, for waiting on them (tests, benchmarks) without polling.
    reconciled: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Counter::default();
        let failures = Family::<CategoryLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let child_writes = Family::<KindLabel, Counter>::default();
        let status_writes = Counter::default();
        let events = Counter::default();
        let managed_servers = Gauge::default();
        let leader = Gauge::default();
        let findings = Family::<FindingLabel, Gauge>::default();
        registry.register(
            METRIC_RECONCILES,
            "Reconciles of MCPServers",
            reconciles.clone(),
        );
        registry.register(
            METRIC_RECONCILE_FAILURES,
            "Failed reconciles, by error category",
            failures.clone(),
        );
        registry.register(
            METRIC_RECONCILE_DURATION,
            "Duration of one reconcile",
            duration.clone(),
        );
        registry.register(
            METRIC_CHILD_WRITES,
            "Server-side applies and deletes of children, by kind",
            child_writes.clone(),
        );
        registry.register(
            METRIC_STATUS_WRITES,
            "MCPServer status writes",
            status_writes.clone(),
        );
        registry.register(METRIC_EVENTS, "Kubernetes Events published", events.clone());
        registry.register(
            METRIC_MANAGED_SERVERS,
            "MCPServers in the controller's cache",
            managed_servers.clone(),
        );
        registry.register(
            METRIC_LEADER,
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        registry.register(
            METRIC_FINDINGS,
            "Governance findings in the status of the cached MCPServers, by rule and severity",
            findings.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reconciles,
            failures,
            duration,
            child_writes,
            status_writes,
            events,
            managed_servers,
            leader,
            findings,
            reconciled: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl Metrics {
    pub fn observe_reconcile(&self, elapsed: Duration, error: Option<&Error>) {
        self.reconciles.inc();
        self.reconciled.send_modify(|n| *n += 1);
        self.duration.observe(elapsed.as_secs_f64());
        if let Some(error) = error {
            self.failures
                .get_or_create(&CategoryLabel {
                    category: error.category(),
                })
                .inc();
        }
    }

    pub fn child_written(&self, kind: ChildKind) {
        self.child_writes
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    pub fn status_written(&self) {
        self.status_writes.inc();
    }

    pub fn event_published(&self) {
        self.events.inc();
    }

    /// Set the findings gauges from the status findings of every cached server; rule ids not
    /// in the catalogue are not counted (they cannot come from this controller).
    pub fn set_findings<'a>(&self, findings: impl Iterator<Item = &'a Finding>) {
        let mut counts: BTreeMap<(&'static str, &'static str), i64> = BTreeMap::new();
        for finding in findings {
            if let Some(rule) = catalogue::rule(&finding.rule) {
                *counts.entry((rule.id, rule.severity.as_str())).or_default() += 1;
            }
        }
        self.findings.clear();
        for ((rule, severity), count) in counts {
            self.findings
                .get_or_create(&FindingLabel { rule, severity })
                .set(count);
        }
    }

    /// A receiver of the number of completed reconciles.
    pub fn reconciles(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reconciled.subscribe()
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &str) -> Finding {
        Finding {
            rule: rule.into(),
            severity: "ignored: the catalogue's severity is used".into(),
            message: String::new(),
            enforced: false,
        }
    }

    #[test]
    fn findings_gauges_count_catalogue_rules_by_severity_and_reset() {
        let metrics = Metrics::default();
        let findings = [
            finding("MCP-SUPPLY-001"),
            finding("MCP-SUPPLY-001"),
            finding("MCP-AUTH-001"),
            finding("MCP-MADE-UP-999"),
        ];
        metrics.set_findings(findings.iter());
        let text = metrics.encode();
        assert!(
            text.contains(r#"mcp_operator_findings{rule="MCP-SUPPLY-001",severity="high"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"mcp_operator_findings{rule="MCP-AUTH-001",severity="critical"} 1"#),
            "{text}"
        );
        assert!(!text.contains("MADE-UP"), "{text}");
        metrics.set_findings(findings[2..3].iter());
        let text = metrics.encode();
        assert!(
            !text.contains("MCP-SUPPLY-001"),
            "fixed findings disappear: {text}"
        );
    }
}
