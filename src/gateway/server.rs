//! The HTTP layer: MCP endpoint (POST/GET/DELETE on one path), protected-resource metadata, and
//! the admin endpoint. Each handler runs the pure checks in order, forwards, and rewrites only
//! what governance needs (filtered `tools/list`, registered sessions).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt as _;
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::access::{AccessPolicy, Principal};
use super::audit::{AuditLog, AuditRecord, Unhashed};
use super::auth::{AuthError, Authenticator, PROTECTED_RESOURCE_PATH};
use super::inventory::{Inventory, ToolRecord, filter_tools_result};
use super::limits::RateLimits;
use super::metrics::{Metrics, decision};
use super::prompts::ManagedPrompts;
use super::protocol::{
    self, Era, HEADER_LAST_EVENT_ID, HEADER_METHOD, HEADER_NAME, HEADER_PROTOCOL_VERSION,
    HEADER_SESSION_ID, HEADER_TRACEPARENT, HEADER_TRACESTATE, MEDIA_JSON, MEDIA_SSE, Message,
    Rejection, RequestId, codes,
};
use super::sessions::Sessions;
use super::upstream::{EventStream, Forward, Reply, ReplyBody, SseEvent, Upstream, UpstreamError};
use crate::api::gateway_config::GatewayTools;
use crate::builders::gateway::sha256_hex;
use crate::governance::catalogue::PROMPT_ARGUMENTS;
use crate::telemetry::REQUEST_SPAN_TARGET;

/// Whether the upstream has been seen to issue session ids: unknown, yes, no.
const SESSIONS_UNKNOWN: u8 = 0;
const SESSIONS_ISSUED: u8 = 1;
const SESSIONS_NOT_ISSUED: u8 = 2;
/// Audit `decidedBy` of a call to a tool the tool checks quarantined.
const QUARANTINE_DECIDER: &str = "quarantine";
/// Audit `decidedBy` of a managed prompt the gateway answered.
const MANAGED_PROMPT_DECIDER: &str = "managedPrompt";

/// Everything the handlers share.
pub struct Gateway {
    pub(super) server: String,
    pub(super) path: String,
    pub(super) upstream: Upstream,
    pub(super) auth: Option<Authenticator>,
    pub(super) policy: AccessPolicy,
    pub(super) limits: RateLimits,
    pub(super) sessions: Sessions,
    pub(super) inventory: RwLock<Inventory>,
    pub(super) inventory_refresh: tokio::sync::Mutex<()>,
    pub(super) tools_changed: Arc<Notify>,
    pub(super) audit: Arc<AuditLog>,
    pub(super) metrics: Metrics,
    pub(super) max_body: usize,
    pub(super) allowed_origins: Vec<String>,
    /// Pinning, scanning and quarantine settings of the tool checks.
    pub(super) tool_checks: GatewayTools,
    /// Prompts served by the gateway itself (swapped when the configuration file's bundle
    /// changes).
    pub(super) prompts: std::sync::RwLock<Arc<ManagedPrompts>>,
    /// Whether answers about prompts are rewritten: managed prompts exist, or may appear when
    /// the configuration file is reloaded.
    pub(super) manages_prompts: bool,
    /// Fires when the managed prompts changed (each open GET stream gets list_changed).
    pub(super) prompts_changed: tokio::sync::broadcast::Sender<()>,
    /// Upstream prompts a managed prompt hides (reported once each, and on the admin port).
    pub(super) prompt_clashes: std::sync::Mutex<std::collections::BTreeSet<String>>,
    pub(super) upstream_sessions: AtomicU8,
    pub(super) upstream_ready: AtomicBool,
}

/// The client-facing service, served by hyper directly: a POST to the MCP path goes straight to
/// its handler, everything else through [`router`]. The router's layers (path match, method
/// match, extensions, boxed clones) were about nine allocations and 2 KiB of copies on every
/// `tools/call`; axum's own serving added a boxed body and a clone of this service per request.
#[derive(Clone)]
pub struct ClientService {
    gateway: Arc<Gateway>,
    /// [`Gateway::path`], `/` when empty, as the router matches it.
    path: Arc<str>,
    router: Router,
}

impl ClientService {
    /// The service for `gateway`.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self {
            path: mcp_path(&gateway).into(),
            router: router(gateway.clone()),
            gateway,
        }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for ClientService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        if request.method() == axum::http::Method::POST && request.uri().path() == &*self.path {
            let gateway = self.gateway.clone();
            return Box::pin(async move { Ok(handle_post(gateway, request).await) });
        }
        Box::pin(tower::ServiceExt::oneshot(
            self.router.clone(),
            request.map(Body::new),
        ))
    }
}

fn mcp_path(gateway: &Gateway) -> String {
    if gateway.path.is_empty() {
        "/".to_owned()
    } else {
        gateway.path.clone()
    }
}

