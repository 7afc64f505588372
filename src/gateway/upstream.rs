//! The server behind the gateway: a streamable-HTTP endpoint reached over a pooled HTTP client,
//! or a stdio process the gateway spawns, restarts with backoff and multiplexes sessions onto.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use eventsource_stream::Eventsource as _;
use futures::{Stream, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Notify, broadcast, mpsc, watch};

use super::pool::{Lease, PlainError, PlainHttp};
use super::protocol::{
    self, HANDSHAKE_VERSIONS, HEADER_PROTOCOL_VERSION, HEADER_SESSION_ID, LATEST_HANDSHAKE_VERSION,
    MEDIA_JSON, MEDIA_SSE, RequestId, codes,
};

/// Largest JSON answer the gateway reads from the server.
pub const MAX_UPSTREAM_JSON_BYTES: usize = 64 * 1024 * 1024;
/// First wait before restarting a stdio server that exited; doubles up to [`MAX_RESTART_DELAY`].
pub const FIRST_RESTART_DELAY: Duration = Duration::from_millis(500);
/// Longest wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between stdio restarts.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// A stdio server that ran this long resets the restart backoff.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// Event id (for resumption), empty when absent.
    pub id: String,
    /// Event type, empty for `message`.
    pub event: String,
    /// Event data: one JSON-RPC message.
    pub data: String,
}

impl SseEvent {
    /// A `message` event carrying `value`.
    pub fn message(value: &Value) -> Self {
        Self {
            id: String::new(),
            event: String::new(),
            data: value.to_string(),
        }
    }

    /// The wire form, ending with the blank line that dispatches it.
    pub fn encode(&self) -> Bytes {
        let mut out = String::with_capacity(self.data.len() + 32);
        if !self.id.is_empty() {
            out.push_str("id: ");
            out.push_str(&self.id);
            out.push('\n');
        }
        if !self.event.is_empty() {
            out.push_str("event: ");
            out.push_str(&self.event);
            out.push('\n');
        }
        for line in self.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        Bytes::from(out)
    }
}

/// A stream of events from the server.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent, UpstreamError>> + Send>>;

/// What the server answered.
pub enum ReplyBody {
    /// No body (202, 405, ...).
    Empty,
    /// One JSON document.
    Json(Bytes),
    /// An SSE stream.
    Events(EventStream),
    /// Something else; passed through as is.
    Other {
        content_type: Option<String>,
        bytes: Bytes,
    },
}

/// The server's answer to one HTTP request.
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// `Mcp-Session-Id` the server set.
    pub session_id: Option<String>,
    /// Body.
    pub body: ReplyBody,
}

/// Why the server could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("the MCP server is unreachable: {0}")]
    Unreachable(String),
    #[error("the MCP server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the MCP server sent an invalid answer: {0}")]
    Invalid(String),
    #[error("the MCP server process is not running")]
    NotRunning,
}

impl From<PlainError> for UpstreamError {
    fn from(error: PlainError) -> Self {
        match error {
            PlainError::Unreachable(e) => Self::Unreachable(e),
            PlainError::Invalid(e) => Self::Invalid(e.to_string()),
        }
    }
}

impl UpstreamError {
    /// JSON-RPC code for a client-facing error.
    pub fn code(&self) -> i64 {
        match self {
            Self::Timeout(_) => codes::UPSTREAM_TIMEOUT,
            _ => codes::INTERNAL_ERROR,
        }
    }

    /// Label for the upstream-errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Timeout(_) => "timeout",
            Self::Invalid(_) => "invalid",
            Self::NotRunning => "not_running",
        }
    }
}

/// A request to forward.
pub struct Forward {
    /// Exactly the JSON the gateway passes on (the client's body).
    pub body: Bytes,
    /// The parsed message.
    pub message: protocol::Message,
    /// Session the request belongs to.
    pub session_id: Option<String>,
    /// Headers to pass on: protocol version, 2026 routing headers, Accept, trace context.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether the client accepts an SSE answer.
    pub accepts_sse: bool,
}

/// The server behind the gateway.
#[derive(Clone)]
pub enum Upstream {
    /// Streamable HTTP.
    Http(Arc<HttpUpstream>),
    /// A spawned stdio process.
    Stdio(Arc<StdioUpstream>),
}

impl Upstream {
    /// Whether [`Upstream::post`] sends [`Forward::message`] (a stdio server) rather than the
    /// client's body as it came.
    pub fn sends_parsed_message(&self) -> bool {
        matches!(self, Self::Stdio(_))
    }

