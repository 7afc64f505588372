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

/// Metric names (without the `_total` suffix counters get on exposition).
pub const METRIC_RECONCILES: &str = "mcp_operator_reconciles";
pub const METRIC_RECONCILE_FAILURES: &str = "mcp_operator_reconcile_failures";
pub const METRIC_RECONCILE_DURATION: &str = "mcp_operator_reconcile_duration_seconds";
pub const METRIC_CHILD_WRITES: &str = "mcp_operator_child_writes";
pub const METRIC_STATUS_WRITES: &str = "mcp_operator_status_writes";
pub const METRIC_EVENTS: &str = "mcp_operator_events";
pub const METRIC_MANAGED_SERVERS: &str = "mcp_operator_managed_servers";
pub const METRIC_LEADER: &str = "mcp_operator_leader";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabel {
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
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