/// Everything on the client port but a POST to the MCP path ([`ClientService`] takes that):
/// GET and DELETE on the MCP path, and the protected-resource metadata.
fn router(gateway: Arc<Gateway>) -> Router {
    let path = mcp_path(&gateway);
    let mut router = Router::new().route(
        &path,
        axum::routing::get(get)
            .delete(delete)
            .fallback(method_not_allowed),
    );
    router = router.route(PROTECTED_RESOURCE_PATH, axum::routing::get(metadata));
    if path != "/" {
        router = router.route(
            &format!("{PROTECTED_RESOURCE_PATH}{path}"),
            axum::routing::get(metadata),
        );
    }
    router.with_state(gateway)
}

/// Health, readiness, metrics and the tool inventory.
pub fn admin_router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(ready))
        .route("/metrics", axum::routing::get(metrics))
        .route("/inventory", axum::routing::get(inventory))
        .with_state(gateway)
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET, POST, DELETE")],
    )
        .into_response()
}

async fn ready(State(gateway): State<Arc<Gateway>>) -> Response {
    let process_up = match &gateway.upstream {
        Upstream::Stdio(stdio) => stdio.is_running(),
        Upstream::Http(_) => true,
    };
    if process_up && gateway.upstream_ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the MCP server does not answer yet",
        )
            .into_response()
    }
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gateway.metrics.encode(),
    )
        .into_response()
}

async fn inventory(State(gateway): State<Arc<Gateway>>) -> Response {
    let body = match gateway.inventory.read() {
        Ok(inventory) => serde_json::to_vec(&json!({
            "server": gateway.server,
            "inventory": inventory.view(&gateway.policy),
            "prompts": {
                "managed": gateway.prompts().entries(),
                "hiddenServerPrompts": *gateway.prompt_clashes.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            },
        })),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    match body {
        Ok(body) => ([(header::CONTENT_TYPE, MEDIA_JSON)], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn metadata(State(gateway): State<Arc<Gateway>>) -> Response {
    match &gateway.auth {
        Some(auth) => axum::Json(auth.metadata().clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An answer that carries a JSON-RPC error (or only a status).
fn reject(rejection: &Rejection, id: Option<&RequestId>) -> Response {
    match rejection.code {
        Some(code) => (
            rejection.status,
            [(header::CONTENT_TYPE, MEDIA_JSON)],
            protocol::error_response(id, code, &rejection.message, rejection.data.as_ref())
                .to_string(),
        )
            .into_response(),
        None => (rejection.status, rejection.message.clone()).into_response(),
    }
}

fn auth_failure(gateway: &Gateway, error: &AuthError) -> Response {
    let (metadata_url, scopes) = match &gateway.auth {
        Some(auth) => (
            auth.identity().metadata_url.as_str(),
            auth.required_scopes().to_vec(),
        ),
        None => ("", Vec::new()),
    };
    let challenge = error.challenge(metadata_url, &scopes);
    let mut response = (error.status(), error.to_string()).into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

impl Gateway {
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or_default();
        let same_resource = self
            .auth
            .as_ref()
            .and_then(|a| url::Url::parse(&a.identity().resource).ok())
            .is_some_and(|u| u.origin().ascii_serialization() == origin);
        if same_resource || self.allowed_origins.iter().any(|o| o == origin) {
            Ok(())
        } else {
            Err(Rejection::http(
                StatusCode::FORBIDDEN,
                format!("origin {origin:?} is not allowed"),
            ))
        }
    }

    async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Arc<Principal>, Response> {
        match &self.auth {
            None => Ok(Arc::new(Principal::anonymous())),
            Some(auth) => auth
                .authenticate(headers, query)
                .await
                .map_err(|e| auth_failure(self, &e)),
        }
    }

    /// The managed prompts now.
    pub(super) fn prompts(&self) -> Arc<ManagedPrompts> {
        self.prompts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The upstream's definition of a tool; refreshes the inventory once if it is not known.
    async fn tool(&self, name: &str) -> Option<Arc<ToolRecord>> {
        let known = |g: &Self| {
            g.inventory
                .read()
                .ok()
                .and_then(|inv| inv.tools.get(name).cloned())
        };
        if let Some(tool) = known(self) {
            return Some(tool);
        }
        self.refresh_inventory().await;
        known(self)
    }

    /// Fetch the upstream's tool list now (one fetch at a time).
    pub(super) async fn refresh_inventory(&self) -> bool {
        let _one_at_a_time = self.inventory_refresh.lock().await;
        match self.upstream.fetch_inventory().await {
            Ok(found) => {
                if let Ok(mut inventory) = self.inventory.write() {
                    inventory.server_info = found.server_info;
                    inventory.protocol_version = found.protocol_version;
                    inventory.replace_tools(found.tools, &self.tool_checks);
                }
                self.upstream_ready.store(true, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing the MCP server's tools failed");
                self.metrics.upstream_error(e.kind());
                if let Ok(mut inventory) = self.inventory.write() {
                    inventory.last_error = Some(e.to_string());
                }
                self.upstream_ready.store(false, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Headers passed to the server: never `Authorization`, cookies or hop-by-hop headers.
fn forwarded_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (name, value) in headers {
        if name == header::ACCEPT
            || name == HEADER_PROTOCOL_VERSION
            || name == HEADER_METHOD
            || name == HEADER_NAME
            || name == HEADER_LAST_EVENT_ID
            || name.as_str().starts_with("mcp-param-")
        {
            out.push((name.clone(), value.clone()));
        }
    }
    out
}

/// Trace context for the upstream: this request's span when tracing exports, else the caller's.
fn trace_headers(span: &tracing::Span, incoming: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    if !span.is_disabled() {
        let mut carrier = std::collections::HashMap::new();
        let context = span.context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut carrier);
        });
        let injected: Vec<_> = carrier
            .into_iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::try_from(k).ok()?,
                    HeaderValue::try_from(v).ok()?,
                ))
            })
            .collect();
        if !injected.is_empty() {
            return injected;
        }
    }
    [HEADER_TRACEPARENT, HEADER_TRACESTATE]
        .into_iter()
        .filter_map(|name| {
            let value = incoming.get(&name)?;
            Some((name, value.clone()))
        })
        .collect()
}

/// The trace id inside a `traceparent` (`version-traceid-parent-flags`).
fn trace_id(trace: &[(HeaderName, HeaderValue)]) -> Option<String> {
    let (_, parent) = trace.iter().find(|(name, _)| name == HEADER_TRACEPARENT)?;
    parent.to_str().ok()?.split('-').nth(1).map(str::to_owned)
}

fn parent_context(headers: &HeaderMap) -> opentelemetry::Context {
    struct Extractor<'a>(&'a HeaderMap);
    impl opentelemetry::propagation::Extractor for Extractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(HeaderName::as_str).collect()
        }
    }
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extractor(headers)))
}

/// The audit record of a request in flight; written once, when the answer ends or fails.
struct Audit {
    gateway: Arc<Gateway>,
    record: Option<AuditRecord>,
    /// Hashed into `record` when the audit log chains it, off the request's path; its
    /// `arguments` are the request's, moved out of the message, for every request.
    unhashed: Unhashed,
    started: Instant,
    method: String,
}

impl Audit {
    fn finish(&mut self, decision: &'static str, decided_by: Option<String>) {
        let elapsed = self.started.elapsed();
        self.gateway.metrics.request(&self.method, decision);
        self.gateway.metrics.duration(&self.method, elapsed);
        if let Some(mut record) = self.record.take() {
            record.decision = decision;
            if let Some(by) = decided_by {
                record.decided_by = by;
            }
            record.latency_ms = elapsed.as_secs_f64() * 1000.0;
            self.gateway
                .audit
                .append_unhashed(record, std::mem::take(&mut self.unhashed));
        }
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        if self.record.is_some() {
            self.finish(decision::ERROR, Some("client went away".into()));
        }
    }
}

/// An answer sent before the request body was read: the connection cannot carry another
/// request (the unread body is still on it), so tell the client not to reuse it.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn is_audited(method: &str) -> bool {
    matches!(method, "tools/call" | "prompts/get" | "resources/read")
}