    /// Send one POSTed message.
    pub async fn post(&self, forward: Forward) -> Result<Reply, UpstreamError> {
        match self {
            Self::Http(http) => http.post(forward).await,
            Self::Stdio(stdio) => stdio.post(forward).await,
        }
    }

    /// Open the server-to-client stream of a session (GET).
    pub async fn listen(
        &self,
        session_id: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<Reply, UpstreamError> {
        match self {
            Self::Http(http) => http.listen(session_id, headers).await,
            Self::Stdio(stdio) => Ok(stdio.listen()),
        }
    }

    /// End a session (DELETE).
    pub async fn end_session(
        &self,
        session_id: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<StatusCode, UpstreamError> {
        match self {
            Self::Http(http) => http.end_session(session_id, headers).await,
            Self::Stdio(_) => Ok(StatusCode::OK),
        }
    }

    /// List the server's tools and identity with the gateway's own session.
    pub async fn fetch_inventory(&self) -> Result<UpstreamInventory, UpstreamError> {
        match self {
            Self::Http(http) => http.fetch_inventory().await,
            Self::Stdio(stdio) => stdio.fetch_inventory().await,
        }
    }
}

/// What an inventory fetch found.
pub struct UpstreamInventory {
    /// `serverInfo` from initialize.
    pub server_info: Option<Value>,
    /// Agreed protocol version.
    pub protocol_version: Option<String>,
    /// Every tool definition, all pages.
    pub tools: Vec<Value>,
}

fn client_info() -> Value {
    json!({ "name": "mcp-operator-gateway", "version": env!("CARGO_PKG_VERSION") })
}

fn initialize_request(id: i64) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": LATEST_HANDSHAKE_VERSION,
            "capabilities": {},
            "clientInfo": client_info(),
        }
    })
}

/// The `result` of a JSON-RPC response, or its error as an [`UpstreamError`].
fn result_of(response: Value) -> Result<Value, UpstreamError> {
    if let Some(error) = response.get("error") {
        return Err(UpstreamError::Invalid(format!(
            "the server answered {error}"
        )));
    }
    response
        .get("result")
        .cloned()
        .ok_or_else(|| UpstreamError::Invalid("a response without result".into()))
}

/// Page through `tools/list` with `ask`, which sends one request and returns its result.
async fn list_all_tools<F, Fut>(mut ask: F) -> Result<Vec<Value>, UpstreamError>
where
    F: FnMut(Value) -> Fut,
    Fut: std::future::Future<Output = Result<Value, UpstreamError>>,
{
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for _page in 0..1000 {
        let params = match &cursor {
            Some(cursor) => json!({ "cursor": cursor }),
            None => json!({}),
        };
        let result = ask(params).await?;
        if let Some(page) = result.get("tools").and_then(Value::as_array) {
            tools.extend(page.iter().cloned());
        }
        match result.get("nextCursor").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
            _ => return Ok(tools),
        }
    }
    Err(UpstreamError::Invalid(
        "tools/list never ends (1000 pages)".into(),
    ))
}

/// A streamable-HTTP server: `http://` over the gateway's own per-thread connections
/// ([`super::pool`]), `https://` over a pooled reqwest client.
pub struct HttpUpstream {
    transport: Transport,
    timeout: Duration,
    next_id: AtomicI64,
}

enum Transport {
    /// `http://`: the gateway's own connections, kept per serving thread.
    Plain(PlainHttp),
    /// `https://`: a pooled reqwest client per serving thread.
    Tls {
        url: reqwest::Url,
        /// Boxed: the table is large, and the plain variant is a pointer or two.
        clients: Box<thread_local::ThreadLocal<reqwest::Client>>,
    },
}

/// An answer whose body is still to be read.
struct Received<'a> {
    status: StatusCode,
    session_id: Option<String>,
    content_type: Option<String>,
    body: ReceivedBody<'a>,
}

enum ReceivedBody<'a> {
    /// On a pooled plain connection, given back once the body was read to the end.
    Plain(Lease<'a>),
    Tls(reqwest::Response),
}

/// An answer body gathered chunk by chunk, at most [`MAX_UPSTREAM_JSON_BYTES`]. One that came
/// in one piece (the usual case) is passed on without a copy.
#[derive(Default)]
struct Gathered {
    /// The body so far while it is one chunk.
    first: Bytes,
    /// The body so far once a second chunk came.
    joined: Vec<u8>,
}

