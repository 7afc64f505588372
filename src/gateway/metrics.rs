//! Gateway metrics, in the Prometheus text format on the admin port. Labels have bounded values.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `mcp_gateway_requests_total` | counter | `method`: an MCP method or `other`; `decision`: allow, deny, invalid, unauthenticated, rate_limited, error |
//! | `mcp_gateway_request_duration_seconds` | histogram | `method` |
//! | `mcp_gateway_upstream_errors_total` | counter | `kind`: unreachable, timeout, invalid, not_running |
//! | `mcp_gateway_active_sessions` | gauge | |
//! | `mcp_gateway_busy_poll_seconds_total` | counter | |

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Metric names (counters get `_total` on exposition).
pub const METRIC_REQUESTS: &str = "mcp_gateway_requests";
pub const METRIC_REQUEST_DURATION: &str = "mcp_gateway_request_duration_seconds";
pub const METRIC_UPSTREAM_ERRORS: &str = "mcp_gateway_upstream_errors";
pub const METRIC_ACTIVE_SESSIONS: &str = "mcp_gateway_active_sessions";
pub const METRIC_BUSY_POLL: &str = "mcp_gateway_busy_poll_seconds";

/// Seconds, as a counter.
pub type SecondsCounter = Counter<f64, std::sync::atomic::AtomicU64>;

/// Decisions, as audit values and metric labels.
pub mod decision {
    /// Forwarded.
    pub const ALLOW: &str = "allow";
    /// Refused by an access rule.
    pub const DENY: &str = "deny";
    /// Refused as malformed or invalid.
    pub const INVALID: &str = "invalid";
    /// Refused for lack of a valid token.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// Refused by a rate limit.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The server could not be asked.
    pub const ERROR: &str = "error";
}

/// Methods reported by name; any other is `other`, so a client cannot grow the label set.
const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
    "subscriptions/listen",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// The bounded label value for a method.
pub fn method_label(method: &str) -> &'static str {
    label_at(method_index(method))
}

/// The `method` label of a [`method_index`].
fn label_at(index: usize) -> &'static str {
    KNOWN_METHODS.get(index).copied().unwrap_or(OTHER_METHOD)
}

/// The `method` label of every method not in [`KNOWN_METHODS`].
const OTHER_METHOD: &str = "other";

/// Position in [`KNOWN_METHODS`]; `KNOWN_METHODS.len()` stands for [`OTHER_METHOD`].
fn method_index(method: &str) -> usize {
    KNOWN_METHODS
        .iter()
        .position(|m| *m == method)
        .unwrap_or(KNOWN_METHODS.len())
}

/// Every `decision` label, in the order of the cached counters.
const DECISIONS: [&str; 6] = [
    decision::ALLOW,
    decision::DENY,
    decision::INVALID,
    decision::UNAUTHENTICATED,
    decision::RATE_LIMITED,
    decision::ERROR,
];

/// Handles to the series a request updates, filled on first use. A family lookup takes a lock
/// and hashes the labels; these are shared counters, so a request only does the increment.
struct Handles {
    requests: Vec<[OnceLock<Counter>; DECISIONS.len()]>,
    durations: Vec<OnceLock<Histogram>>,
}

impl Handles {
    fn new() -> Self {
        let methods = KNOWN_METHODS.len() + 1;
        Self {
            requests: (0..methods).map(|_| Default::default()).collect(),
            durations: (0..methods).map(|_| OnceLock::new()).collect(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// The gateway's metrics and their registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<MethodLabel, Histogram>,
    upstream_errors: Family<KindLabel, Counter>,
    /// Sessions currently open.
    pub active_sessions: Gauge,
    /// Time serving threads kept polling instead of sleeping (see [`super::busy_poll`]).
    pub busy_poll: SecondsCounter,
    handles: Arc<Handles>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<MethodLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let upstream_errors = Family::<KindLabel, Counter>::default();
        let active_sessions = Gauge::default();
        let busy_poll = SecondsCounter::default();
        registry.register(
            METRIC_REQUESTS,
            "JSON-RPC messages by method and decision",
            requests.clone(),
        );
        registry.register(
            METRIC_REQUEST_DURATION,
            "Time from request to the end of the answer",
            duration.clone(),
        );
        registry.register(
            METRIC_UPSTREAM_ERRORS,
            "Failures to get an answer from the MCP server",
            upstream_errors.clone(),
        );
        registry.register(
            METRIC_ACTIVE_SESSIONS,
            "Open MCP sessions",
            active_sessions.clone(),
        );
        registry.register(
            METRIC_BUSY_POLL,
            "Time serving threads spent polling instead of sleeping, work done meanwhile included",
            busy_poll.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            duration,
            upstream_errors,
            active_sessions,
            busy_poll,
            handles: Arc::new(Handles::new()),
        }
    }

    /// Count one message.
    pub fn request(&self, method: &str, decision: &'static str) {
        let method = method_index(method);
        let labels = || RequestLabels {
            method: label_at(method),
            decision,
        };
        let slot = DECISIONS
            .iter()
            .position(|d| *d == decision)
            .and_then(|at| self.handles.requests.get(method)?.get(at));
        match slot {
            Some(slot) => {
                slot.get_or_init(|| self.requests.get_or_create(&labels()).clone())
                    .inc();
            }
            None => {
                self.requests.get_or_create(&labels()).inc();
            }
        }
    }

    /// Observe how long a request took.
    pub fn duration(&self, method: &str, elapsed: Duration) {
        let method = method_index(method);
        let labels = MethodLabel {
            method: label_at(method),
        };
        let seconds = elapsed.as_secs_f64();
        match self.handles.durations.get(method) {
            Some(slot) => slot
                .get_or_init(|| self.duration.get_or_create(&labels).clone())
                .observe(seconds),
            None => self.duration.get_or_create(&labels).observe(seconds),
        }
    }

    /// Count an upstream failure.
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        let metrics = Metrics::new();
        metrics.request("tools/call", decision::ALLOW);
        metrics.request("x/y", decision::INVALID);
        metrics.request("z/w", decision::INVALID);
        let text = metrics.encode();
        assert!(
            text.contains(r#"mcp_gateway_requests_total{method="tools/call",decision="allow"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"mcp_gateway_requests_total{method="other",decision="invalid"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn cached_series_keep_counting_into_the_exposition() {
        let metrics = Metrics::new();
        let clone = metrics.clone();
        for _ in 0..2 {
            metrics.request("tools/call", decision::DENY);
            clone.request("tools/call", decision::DENY);
            metrics.duration("tools/call", Duration::from_millis(2));
        }
        metrics.request("tools/call", "a decision without a cached slot");
        let text = metrics.encode();
        for line in [
            r#"mcp_gateway_requests_total{method="tools/call",decision="deny"} 4"#,
            r#"mcp_gateway_requests_total{method="tools/call",decision="a decision without a cached slot"} 1"#,
            r#"mcp_gateway_request_duration_seconds_count{method="tools/call"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(
            !text.contains(r#"decision="allow""#),
            "unused series stay out: {text}"
        );
    }
}
