//! Logging and tracing for the long-running commands: a log filter from `RUST_LOG`, text or
//! JSON lines, and OpenTelemetry OTLP export switched on by the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` variable (the other `OTEL_*` variables apply as usual).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors in the cluster.
    Json,
}

/// The environment variable that switches OTLP export on.
pub const OTLP_ENDPOINT_VARIABLE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The target of the gateway's per-request spans. They exist for OpenTelemetry export only: log
/// lines do not carry them, since formatting a span's fields into every log context costs more
/// than the whole MCP check of a request.
pub const REQUEST_SPAN_TARGET: &str = "mcp_operator::gateway::request";
/// Default log filter when `RUST_LOG` is not set.
/// kube_client logs every failed request itself; the controller reports them with context instead.
const DEFAULT_FILTER: &str = "info,kube=warn,kube_client=off,hyper=warn";

/// Keeps the exporter alive; flushes spans on drop.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing traces failed: {e}");
        }
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid RUST_LOG filter: {0}")]
    Filter(String),
    #[error("cannot set up OTLP export to {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
    #[error("a logger is already installed: {0}")]
    Install(String),
}

/// Install the global subscriber for `service` (the OpenTelemetry `service.name`).
pub fn init(service: &'static str, format: LogFormat) -> Result<Telemetry, TelemetryError> {
    // The OTLP exporter's HTTP client uses rustls, which needs its provider before it is built.
    crate::install_tls_provider();
    let filter = || match std::env::var("RUST_LOG") {
        Ok(value) => EnvFilter::try_new(value).map_err(|e| TelemetryError::Filter(e.to_string())),
        Err(_) => Ok(EnvFilter::new(DEFAULT_FILTER)),
    };
    let not_request_span = tracing_subscriber::filter::filter_fn(|metadata| {
        !(metadata.is_span() && metadata.target() == REQUEST_SPAN_TARGET)
    });
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // Per-layer filters, so a span no layer wants (a request span without export) is never
    // built at all.
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> =
        vec![fmt.with_filter(filter()?.and(not_request_span)).boxed()];
    let provider = match std::env::var(OTLP_ENDPOINT_VARIABLE) {
        Ok(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(|e| TelemetryError::Exporter {
                    endpoint: endpoint.clone(),
                    message: e.to_string(),
                })?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        _ => None,
    };
    if let Some(provider) = &provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(service))
                .with_filter(filter()?)
                .boxed(),
        );
    }
    // W3C trace context in and out, whether or not spans are exported.
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| TelemetryError::Install(e.to_string()))?;
    Ok(Telemetry { provider })
}