impl Gathered {
    fn push(&mut self, chunk: Bytes) -> Result<(), UpstreamError> {
        if self.first.len() + self.joined.len() + chunk.len() > MAX_UPSTREAM_JSON_BYTES {
            return Err(UpstreamError::Invalid(format!(
                "the answer is larger than {MAX_UPSTREAM_JSON_BYTES} bytes"
            )));
        }
        if self.first.is_empty() && self.joined.is_empty() {
            self.first = chunk;
        } else {
            if self.joined.is_empty() {
                self.joined
                    .extend_from_slice(&std::mem::take(&mut self.first));
            }
            self.joined.extend_from_slice(&chunk);
        }
        Ok(())
    }

    fn into_bytes(self) -> Bytes {
        if self.joined.is_empty() {
            self.first
        } else {
            Bytes::from(self.joined)
        }
    }
}

fn header_text(
    headers: &axum::http::HeaderMap,
    name: impl axum::http::header::AsHeaderName,
) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl HttpUpstream {
    /// Connections to `url`; `timeout` bounds the wait for an answer to start.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, UpstreamError> {
        // Parsed once: reqwest would parse a string URL on every request.
        let url = reqwest::Url::parse(url).map_err(|e| {
            UpstreamError::Unreachable(format!("invalid upstream URL {url:?}: {e}"))
        })?;
        let transport = match PlainHttp::new(&url, CONNECT_TIMEOUT) {
            Some(plain) => Transport::Plain(plain),
            None => {
                let clients = Box::new(thread_local::ThreadLocal::new());
                // Built once here so a client that cannot be built fails at start.
                clients.get_or_try(Self::client_for_this_thread)?;
                Transport::Tls { url, clients }
            }
        };
        Ok(Self {
            transport,
            timeout,
            next_id: AtomicI64::new(1),
        })
    }

    /// One connection pool per thread: each serving thread runs its own runtime, and a pooled
    /// connection is driven by a task on the runtime that opened it.
    fn client_for_this_thread() -> Result<reqwest::Client, UpstreamError> {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))
    }

    /// `sending`, as an [`UpstreamError`], given up after the timeout.
    async fn within<T>(
        &self,
        sending: impl std::future::Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        tokio::time::timeout(self.timeout, sending)
            .await
            .unwrap_or(Err(UpstreamError::Timeout(self.timeout)))
    }

    /// Send one request to the server's URL and wait (at most the timeout) for its headers.
    async fn exchange(
        &self,
        method: axum::http::Method,
        session_id: Option<&str>,
        headers: Vec<(HeaderName, HeaderValue)>,
        json_body: Option<Bytes>,
    ) -> Result<Received<'_>, UpstreamError> {
        let mut headers = headers;
        if let Some(session) = session_id {
            let value = HeaderValue::from_str(session).map_err(|_| {
                UpstreamError::Invalid(format!("session id {session:?} is not a header value"))
            })?;
            headers.push((HEADER_SESSION_ID, value));
        }
        if json_body.is_some() {
            headers.push((
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static(MEDIA_JSON),
            ));
        }
        match &self.transport {
            Transport::Plain(plain) => {
                // Boxed: the timeout and this future hold a pointer, not the whole send state.
                let sending = Box::pin(plain.send(&method, &headers, json_body.as_deref()));
                let (head, lease) = self
                    .within(async { sending.await.map_err(Into::into) })
                    .await?;
                Ok(Received {
                    status: head.status,
                    session_id: head.session_id,
                    content_type: head.content_type,
                    body: ReceivedBody::Plain(lease),
                })
            }
            Transport::Tls { url, clients } => {
                let client = clients.get_or_try(Self::client_for_this_thread)?;
                let mut request = client
                    .request(method, url.clone())
                    .headers(headers.into_iter().collect());
                if let Some(body) = json_body {
                    request = request.body(body);
                }
                let sending = async {
                    request
                        .send()
                        .await
                        .map_err(|e| UpstreamError::Unreachable(super::error_chain(&e)))
                };
                let response = self.within(sending).await?;
                Ok(Received {
                    status: response.status(),
                    session_id: header_text(response.headers(), HEADER_SESSION_ID),
                    content_type: header_text(response.headers(), reqwest::header::CONTENT_TYPE),
                    body: ReceivedBody::Tls(response),
                })
            }
        }
    }

    async fn reply(&self, received: Received<'_>) -> Result<Reply, UpstreamError> {
        let media = received
            .content_type
            .as_deref()
            .and_then(|c| c.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        let body = match media.as_deref() {
            Some(MEDIA_SSE) => ReplyBody::Events(events(received.body)),
            Some(MEDIA_JSON) => {
                let bytes = self.read_body(received.body).await?;
                // Some servers label an empty 202 as JSON.
                if bytes.is_empty() {
                    ReplyBody::Empty
                } else {
                    ReplyBody::Json(bytes)
                }
            }
            _ => {
                let bytes = self.read_body(received.body).await?;
                if bytes.is_empty() {
                    ReplyBody::Empty
                } else {
                    ReplyBody::Other {
                        content_type: received.content_type,
                        bytes,
                    }
                }
            }
        };
        Ok(Reply {
            status: received.status,
            session_id: received.session_id,
            body,
        })
    }

    /// The whole body (at most [`MAX_UPSTREAM_JSON_BYTES`], within the timeout).
    async fn read_body(&self, body: ReceivedBody<'_>) -> Result<Bytes, UpstreamError> {
        let read = async {
            let mut gathered = Gathered::default();
            match body {
                ReceivedBody::Plain(mut lease) => {
                    while let Some(chunk) = lease.next_chunk().await? {
                        gathered.push(chunk)?;
                    }
                    lease.give_back();
                }
                ReceivedBody::Tls(mut response) => {
                    while let Some(chunk) = response
                        .chunk()
                        .await
                        .map_err(|e| UpstreamError::Unreachable(super::error_chain(&e)))?
                    {
                        gathered.push(chunk)?;
                    }
                }
            }
            Ok(gathered.into_bytes())
        };
        tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
    }

    async fn post(&self, forward: Forward) -> Result<Reply, UpstreamError> {
        let received = self
            .exchange(
                axum::http::Method::POST,
                forward.session_id.as_deref(),
                forward.headers,
                Some(forward.body),
            )
            .await?;
        self.reply(received).await
    }

    async fn listen(
        &self,
        session_id: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<Reply, UpstreamError> {
        let received = self
            .exchange(axum::http::Method::GET, Some(session_id), headers, None)
            .await?;
        self.reply(received).await
    }

    async fn end_session(
        &self,
        session_id: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<StatusCode, UpstreamError> {
        let received = self
            .exchange(axum::http::Method::DELETE, Some(session_id), headers, None)
            .await?;
        let status = received.status;
        // Read to the end so the connection can carry the next request.
        let _ = self.read_body(received.body).await;
        Ok(status)
    }

    /// Send one request on the gateway's own session and wait for its response.
    async fn call(
        &self,
        session: Option<&str>,
        version: &str,
        message: &Value,
    ) -> Result<(Option<String>, Value), UpstreamError> {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let mut headers = vec![(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        )];
        if let Ok(v) = HeaderValue::from_str(version) {
            headers.push((HEADER_PROTOCOL_VERSION, v));
        }
        let received = self
            .exchange(
                axum::http::Method::POST,
                session,
                headers,
                Some(Bytes::from(message.to_string())),
            )
            .await?;
        let reply = self.reply(received).await?;
        if !reply.status.is_success() {
            return Err(UpstreamError::Invalid(format!("HTTP {}", reply.status)));
        }
        let response = match reply.body {
            ReplyBody::Json(bytes) => serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| UpstreamError::Invalid(e.to_string()))?,
            ReplyBody::Events(mut events) => {
                let wait = async {
                    while let Some(event) = events.next().await {
                        let event = event?;
                        if let Ok(value) = serde_json::from_str::<Value>(&event.data)
                            && value.get("id") == Some(&id)
                            && value.get("method").is_none()
                        {
                            return Ok(value);
                        }
                    }
                    Err(UpstreamError::Invalid(
                        "the stream ended without a response".into(),
                    ))
                };
                tokio::time::timeout(self.timeout, wait)
                    .await
                    .map_err(|_| UpstreamError::Timeout(self.timeout))??
            }
            _ => return Err(UpstreamError::Invalid("no JSON-RPC response".into())),
        };
        Ok((reply.session_id, response))
    }

    async fn fetch_inventory(&self) -> Result<UpstreamInventory, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (session, response) = self
            .call(None, LATEST_HANDSHAKE_VERSION, &initialize_request(id))
            .await?;
        let initialized = result_of(response)?;
        let version = initialized
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(LATEST_HANDSHAKE_VERSION)
            .to_owned();
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let mut headers = Vec::new();
        if let Ok(v) = HeaderValue::from_str(&version) {
            headers.push((HEADER_PROTOCOL_VERSION, v));
        }
        let mut note_headers = headers.clone();
        note_headers.push((
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        ));
        let received = self
            .exchange(
                axum::http::Method::POST,
                session.as_deref(),
                note_headers,
                Some(Bytes::from(note.to_string())),
            )
            .await?;
        let _ = self.read_body(received.body).await;
        let tools = list_all_tools(|params| {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let message =
                json!({ "jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params });
            let session = session.clone();
            let version = version.clone();
            async move {
                let (_, response) = self.call(session.as_deref(), &version, &message).await?;
                result_of(response)
            }
        })
        .await;
        if let Some(session) = &session {
            let _ = self.end_session(session, headers).await;
        }
        Ok(UpstreamInventory {
            server_info: initialized.get("serverInfo").cloned(),
            protocol_version: Some(version),
            tools: tools?,
        })
    }
}

fn events(body: ReceivedBody<'_>) -> EventStream {
    let bytes: Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>> = match body {
        // The connection closes when the stream ends rather than being reused: the Python
        // SDK's server answers a request on a reused connection about 40 ms late
        // (benches/gateway_latency.rs), and a stream may last long anyway.
        ReceivedBody::Plain(lease) => Box::pin(
            lease
                .into_stream()
                .map(|chunk| chunk.map_err(|e| e.to_string())),
        ),
        ReceivedBody::Tls(response) => Box::pin(
            response
                .bytes_stream()
                .map(|chunk| chunk.map_err(|e| super::error_chain(&e))),
        ),
    };
    Box::pin(bytes.eventsource().map(|item| {
        item.map(|e| SseEvent {
            id: e.id,
            event: if e.event == "message" {
                String::new()
            } else {
                e.event
            },
            data: e.data,
        })
        .map_err(|e| UpstreamError::Invalid(format!("bad SSE stream: {e}")))
    }))
}

// ---------------------------------------------------------------------------------------------
// stdio

struct Pending {
    session: Option<String>,
    original_id: RequestId,
    progress_token: Option<(Value, String)>,
    answer: mpsc::UnboundedSender<Value>,
}

struct StdioState {
    stdin: Option<tokio::process::ChildStdin>,
    initialize_result: Option<Value>,
}

/// A stdio server the gateway runs: one process, restarted with backoff when it exits, shared by
/// every session. Request ids and progress tokens are rewritten so answers find their caller.
pub struct StdioUpstream {
    command: Vec<String>,
    timeout: Duration,
    state: tokio::sync::Mutex<StdioState>,
    pending: std::sync::Mutex<HashMap<i64, Pending>>,
    next_id: AtomicI64,
    running: watch::Sender<bool>,
    notifications: broadcast::Sender<Value>,
    /// Signalled when the server says its tool list changed.
    pub tools_changed: Arc<Notify>,
}

impl StdioUpstream {
    /// Prepare (not start) a stdio server running `command`.
    pub fn new(command: Vec<String>, timeout: Duration, tools_changed: Arc<Notify>) -> Self {
        Self {
            command,
            timeout,
            state: tokio::sync::Mutex::new(StdioState {
                stdin: None,
                initialize_result: None,
            }),
            pending: std::sync::Mutex::new(HashMap::new()),
            next_id: AtomicI64::new(1),
            running: watch::Sender::new(false),
            notifications: broadcast::Sender::new(256),
            tools_changed,
        }
    }

    /// Run the process until `shutdown` fires, restarting it with backoff when it exits.
    pub async fn supervise(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut delay = FIRST_RESTART_DELAY;
        loop {
            let started = std::time::Instant::now();
            match self.run_once(&shutdown).await {
                Ok(status) => tracing::warn!(%status, "the stdio MCP server exited"),
                Err(e) => tracing::error!(error = %e, "the stdio MCP server failed"),
            }
            self.running.send_replace(false);
            self.fail_pending();
            if shutdown.is_cancelled() {
                return;
            }
            if started.elapsed() > STABLE_RUN {
                delay = FIRST_RESTART_DELAY;
            }
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "restarting the stdio MCP server"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(MAX_RESTART_DELAY);
        }
    }

    async fn run_once(
        self: &Arc<Self>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<std::process::ExitStatus, String> {
        let (program, args) = self
            .command
            .split_first()
            .ok_or("no command given for the stdio server")?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        {
            let mut state = self.state.lock().await;
            state.stdin = Some(stdin);
            state.initialize_result = None;
        }
        let reader = tokio::spawn(Arc::clone(self).read_output(stdout));
        let handshake = async {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, mut rx) = mpsc::unbounded_channel();
            self.register(id, None, RequestId::Number(id), None, tx);
            self.write_line(&initialize_request(id)).await?;
            let response = tokio::time::timeout(self.timeout, rx.recv())
                .await
                .map_err(|_| "the server did not answer initialize".to_owned())?
                .ok_or("the server exited during initialize")?;
            let result = result_of(response).map_err(|e| e.to_string())?;
            self.write_line(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                .await?;
            self.state.lock().await.initialize_result = Some(result);
            Ok::<(), String>(())
        };
        tokio::select! {
            result = handshake => {
                if let Err(e) = result {
                    let _ = child.start_kill();
                    reader.abort();
                    return Err(e);
                }
            }
            status = child.wait() => {
                reader.abort();
                return status.map_err(|e| e.to_string());
            }
        }
        self.running.send_replace(true);
        self.tools_changed.notify_one();
        let status = tokio::select! {
            status = child.wait() => status.map_err(|e| e.to_string()),
            () = shutdown.cancelled() => {
                let _ = child.start_kill();
                child.wait().await.map_err(|e| e.to_string())
            }
        };
        reader.abort();
        self.state.lock().await.stdin = None;
        status
    }

    fn register(
        &self,
        id: i64,
        session: Option<String>,
        original_id: RequestId,
        progress_token: Option<(Value, String)>,
        answer: mpsc::UnboundedSender<Value>,
    ) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(
                id,
                Pending {
                    session,
                    original_id,
                    progress_token,
                    answer,
                },
            );
        }
    }

    fn fail_pending(&self) {
        let drained: Vec<(i64, Pending)> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return,
        };
        for (_, pending) in drained {
            let _ = pending.answer.send(protocol::error_response(
                Some(&pending.original_id),
                codes::INTERNAL_ERROR,
                "the MCP server process exited",
                None,
            ));
        }
    }

    async fn write_line(&self, message: &Value) -> Result<(), String> {
        let mut line = message.to_string();
        line.push('\n');
        let mut state = self.state.lock().await;
        let stdin = state.stdin.as_mut().ok_or("the server is not running")?;
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stdin.flush().await.map_err(|e| e.to_string())
    }

    async fn read_output(self: Arc<Self>, stdout: tokio::process::ChildStdout) {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                tracing::warn!("the stdio server wrote a line that is not JSON");
                continue;
            };
            self.route(message).await;
        }
    }

    async fn route(&self, mut message: Value) {
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = message.get("id").and_then(Value::as_i64);
        match (method.as_deref(), id) {
            (None, Some(id)) => {
                let pending = self.pending.lock().ok().and_then(|mut p| p.remove(&id));
                if let Some(pending) = pending {
                    message["id"] = pending.original_id.to_json();
                    let _ = pending.answer.send(message);
                }
            }
            (Some("notifications/progress"), _) => {
                let token = message
                    .pointer("/params/progressToken")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let target = token.and_then(|token| {
                    let pending = self.pending.lock().ok()?;
                    pending.values().find_map(|p| match &p.progress_token {
                        Some((original, rewritten)) if *rewritten == token => {
                            Some((original.clone(), p.answer.clone()))
                        }
                        _ => None,
                    })
                });
                if let Some((original, answer)) = target {
                    message["params"]["progressToken"] = original;
                    let _ = answer.send(message);
                }
            }
            (Some(method), None) => {
                if method == "notifications/tools/list_changed" {
                    self.tools_changed.notify_one();
                }
                let _ = self.notifications.send(message);
            }
            (Some(method), Some(_)) => {
                // A request from the server to a client. Answering it needs a client; only
                // ping can be answered by the gateway itself.
                let reply = if method == "ping" {
                    json!({"jsonrpc": "2.0", "id": message["id"], "result": {}})
                } else {
                    json!({"jsonrpc": "2.0", "id": message["id"], "error": {
                        "code": codes::METHOD_NOT_FOUND,
                        "message": format!("{method} is not available through the gateway"),
                    }})
                };
                let _ = self.write_line(&reply).await;
            }
            (None, None) => {}
        }
    }

    async fn wait_running(&self) -> Result<(), UpstreamError> {
        let mut running = self.running.subscribe();
        tokio::time::timeout(self.timeout, running.wait_for(|r| *r))
            .await
            .map_err(|_| UpstreamError::NotRunning)?
            .map_err(|_| UpstreamError::NotRunning)?;
        Ok(())
    }

    /// Whether the process is up and initialized.
    pub fn is_running(&self) -> bool {
        *self.running.borrow()
    }

    async fn post(&self, forward: Forward) -> Result<Reply, UpstreamError> {
        match forward.message {
            protocol::Message::Request { id, method, params } => {
                self.request(id, &method, params, forward.session_id, forward.accepts_sse)
                    .await
            }
            protocol::Message::Notification { method, mut params } => {
                if method == "notifications/initialized" {
                    return Ok(accepted());
                }
                if method == "notifications/cancelled"
                    && let Some(original) = params
                        .as_ref()
                        .and_then(|p| p.get("requestId"))
                        .and_then(|v| serde_json::from_value::<Value>(v.clone()).ok())
                {
                    let gateway_id = self.pending.lock().ok().and_then(|pending| {
                        pending.iter().find_map(|(gid, p)| {
                            (p.original_id.to_json() == original && p.session == forward.session_id)
                                .then_some(*gid)
                        })
                    });
                    match (gateway_id, params.as_mut()) {
                        (Some(gid), Some(p)) => p["requestId"] = json!(gid),
                        _ => return Ok(accepted()),
                    }
                }
                let mut note = json!({"jsonrpc": "2.0", "method": method});
                if let Some(params) = params {
                    note["params"] = params;
                }
                self.wait_running().await?;
                self.write_line(&note)
                    .await
                    .map_err(UpstreamError::Unreachable)?;
                Ok(accepted())
            }
            // The gateway never forwards server requests, so there is nothing to answer.
            protocol::Message::Response { .. } => Ok(accepted()),
        }
    }

    async fn request(
        &self,
        original_id: RequestId,
        method: &str,
        mut params: Option<Value>,
        session: Option<String>,
        accepts_sse: bool,
    ) -> Result<Reply, UpstreamError> {
        self.wait_running().await?;
        if method == "initialize" {
            return self.initialize(&original_id, params.as_ref()).await;
        }
        let gateway_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let progress_token = params
            .as_mut()
            .and_then(|p| p.get_mut("_meta"))
            .and_then(|meta| meta.get_mut("progressToken"))
            .map(|token| {
                let rewritten = format!("gw-{gateway_id}");
                let original = std::mem::replace(token, json!(rewritten));
                (original, rewritten)
            });
        let mut request = json!({"jsonrpc": "2.0", "id": gateway_id, "method": method});
        if let Some(params) = params {
            request["params"] = params;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.register(gateway_id, session, original_id, progress_token, tx);
        if let Err(e) = self.write_line(&request).await {
            self.forget(gateway_id);
            return Err(UpstreamError::Unreachable(e));
        }
        if !accepts_sse {
            let wait = async {
                loop {
                    match rx.recv().await {
                        Some(message) if message.get("method").is_none() => return Ok(message),
                        Some(_) => continue,
                        None => return Err(UpstreamError::NotRunning),
                    }
                }
            };
            let answer = match tokio::time::timeout(self.timeout, wait).await {
                Ok(answer) => answer?,
                Err(_) => {
                    self.cancel(gateway_id).await;
                    return Err(UpstreamError::Timeout(self.timeout));
                }
            };
            return Ok(Reply {
                status: StatusCode::OK,
                session_id: None,
                body: ReplyBody::Json(Bytes::from(answer.to_string())),
            });
        }
        let timeout = self.timeout;
        let stream = async_stream_from(rx, timeout);
        Ok(Reply {
            status: StatusCode::OK,
            session_id: None,
            body: ReplyBody::Events(stream),
        })
    }

    fn forget(&self, gateway_id: i64) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&gateway_id);
        }
    }

    async fn cancel(&self, gateway_id: i64) {
        self.forget(gateway_id);
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": gateway_id, "reason": "timed out at the gateway"}});
        let _ = self.write_line(&note).await;
    }

    /// Answer a client's initialize from the handshake the gateway did when it started the server.
    async fn initialize(
        &self,
        id: &RequestId,
        params: Option<&Value>,
    ) -> Result<Reply, UpstreamError> {
        let mut result = self
            .state
            .lock()
            .await
            .initialize_result
            .clone()
            .ok_or(UpstreamError::NotRunning)?;
        let requested = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .filter(|v| HANDSHAKE_VERSIONS.contains(v))
            .unwrap_or(LATEST_HANDSHAKE_VERSION);
        result["protocolVersion"] = json!(requested);
        let session = new_session_id();
        Ok(Reply {
            status: StatusCode::OK,
            session_id: Some(session),
            body: ReplyBody::Json(Bytes::from(
                protocol::result_response(id, result).to_string(),
            )),
        })
    }

    fn listen(&self) -> Reply {
        let receiver = self.notifications.subscribe();
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(message) => return Some((Ok(SseEvent::message(&message)), receiver)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Reply {
            status: StatusCode::OK,
            session_id: None,
            body: ReplyBody::Events(Box::pin(stream)),
        }
    }

    async fn fetch_inventory(&self) -> Result<UpstreamInventory, UpstreamError> {
        self.wait_running().await?;
        let initialize = self.state.lock().await.initialize_result.clone();
        let tools = list_all_tools(|params| async move {
            let reply = self
                .request(
                    RequestId::Number(0),
                    "tools/list",
                    Some(params),
                    None,
                    false,
                )
                .await?;
            match reply.body {
                ReplyBody::Json(bytes) => result_of(
                    serde_json::from_slice(&bytes)
                        .map_err(|e| UpstreamError::Invalid(e.to_string()))?,
                ),
                _ => Err(UpstreamError::Invalid("no answer to tools/list".into())),
            }
        })
        .await?;
        Ok(UpstreamInventory {
            server_info: initialize
                .as_ref()
                .and_then(|r| r.get("serverInfo").cloned()),
            protocol_version: initialize
                .as_ref()
                .and_then(|r| r.get("protocolVersion"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            tools,
        })
    }
}

fn accepted() -> Reply {
    Reply {
        status: StatusCode::ACCEPTED,
        session_id: None,
        body: ReplyBody::Empty,
    }
}

/// Events for one stdio request: its notifications, then its response, which ends the stream.
fn async_stream_from(rx: mpsc::UnboundedReceiver<Value>, timeout: Duration) -> EventStream {
    let stream = futures::stream::unfold((rx, false), move |(mut rx, done)| async move {
        if done {
            return None;
        }
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(message)) => {
                let last = message.get("method").is_none();
                Some((Ok(SseEvent::message(&message)), (rx, last)))
            }
            Ok(None) => Some((Err(UpstreamError::NotRunning), (rx, true))),
            Err(_) => Some((Err(UpstreamError::Timeout(timeout)), (rx, true))),
        }
    });
    Box::pin(stream)
}