async fn handle_post(gateway: Arc<Gateway>, request: hyper::Request<Incoming>) -> Response {
    let _activity = super::busy_poll::Activity::begin();
    let started = Instant::now();
    let (parts, request_body) = request.into_parts();
    let headers = parts.headers;
    if let Err(r) = gateway.check_origin(&headers) {
        gateway.metrics.request("", decision::INVALID);
        return closing(reject(&r, None));
    }
    let principal = match gateway.authenticate(&headers, parts.uri.query()).await {
        Ok(p) => p,
        Err(response) => {
            gateway.metrics.request("", decision::UNAUTHENTICATED);
            return closing(response);
        }
    };
    let invalid = |r: Rejection, id: Option<&RequestId>, method: &str| {
        gateway.metrics.request(method, decision::INVALID);
        reject(&r, id)
    };
    if !protocol::is_json_content(&headers) {
        return closing(invalid(
            Rejection::http(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ),
            None,
            "",
        ));
    }
    let (accepts_json, accepts_sse) = protocol::accepts(&headers);
    if !accepts_json && !accepts_sse {
        return closing(invalid(
            Rejection::http(
                StatusCode::NOT_ACCEPTABLE,
                "Accept must list application/json and text/event-stream",
            ),
            None,
            "",
        ));
    }
    let era = match protocol::era(&headers) {
        Ok(era) => era,
        Err(r) => return closing(invalid(r, None, "")),
    };
    let too_large = || {
        Rejection::rpc(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::INVALID_REQUEST,
            format!("the request body is larger than {} bytes", gateway.max_body),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > gateway.max_body as u64) {
        return closing(invalid(too_large(), None, ""));
    }
    let limited = http_body_util::Limited::new(request_body, gateway.max_body);
    let body = match http_body_util::BodyExt::collect(limited).await {
        Ok(body) => body.to_bytes(),
        Err(_) => return closing(invalid(too_large(), None, "")),
    };
    let mut message = match protocol::parse_message(&body) {
        Ok(m) => m,
        Err(r) => return invalid(r, None, ""),
    };
    let method = message.method().unwrap_or("").to_owned();
    let id = match &message {
        Message::Request { id, .. } => Some(id.clone()),
        _ => None,
    };
    let session_id = headers
        .get(HEADER_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let version = match &era {
        Era::Sessions { version } | Era::Stateless { version } => version.clone(),
    };
    // The session's hash, from the session table.
    let mut session_hash = None;
    match &era {
        Era::Stateless { version } => {
            if let Err(r) = protocol::check_stateless(&headers, version, &message) {
                return invalid(r, id.as_ref(), &method);
            }
        }
        Era::Sessions { .. } if method == "initialize" => {}
        Era::Sessions { .. } => match &session_id {
            Some(session) => match gateway.sessions.touch(session, principal.key()) {
                Ok(hashed) => session_hash = Some(hashed),
                Err(_) => {
                    return invalid(
                        Rejection::http(
                            StatusCode::NOT_FOUND,
                            "unknown or ended session; initialize again",
                        ),
                        id.as_ref(),
                        &method,
                    );
                }
            },
            None if gateway.upstream_sessions.load(Ordering::Relaxed) == SESSIONS_ISSUED => {
                return invalid(
                    Rejection::http(StatusCode::BAD_REQUEST, "Mcp-Session-Id header is required"),
                    id.as_ref(),
                    &method,
                );
            }
            None => {}
        },
    }

    let target = message.named().map(str::to_owned);
    // Field values are computed only when a layer (OTLP export) records the span.
    let span = tracing::info_span!(
        target: REQUEST_SPAN_TARGET,
        "mcp.request",
        otel.name = %match &target {
            Some(t) => format!("{method} {t}"),
            None => method.clone(),
        },
        otel.kind = "server",
        mcp.method.name = %method,
        gen_ai.tool.name = (method == "tools/call").then_some(target.as_deref()).flatten(),
        mcp.session.id = tracing::field::Empty,
        mcp.protocol.version = %version,
        jsonrpc.request.id = id.as_ref().map(tracing::field::display),
        mcp.decision = tracing::field::Empty,
        enduser.id = %principal.subject,
    );
    if !span.is_disabled() {
        let _ = span.set_parent(parent_context(&headers));
    }
    let is_request = id.is_some();
    let audited = is_request && is_audited(&method);
    if let Some(session) = session_id.as_deref().filter(|_| !span.is_disabled()) {
        match &session_hash {
            Some(hashed) => span.record("mcp.session.id", &**hashed),
            None => span.record("mcp.session.id", sha256_hex(session.as_bytes()).as_str()),
        };
    }
    // Computed once: the upstream gets it, and the audit line names its trace.
    let trace = trace_headers(&span, &headers);
    let request_span = span.clone();
    async move {
        let mut audit = Audit {
            gateway: gateway.clone(),
            record: audited.then(|| AuditRecord {
                time: SystemTime::now(),
                server: gateway.server.clone(),
                method: method.clone(),
                subject: principal.subject.clone(),
                client_id: principal.client_id.clone(),
                session: None,
                target: target.clone(),
                tool_sha256: None,
                arguments_sha256: None,
                decision: decision::ALLOW,
                decided_by: String::new(),
                latency_ms: 0.0,
                trace_id: trace_id(&trace),
            }),
            unhashed: Unhashed {
                session_id: if audited && session_hash.is_none() {
                    session_id.clone()
                } else {
                    None
                },
                session_hash: session_hash.filter(|_| audited),
                // Taken, not copied, whether or not the call is audited: validation and prompt
                // rendering read them here, and only a stdio server needs them back in the
                // message.
                arguments: message.take_arguments(),
            },
            started,
            method: method.clone(),
        };
        let refuse = |audit: &mut Audit,
                      status: StatusCode,
                      code: i64,
                      text: &str,
                      data: Option<Value>,
                      decided: &'static str,
                      by: String| {
            span.record("mcp.decision", decided);
            audit.finish(decided, Some(by));
            reject(
                &Rejection {
                    status,
                    code: Some(code),
                    message: text.to_owned(),
                    data,
                },
                id.as_ref(),
            )
        };

        let tool_name = if method == "tools/call" && is_request {
            target.clone()
        } else {
            None
        };
        if let Err(limited) = gateway.limits.check(principal.key(), tool_name.as_deref()) {
            let mut response = refuse(
                &mut audit,
                StatusCode::TOO_MANY_REQUESTS,
                codes::RATE_LIMITED,
                &format!(
                    "Rate limit exceeded; retry after {} s",
                    limited.retry_after_seconds
                ),
                Some(json!({ "retryAfterSeconds": limited.retry_after_seconds })),
                decision::RATE_LIMITED,
                "limits.rateLimit".into(),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(limited.retry_after_seconds),
            );
            return response;
        }

        let mut decided_by = String::from("forwarded");
        if method == "tools/call" && is_request {
            let Some(name) = tool_name.as_deref() else {
                return refuse(
                    &mut audit,
                    StatusCode::OK,
                    codes::INVALID_PARAMS,
                    "tools/call needs params.name (a string)",
                    None,
                    decision::INVALID,
                    "params".into(),
                );
            };
            let access = gateway.policy.decide(&principal, name);
            let tool = if access.hidden {
                None
            } else {
                gateway.tool(name).await
            };
            let quarantined = tool.as_ref().is_some_and(|t| t.hidden);
            let tool = tool.filter(|t| !t.hidden);
            let Some(tool) = tool else {
                return refuse(
                    &mut audit,
                    StatusCode::OK,
                    codes::INVALID_PARAMS,
                    &format!("Unknown tool: {name}"),
                    None,
                    decision::INVALID,
                    if access.hidden {
                        access.decided_by
                    } else if quarantined {
                        QUARANTINE_DECIDER.into()
                    } else {
                        "inventory".into()
                    },
                );
            };
            if let Some(record) = audit.record.as_mut() {
                record.tool_sha256 = Some(tool.sha256.clone());
            }
            if !access.allowed {
                return refuse(
                    &mut audit,
                    StatusCode::OK,
                    codes::ACCESS_DENIED,
                    &format!("You are not allowed to call the tool {name}"),
                    None,
                    decision::DENY,
                    access.decided_by,
                );
            }
            if let Err(wrong) =
                tool.check_arguments(audit.unhashed.arguments.as_ref())
            {
                return refuse(
                    &mut audit,
                    StatusCode::OK,
                    codes::INVALID_PARAMS,
                    &format!("Invalid arguments for tool {name}: {wrong}"),
                    Some(json!({ "argument": wrong.pointer })),
                    decision::INVALID,
                    "inputSchema".into(),
                );
            }
            decided_by = access.decided_by;
        }
        let bundle = (method == "prompts/get" && is_request).then(|| gateway.prompts());
        if let Some(managed) = bundle
            .as_deref()
            .zip(target.as_deref())
            .and_then(|(bundle, name)| bundle.get(name))
        {
            let rendered = match managed.render(audit.unhashed.arguments.as_ref()) {
                Ok(rendered) => rendered,
                Err(wrong) => {
                    return refuse(
                        &mut audit,
                        StatusCode::OK,
                        codes::INVALID_PARAMS,
                        &wrong.to_string(),
                        None,
                        decision::INVALID,
                        PROMPT_ARGUMENTS.into(),
                    );
                }
            };
            if let Some(record) = audit.record.as_mut() {
                record.tool_sha256 = Some(rendered.content_sha256.clone());
            }
            if !rendered.flags.is_empty() {
                let seen: Vec<String> = rendered.flags.iter().map(|f| format!("{}: {}", f.rule, f.message())).collect();
                tracing::warn!(prompt = %managed.prompt.name, version = %managed.prompt.version, findings = ?seen, "a rendered managed prompt trips the poisoning checks");
                if gateway.tool_checks.quarantine {
                    return refuse(
                        &mut audit,
                        StatusCode::OK,
                        codes::ACCESS_DENIED,
                        &format!(
                            "The prompt {} is withheld: its rendered text fails the prompt checks",
                            managed.prompt.name
                        ),
                        None,
                        decision::DENY,
                        PROMPT_ARGUMENTS.into(),
                    );
                }
            }
            span.record("mcp.decision", decision::ALLOW);
            audit.finish(decision::ALLOW, Some(MANAGED_PROMPT_DECIDER.into()));
            let mut result = rendered.result;
            if matches!(era, Era::Stateless { .. }) {
                // 2026-07-28: every result says whether it is complete.
                result[protocol::RESULT_TYPE] = json!(protocol::RESULT_TYPE_COMPLETE);
            }
            let answer = match id.as_ref() {
                Some(id) => protocol::result_response(id, result),
                None => Value::Null,
            };
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, MEDIA_JSON)],
                answer.to_string(),
            )
                .into_response();
        }
        span.record("mcp.decision", decision::ALLOW);
        let first_page = message.params().and_then(|p| p.get("cursor")).is_none();

        if gateway.upstream.sends_parsed_message()
            && let Some(arguments) = &audit.unhashed.arguments
        {
            message.put_arguments(arguments.clone());
        }
        let mut forward_headers = forwarded_headers(&headers);
        forward_headers.extend(trace);
        let reply = gateway
            .upstream
            .post(Forward {
                body,
                message,
                session_id: session_id.clone(),
                headers: forward_headers,
                accepts_sse,
            })
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                gateway.metrics.upstream_error(e.kind());
                let status = match e {
                    UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::BAD_GATEWAY,
                };
                if !is_request {
                    audit.finish(decision::ERROR, None);
                    return (status, e.to_string()).into_response();
                }
                return refuse(
                    &mut audit,
                    status,
                    e.code(),
                    &e.to_string(),
                    None,
                    decision::ERROR,
                    "upstream".into(),
                );
            }
        };
        if method == "initialize" && reply.status.is_success() {
            match &reply.session_id {
                Some(session) => {
                    gateway
                        .upstream_sessions
                        .store(SESSIONS_ISSUED, Ordering::Relaxed);
                    let open = gateway.sessions.open(session, principal.key());
                    gateway.metrics.active_sessions.set(open as i64);
                }
                None => {
                    let _ = gateway.upstream_sessions.compare_exchange(
                        SESSIONS_UNKNOWN,
                        SESSIONS_NOT_ISSUED,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            }
        }
        if reply.status == StatusCode::NOT_FOUND
            && let Some(session) = &session_id
        {
            let open = gateway.sessions.close(session);
            gateway.metrics.active_sessions.set(open as i64);
        }
        relay(
            gateway,
            reply,
            Relay {
                method,
                id,
                principal,
                audit,
                decided_by,
                first_page,
            },
        )
    }
    .instrument(request_span)
    .await
}