/// A new unguessable session id (128 random bits, hex).
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS always has randomness; fall back to a time-seeded id rather than fail a request.
        bytes = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            .to_le_bytes();
    }
    format!("{:032x}", u128::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_in_one_chunk_is_not_copied_and_more_are_joined_up_to_the_limit() {
        let whole = Bytes::from_static(b"{\"jsonrpc\":\"2.0\"}");
        let mut gathered = Gathered::default();
        gathered.push(whole.clone()).unwrap();
        assert_eq!(gathered.into_bytes().as_ptr(), whole.as_ptr());

        let mut gathered = Gathered::default();
        for part in ["{\"a\"", ":", "1}"] {
            gathered.push(Bytes::from_static(part.as_bytes())).unwrap();
        }
        assert_eq!(gathered.into_bytes(), "{\"a\":1}");

        let mut gathered = Gathered::default();
        gathered
            .push(Bytes::from(vec![b' '; MAX_UPSTREAM_JSON_BYTES]))
            .unwrap();
        let error = gathered.push(Bytes::from_static(b"x")).unwrap_err();
        assert!(error.to_string().contains("larger than"), "{error}");
    }

    #[test]
    fn events_encode_one_data_line_per_line() {
        let event = SseEvent {
            id: "7".into(),
            event: String::new(),
            data: "{\"a\":1}\n{\"b\":2}".into(),
        };
        assert_eq!(
            event.encode(),
            Bytes::from("id: 7\ndata: {\"a\":1}\ndata: {\"b\":2}\n\n")
        );
    }

    #[tokio::test]
    async fn pagination_follows_next_cursor() {
        let pages = std::sync::Mutex::new(vec![
            json!({"tools": [{"name": "c"}]}),
            json!({"tools": [{"name": "b"}], "nextCursor": "2"}),
            json!({"tools": [{"name": "a"}], "nextCursor": "1"}),
        ]);
        let tools = list_all_tools(|_| {
            let page = pages.lock().unwrap().pop().unwrap();
            async move { Ok(page) }
        })
        .await
        .unwrap();
        let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