/// What the relay needs to rewrite and account for the answer.
struct Relay {
    method: String,
    id: Option<RequestId>,
    principal: Arc<Principal>,
    audit: Audit,
    decided_by: String,
    /// The request asked for the first page of a list (no cursor).
    first_page: bool,
}

impl Relay {
    /// Look at one message from the server: filter the tools list meant for this request, note
    /// list changes, and close the audit record when the response passes.
    fn inspect(&mut self, gateway: &Gateway, message: &mut Value) -> bool {
        let is_response = self.observe(
            gateway,
            message.get("method").and_then(Value::as_str),
            message.get("method").is_some(),
            message.get("id"),
            message.get("error").is_some(),
        );
        if is_response && gateway.manages_prompts {
            match self.method.as_str() {
                "prompts/list" => {
                    self.merge_prompts(gateway, message);
                    return true;
                }
                "initialize" => {
                    // The client must learn that prompts exist even when the server has none,
                    // and that the list can change (the gateway reloads its bundle).
                    if let Some(capabilities) = message
                        .get_mut("result")
                        .and_then(|r| r.get_mut("capabilities"))
                        .and_then(Value::as_object_mut)
                    {
                        let prompts = capabilities.entry("prompts").or_insert_with(|| json!({}));
                        if let Some(prompts) = prompts.as_object_mut() {
                            prompts.insert("listChanged".into(), Value::Bool(true));
                        }
                    }
                    return true;
                }
                _ => {}
            }
        }
        if is_response
            && self.method == "tools/list"
            && let Some(result) = message.get_mut("result")
        {
            // A poisoned lock still holds a whole inventory; filtering must never be skipped.
            let known = gateway
                .inventory
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(listed) = result.get("tools").and_then(Value::as_array)
                && !known.knows_all(listed)
            {
                // The server changed a tool without telling: read the list again now.
                gateway.tools_changed.notify_one();
            }
            return filter_tools_result(
                result,
                &gateway.policy,
                &gateway.tool_checks,
                &known,
                &self.principal,
            ) > 0;
        }
        false
    }

    /// Put the managed prompts into a `prompts/list` answer; a server without prompts (an
    /// error answer) gets a list of the managed ones only.
    fn merge_prompts(&self, gateway: &Gateway, message: &mut Value) {
        let Some(object) = message.as_object_mut() else {
            return;
        };
        if object.remove("error").is_some() {
            object.insert("result".into(), json!({}));
        }
        let Some(result) = object.get_mut("result") else {
            return;
        };
        let clashes = gateway.prompts().merge_into_list(result, self.first_page);
        if !clashes.is_empty() {
            let mut known = gateway
                .prompt_clashes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for name in clashes {
                if known.insert(name.clone()) {
                    tracing::warn!(prompt = %name, "the server's own prompt of this name is hidden by the managed prompt");
                }
            }
        }
    }

    /// Account for one message; true when it is the response to this request.
    fn observe(
        &mut self,
        gateway: &Gateway,
        method: Option<&str>,
        has_method: bool,
        id: Option<&Value>,
        is_error: bool,
    ) -> bool {
        if method == Some("notifications/tools/list_changed") {
            gateway.tools_changed.notify_one();
        }
        let is_response = !has_method
            && self
                .id
                .as_ref()
                .is_some_and(|own| id.is_some_and(|id| own.matches(id)));
        if is_response {
            let outcome = if is_error {
                decision::ERROR
            } else {
                decision::ALLOW
            };
            let by = std::mem::take(&mut self.decided_by);
            self.audit.finish(outcome, Some(by));
        }
        is_response
    }
}

/// The parts of a JSON-RPC message the relay looks at, read without building a tree; the
/// other members are still checked to be valid JSON.
#[derive(serde::Deserialize)]
struct Peek {
    method: Option<serde::de::IgnoredAny>,
    id: Option<Value>,
    error: Option<serde::de::IgnoredAny>,
}

fn relay(gateway: Arc<Gateway>, reply: Reply, mut relay: Relay) -> Response {
    let mut builder = Response::builder().status(reply.status);
    if let Some(session) = reply
        .session_id
        .as_deref()
        .and_then(|s| HeaderValue::from_str(s).ok())
    {
        builder = builder.header(HEADER_SESSION_ID, session);
    }
    let result = match reply.body {
        ReplyBody::Empty => {
            relay.audit.finish(
                if reply.status.is_success() {
                    decision::ALLOW
                } else {
                    decision::ERROR
                },
                None,
            );
            builder.body(Body::empty())
        }
        ReplyBody::Other {
            content_type,
            bytes,
        } => {
            relay.audit.finish(decision::ERROR, None);
            if let Some(ct) = content_type {
                builder = builder.header(header::CONTENT_TYPE, ct);
            }
            builder.body(Body::from(bytes))
        }
        ReplyBody::Json(bytes) => {
            // Only tools/list answers (and, with managed prompts, prompts/list and initialize)
            // may be rewritten; any other is looked at, not rebuilt.
            let rewritten = relay.method == "tools/list"
                || (gateway.manages_prompts
                    && matches!(relay.method.as_str(), "prompts/list" | "initialize"));
            let peeked = (!rewritten)
                .then(|| serde_json::from_slice::<Peek>(&bytes).ok())
                .flatten();
            let parsed = match peeked {
                Some(peek) => {
                    // A notification in a JSON body is not possible; `method` marks a request.
                    relay.observe(
                        &gateway,
                        None,
                        peek.method.is_some(),
                        peek.id.as_ref(),
                        peek.error.is_some(),
                    );
                    Ok(bytes)
                }
                None => serde_json::from_slice::<Value>(&bytes).map(|mut value| {
                    if relay.inspect(&gateway, &mut value) {
                        Bytes::from(value.to_string())
                    } else {
                        bytes
                    }
                }),
            };
            let bytes = match parsed {
                Ok(bytes) => bytes,
                Err(_) => {
                    relay.audit.finish(decision::ERROR, None);
                    gateway.metrics.upstream_error("invalid");
                    let error = protocol::error_response(
                        relay.id.as_ref(),
                        codes::INTERNAL_ERROR,
                        "the MCP server sent an answer that is not JSON",
                        None,
                    );
                    return (
                        StatusCode::BAD_GATEWAY,
                        [(header::CONTENT_TYPE, MEDIA_JSON)],
                        error.to_string(),
                    )
                        .into_response();
                }
            };
            builder
                .header(header::CONTENT_TYPE, MEDIA_JSON)
                .body(Body::from(bytes))
        }
        ReplyBody::Events(events) => {
            let gateway = gateway.clone();
            let stream = events.map(move |event| match event {
                Ok(mut event) => {
                    if let Ok(mut value) = serde_json::from_str::<Value>(&event.data)
                        && relay.inspect(&gateway, &mut value)
                    {
                        event.data = value.to_string();
                    }
                    Ok::<Bytes, std::io::Error>(event.encode())
                }
                Err(e) => {
                    gateway.metrics.upstream_error(e.kind());
                    let error = relay.id.as_ref().map(|id| {
                        SseEvent::message(&protocol::error_response(
                            Some(id),
                            e.code(),
                            &e.to_string(),
                            None,
                        ))
                        .encode()
                    });
                    Ok(error.unwrap_or_default())
                }
            });
            builder
                .header(header::CONTENT_TYPE, MEDIA_SSE)
                .header(header::CACHE_CONTROL, "no-cache")
                .header("x-accel-buffering", "no")
                .body(Body::from_stream(stream))
        }
    };
    result.unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Common checks of GET and DELETE: origin, token, session era, session owner.
async fn session_request(
    gateway: &Arc<Gateway>,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(String, Arc<Principal>), Response> {
    if let Err(r) = gateway.check_origin(headers) {
        return Err(reject(&r, None));
    }
    let principal = gateway.authenticate(headers, query).await?;
    match protocol::era(headers) {
        Err(r) => return Err(reject(&r, None)),
        Ok(Era::Stateless { .. }) => {
            return Err((StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")]).into_response());
        }
        Ok(Era::Sessions { .. }) => {}
    }
    let Some(session) = headers
        .get(HEADER_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return Err((StatusCode::BAD_REQUEST, "Mcp-Session-Id header is required").into_response());
    };
    if gateway.sessions.touch(&session, principal.key()).is_err() {
        return Err((
            StatusCode::NOT_FOUND,
            "unknown or ended session; initialize again",
        )
            .into_response());
    }
    Ok((session, principal))
}

async fn get(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let _activity = super::busy_poll::Activity::begin();
    let (parts, _) = request.into_parts();
    let (_, accepts_sse) = protocol::accepts(&parts.headers);
    let (session, principal) =
        match session_request(&gateway, &parts.headers, parts.uri.query()).await {
            Ok(found) => found,
            Err(response) => return response,
        };
    if !accepts_sse || parts.headers.get(header::ACCEPT).is_none() {
        return (
            StatusCode::NOT_ACCEPTABLE,
            "Accept must list text/event-stream",
        )
            .into_response();
    }
    let headers = forwarded_headers(&parts.headers);
    match gateway.upstream.listen(&session, headers).await {
        Ok(mut reply) => {
            if let ReplyBody::Events(events) = reply.body {
                reply.body = ReplyBody::Events(with_prompt_notifications(
                    events,
                    gateway.prompts_changed.subscribe(),
                ));
            }
            relay(
                gateway.clone(),
                reply,
                Relay {
                    method: String::new(),
                    id: None,
                    principal,
                    audit: Audit {
                        gateway: gateway.clone(),
                        record: None,
                        unhashed: Unhashed::default(),
                        started: Instant::now(),
                        method: "GET".into(),
                    },
                    decided_by: String::new(),
                    first_page: false,
                },
            )
        }
        Err(e) => {
            gateway.metrics.upstream_error(e.kind());
            (StatusCode::BAD_GATEWAY, e.to_string()).into_response()
        }
    }
}

async fn delete(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let _activity = super::busy_poll::Activity::begin();
    let (parts, _) = request.into_parts();
    let (session, _) = match session_request(&gateway, &parts.headers, parts.uri.query()).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let headers = forwarded_headers(&parts.headers);
    let status = match gateway.upstream.end_session(&session, headers).await {
        Ok(status) => status,
        Err(e) => {
            gateway.metrics.upstream_error(e.kind());
            return (StatusCode::BAD_GATEWAY, e.to_string()).into_response();
        }
    };
    if status.is_success() || status == StatusCode::NOT_FOUND {
        let open = gateway.sessions.close(&session);
        gateway.metrics.active_sessions.set(open as i64);
    }
    status.into_response()
}

/// The server's own event stream on a GET, with `notifications/prompts/list_changed` added
/// whenever the managed prompts change; it ends when the server's stream ends.
fn with_prompt_notifications(
    events: EventStream,
    changes: tokio::sync::broadcast::Receiver<()>,
) -> EventStream {
    enum Item {
        Server(Result<SseEvent, UpstreamError>),
        ServerEnded,
        PromptsChanged,
    }
    let server = events
        .map(Item::Server)
        .chain(futures::stream::once(async { Item::ServerEnded }));
    let changes = futures::stream::unfold(changes, |mut changes| async move {
        match changes.recv().await {
            // A lagging receiver missed changes: one notification covers them all.
            Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                Some((Item::PromptsChanged, changes))
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    });
    Box::pin(
        futures::stream::select(server, changes)
            .take_while(|item| futures::future::ready(!matches!(item, Item::ServerEnded)))
            .filter_map(|item| {
                futures::future::ready(match item {
                    Item::Server(event) => Some(event),
                    Item::PromptsChanged => Some(Ok(SseEvent::message(&json!({
                        "jsonrpc": "2.0",
                        "method": "notifications/prompts/list_changed",
                    })))),
                    Item::ServerEnded => None,
                })
            }),
    )
}

/// Re-read the configuration file every `period`; when its managed prompts changed, serve the
/// new bundle and tell the open sessions. Other changes need a restart (the operator rolls the
/// pods for them through the configuration checksum, which leaves the prompts out).
pub(super) async fn keep_prompts(
    gateway: Arc<Gateway>,
    path: std::path::PathBuf,
    period: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut last_text: Option<String> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = shutdown.cancelled() => return,
        }
        let Ok(text) = tokio::fs::read_to_string(&path).await else {
            continue;
        };
        if last_text.as_deref() == Some(text.as_str()) {
            continue;
        }
        last_text = Some(text);
        let config = match super::load_config(&path) {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!(error = %e, "the changed configuration file is not valid; the prompts stay as they are");
                continue;
            }
        };
        let fresh = ManagedPrompts::new(&config.prompts);
        if fresh.digest() == gateway.prompts().digest() {
            continue;
        }
        tracing::info!(prompts = ?fresh.versions(), "the managed prompts changed; notifying open sessions");
        *gateway
            .prompts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
        // Nobody listening is fine.
        let _ = gateway.prompts_changed.send(());
    }
}

/// Keep the inventory fresh: at start until the server answers, when it says its tools changed,
/// and every `period`.
pub(super) async fn keep_inventory(
    gateway: Arc<Gateway>,
    period: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut retry = Duration::from_millis(200);
    loop {
        let ok = gateway.refresh_inventory().await;
        let wait = if ok {
            retry = Duration::from_millis(200);
            period
        } else {
            retry = (retry * 2).min(Duration::from_secs(10));
            retry
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = gateway.tools_changed.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Forget idle sessions and rate-limit buckets now and then.
pub(super) async fn housekeeping(
    gateway: Arc<Gateway>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            () = shutdown.cancelled() => return,
        }
        let open = gateway
            .sessions
            .expire(super::sessions::SESSION_IDLE_TIMEOUT);
        gateway.metrics.active_sessions.set(open as i64);
        gateway.limits.forget_idle();
    }
}
