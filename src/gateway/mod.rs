//! `mcp-operator gateway`: the MCP-aware proxy in front of every server. It speaks streamable
//! HTTP to clients (both protocol eras), validates OAuth access tokens, lets each caller see and
//! call only the tools its claims allow, validates input, limits rates, and leaves an audit line,
//! a trace span and metrics for every request.
//!
//! Parts, each a plain module tested on its own: [`protocol`] (messages, eras, headers),
//! [`auth`] (tokens, JWKS, metadata), [`access`] (per-tool rules), [`inventory`] (tool
//! definitions and hashes), [`limits`] (token buckets), [`audit`] (hash-chained log),
//! [`sessions`], [`metrics`], [`upstream`] (HTTP and stdio servers), [`busy_poll`] (adaptive
//! polling, on unless a CPU quota is too small, see [`cpu_quota`]) and [`server`] (the HTTP
//! handlers that call them in order).

pub mod access;
pub mod audit;
pub mod auth;
pub mod busy_poll;
pub mod cpu_quota;
pub mod http1;
pub mod inventory;
pub mod limits;
pub mod metrics;
pub mod pool;
pub mod prompts;
pub mod protocol;
pub mod server;
pub mod sessions;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::common::Enforcement;
use crate::api::gateway_config::{
    DEFAULT_MAX_REQUEST_BYTES, GATEWAY_CONFIG_API_VERSION, GATEWAY_CONFIG_KIND,
    GatewayAuthorization, GatewayConfig, GatewayLimits, GatewayTools, ServerIdentity,
    Upstream as UpstreamConfig,
};

/// Default address clients connect to when no configuration file is given.
pub const DEFAULT_LOCAL_LISTEN: &str = "127.0.0.1:8443";
/// Default admin address when no configuration file is given.
pub const DEFAULT_LOCAL_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// How often the tool inventory is refreshed when nothing says it changed.
pub const INVENTORY_REFRESH_PERIOD: Duration = Duration::from_secs(60);
/// How often the configuration file is re-read for a changed prompt bundle (the kubelet
/// replaces a mounted ConfigMap's files atomically, so polling sees whole documents).
pub const PROMPTS_RELOAD_PERIOD: Duration = Duration::from_secs(2);

/// Command-line choices that override or replace the configuration file.
#[derive(Clone, Debug, Default)]
pub struct GatewayOptions {
    /// The configuration document (as rendered into the gateway ConfigMap).
    pub config: Option<PathBuf>,
    /// Override `listen`.
    pub listen: Option<String>,
    /// Override `adminListen`.
    pub admin_listen: Option<String>,
    /// Override the upstream with a streamable-HTTP URL.
    pub upstream: Option<String>,
    /// Override the upstream with a stdio command.
    pub stdio: Vec<String>,
    /// Listen on a non-loopback address without authentication.
    pub allow_unauthenticated: bool,
    /// Longest wait for the server to start answering.
    pub upstream_timeout: Duration,
    /// Where audit lines go; `None` is standard output.
    pub audit_log: Option<PathBuf>,
    /// Threads serving MCP clients; `None` is one per CPU this process may use.
    pub worker_threads: Option<usize>,
    /// Longest a serving thread keeps polling after a request before it sleeps; zero is off,
    /// `None` decides by the CPU quota (see [`busy_poll::automatic_ceiling`]).
    pub busy_poll: Option<Duration>,
}

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    #[error("no upstream: give --upstream URL, --stdio -- COMMAND, or --config FILE")]
    NoUpstream,
    #[error("--upstream and --stdio are mutually exclusive")]
    TwoUpstreams,
    #[error("{field}: {value:?} is not an address like 127.0.0.1:8443")]
    Address { field: &'static str, value: String },
    #[error(
        "refusing to listen on {0} without authentication: anyone who can reach it could call every tool; \
         configure authentication, listen on a loopback address, or pass --allow-unauthenticated"
    )]
    Unauthenticated(SocketAddr),
    #[error("upstream URL {0:?} must be an http(s) URL")]
    UpstreamUrl(String),
    #[error(
        "the legacy SSE upstream transport is not supported yet; run the server with streamable HTTP"
    )]
    SseUpstream,
    #[error("{0}")]
    Setup(String),
    #[error("cannot listen on {address}: {message}")]
    Bind {
        address: SocketAddr,
        message: String,
    },
}

/// An error with its causes, `outer: inner: ...` (HTTP client errors hide the useful part).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Read and check a configuration document.
pub fn load_config(path: &Path) -> Result<GatewayConfig, GatewayError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| GatewayError::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let config: GatewayConfig =
        serde_saphyr::from_str(&text).map_err(|e| GatewayError::Config {
            path: shown.clone(),
            message: e.to_string(),
        })?;
    if config.api_version != GATEWAY_CONFIG_API_VERSION || config.kind != GATEWAY_CONFIG_KIND {
        return Err(GatewayError::Config {
            path: shown,
            message: format!(
                "expected apiVersion {GATEWAY_CONFIG_API_VERSION} and kind {GATEWAY_CONFIG_KIND}, found {} {}",
                config.api_version, config.kind
            ),
        });
    }
    if config.tools.refresh_seconds == Some(0) {
        return Err(GatewayError::Config {
            path: shown,
            message:
                "tools.refreshSeconds: 0 is not allowed; expected 1 or more seconds (default 60)"
                    .into(),
        });
    }
    Ok(config)
}

/// A configuration for a developer's laptop: one local server, no authentication, no rules.
pub fn local_config(listen: &str, upstream: UpstreamConfig) -> GatewayConfig {
    GatewayConfig {
        api_version: GATEWAY_CONFIG_API_VERSION.to_owned(),
        kind: GATEWAY_CONFIG_KIND.to_owned(),
        server: ServerIdentity {
            namespace: "local".to_owned(),
            name: "local".to_owned(),
        },
        listen: listen.to_owned(),
        admin_listen: DEFAULT_LOCAL_ADMIN_LISTEN.to_owned(),
        path: crate::builders::gateway::GATEWAY_PATH.to_owned(),
        resource: format!("http://{listen}{}", crate::builders::gateway::GATEWAY_PATH),
        upstream,
        authentication: None,
        authorization: GatewayAuthorization::default(),
        tools: GatewayTools::default(),
        limits: GatewayLimits {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            rate_limit: None,
        },
        allowed_origins: Vec::new(),
        enforcement: Enforcement::Audit,
        prompts: Vec::new(),
    }
}

/// The configuration the gateway runs with: the file (or a local default) with flags applied.
pub fn effective_config(options: &GatewayOptions) -> Result<GatewayConfig, GatewayError> {
    let override_upstream = match (&options.upstream, options.stdio.is_empty()) {
        (Some(_), false) => return Err(GatewayError::TwoUpstreams),
        (Some(url), true) => Some(UpstreamConfig::StreamableHttp { url: url.clone() }),
        (None, false) => Some(UpstreamConfig::Stdio {
            command: options.stdio.clone(),
        }),
        (None, true) => None,
    };
    let mut config = match &options.config {
        Some(path) => load_config(path)?,
        None => {
            let listen = options.listen.as_deref().unwrap_or(DEFAULT_LOCAL_LISTEN);
            local_config(
                listen,
                override_upstream.clone().ok_or(GatewayError::NoUpstream)?,
            )
        }
    };
    if let Some(upstream) = override_upstream {
        config.upstream = upstream;
    }
    if let Some(listen) = &options.listen {
        config.listen = listen.clone();
    }
    if let Some(admin) = &options.admin_listen {
        config.admin_listen = admin.clone();
    }
    Ok(config)
}

fn address(field: &'static str, value: &str) -> Result<SocketAddr, GatewayError> {
    value.parse().map_err(|_| GatewayError::Address {
        field,
        value: value.to_owned(),
    })
}

/// Refuse to expose an unauthenticated gateway beyond loopback unless told to.
pub fn check_exposure(
    config: &GatewayConfig,
    allow_unauthenticated: bool,
) -> Result<(SocketAddr, SocketAddr), GatewayError> {
    let listen = address("listen", &config.listen)?;
    let admin = address("adminListen", &config.admin_listen)?;
    if config.authentication.is_none() && !listen.ip().is_loopback() && !allow_unauthenticated {
        return Err(GatewayError::Unauthenticated(listen));
    }
    Ok((listen, admin))
}

/// Build the shared state (no sockets, no tasks).
pub fn build(
    config: &GatewayConfig,
    options: &GatewayOptions,
    audit_sink: Box<dyn std::io::Write + Send>,
) -> Result<Arc<server::Gateway>, GatewayError> {
    crate::install_tls_provider();
    let tools_changed = Arc::new(Notify::new());
    let timeout = if options.upstream_timeout.is_zero() {
        Duration::from_secs(60)
    } else {
        options.upstream_timeout
    };
    let upstream = match &config.upstream {
        UpstreamConfig::StreamableHttp { url } => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(GatewayError::UpstreamUrl(url.clone()));
            }
            upstream::Upstream::Http(Arc::new(
                upstream::HttpUpstream::new(url, timeout)
                    .map_err(|e| GatewayError::Setup(e.to_string()))?,
            ))
        }
        UpstreamConfig::Stdio { command } => upstream::Upstream::Stdio(Arc::new(
            upstream::StdioUpstream::new(command.clone(), timeout, tools_changed.clone()),
        )),
        UpstreamConfig::Sse { .. } => return Err(GatewayError::SseUpstream),
    };
    let auth =
        auth::Authenticator::from_config(config).map_err(|e| GatewayError::Setup(e.to_string()))?;
    let policy = access::AccessPolicy::new(&config.tools, &config.authorization)
        .map_err(|e| GatewayError::Setup(e.to_string()))?;
    let limits = limits::RateLimits::new(config.limits.rate_limit.as_ref())
        .map_err(|e| GatewayError::Setup(e.to_string()))?;
    let max_body = usize::try_from(config.limits.max_request_bytes.max(1)).unwrap_or(usize::MAX);
    Ok(Arc::new(server::Gateway {
        server: format!("{}/{}", config.server.namespace, config.server.name),
        path: config.path.trim_end_matches('/').to_owned(),
        upstream,
        auth,
        policy,
        limits,
        sessions: sessions::Sessions::default(),
        inventory: RwLock::new(inventory::Inventory::default()),
        inventory_refresh: tokio::sync::Mutex::new(()),
        tools_changed,
        audit: Arc::new(audit::AuditLog::new(audit_sink)),
        metrics: metrics::Metrics::new(),
        max_body,
        allowed_origins: config.allowed_origins.clone(),
        tool_checks: config.tools.clone(),
        prompts: RwLock::new(Arc::new(prompts::ManagedPrompts::new(&config.prompts))),
        manages_prompts: options.config.is_some() || !config.prompts.is_empty(),
        prompts_changed: tokio::sync::broadcast::channel(4).0,
        prompt_clashes: std::sync::Mutex::default(),
        upstream_sessions: AtomicU8::new(0),
        upstream_ready: AtomicBool::new(false),
    }))
}

/// Run the gateway until `shutdown` fires.
pub async fn run(
    options: GatewayOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let config = effective_config(&options)?;
    let (listen, admin) = check_exposure(&config, options.allow_unauthenticated)?;
    let sink: Box<dyn std::io::Write + Send> = match &options.audit_log {
        None => Box::new(std::io::stdout()),
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| GatewayError::Read {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?,
        ),
    };
    let gateway = build(&config, &options, sink)?;
    let bind = |address: SocketAddr| async move {
        tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| GatewayError::Bind {
                address,
                message: e.to_string(),
            })
    };
    let listener = bind(listen).await?;
    let admin_listener = bind(admin).await?;
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    if let upstream::Upstream::Stdio(stdio) = &gateway.upstream {
        tasks.spawn(stdio.clone().supervise(stop.clone()));
    }
    tasks.spawn(server::keep_inventory(
        gateway.clone(),
        config
            .tools
            .refresh_seconds
            .map_or(INVENTORY_REFRESH_PERIOD, |s| {
                Duration::from_secs(u64::from(s.max(1)))
            }),
        stop.clone(),
    ));
    tasks.spawn(server::housekeeping(gateway.clone(), stop.clone()));
    if let Some(path) = &options.config {
        tasks.spawn(server::keep_prompts(
            gateway.clone(),
            path.clone(),
            PROMPTS_RELOAD_PERIOD,
            stop.clone(),
        ));
    }
    if gateway.auth.is_some() {
        let gateway = gateway.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            loop {
                if let Some(auth) = &gateway.auth
                    && let Err(e) = auth.refresh_keys().await
                {
                    tracing::warn!(error = %e, "fetching the issuer's keys failed");
                }
                tokio::select! {
                    () = tokio::time::sleep(auth::JWKS_REFRESH_PERIOD) => {}
                    () = stop.cancelled() => return,
                }
            }
        });
    }
    // The bound addresses (a configured port 0 becomes a real one).
    let listen = listener.local_addr().unwrap_or(listen);
    let admin = admin_listener.local_addr().unwrap_or(admin);
    tracing::info!(%listen, %admin, server = %gateway.server, "gateway listening");
    let workers = options.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let busy_poll = options.busy_poll.unwrap_or_else(|| {
        let cpus = cpu_quota::cpu_quota();
        let ceiling = busy_poll::automatic_ceiling(cpus, workers);
        tracing::info!(
            cpu_quota = ?cpus,
            serving_threads = workers,
            busy_poll_microseconds = ceiling.as_micros(),
            "busy polling chosen by the CPU quota (--busy-poll-microseconds sets it)"
        );
        ceiling
    });
    // Dropping `stop_writing` ends the writer thread, after one last write.
    let (stop_writing, writing_stopped) = std::sync::mpsc::channel::<()>();
    gateway
        .audit
        .spawn_writer(writing_stopped)
        .map_err(|e| GatewayError::Setup(format!("cannot start the audit writer thread: {e}")))?;
    let serving = serve_clients(
        listener,
        server::ClientService::new(gateway.clone()),
        Workers {
            count: workers,
            busy_poll,
            polled: gateway.metrics.busy_poll.clone(),
            before_waiting: {
                let audit = gateway.audit.clone();
                Arc::new(move || audit.chain_queued())
            },
        },
        &stop,
    )?;
    let admin_app = server::admin_router(gateway.clone());
    let admin_stopped = stop.clone();
    let serve_admin = axum::serve(admin_listener, admin_app)
        .with_graceful_shutdown(async move { admin_stopped.cancelled().await });
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    let (a, b) = tokio::join!(serving, serve_admin);
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    drop(stop_writing);
    gateway.audit.flush();
    a.and(b.map_err(|e| GatewayError::Setup(e.to_string())))
}

/// The serving threads and how they behave between requests.
struct Workers {
    count: usize,
    /// See [`busy_poll`].
    busy_poll: Duration,
    /// Where serving threads add the time they poll.
    polled: metrics::SecondsCounter,
    /// Run by a serving thread about to wait for work (chaining audit lines).
    before_waiting: Arc<dyn Fn() + Send + Sync>,
}

/// Serve MCP clients on `workers` threads, each with its own single-threaded runtime: a request,
/// its upstream call and its answer then stay on one thread, with no wake-ups across threads
/// (what a work-stealing runtime pays on every request). One acceptor deals connections to the
/// workers in turn, so no worker takes more than its share.
fn serve_clients(
    listener: tokio::net::TcpListener,
    app: server::ClientService,
    workers: Workers,
    stop: &CancellationToken,
) -> Result<impl std::future::Future<Output = Result<(), GatewayError>>, GatewayError> {
    let mut queues = Vec::new();
    let mut finished = Vec::new();
    let Workers {
        count,
        busy_poll,
        polled,
        before_waiting,
    } = workers;
    for worker in 0..count.max(1) {
        let (queue, incoming) = tokio::sync::mpsc::unbounded_channel();
        queues.push(queue);
        let app = app.clone();
        let stopped = stop.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        finished.push(result);
        let before_waiting = before_waiting.clone();
        let polled = polled.clone();
        let serve = move || -> Result<(), String> {
            busy_poll::enable_on_this_thread(busy_poll, Some(polled));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(move || {
                    before_waiting();
                    busy_poll::going_to_sleep();
                })
                .on_thread_unpark(busy_poll::woke_up)
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                tokio::spawn(resident_timer());
                serve_dealt(incoming, app, stopped).await;
                Ok(())
            })
        };
        std::thread::Builder::new()
            .name(format!("gateway-{worker}"))
            .spawn(move || {
                let _ = done.send(serve());
            })
            .map_err(|e| GatewayError::Setup(format!("cannot start a worker thread: {e}")))?;
    }
    let accepting = stop.clone();
    tokio::spawn(async move {
        let mut next = 0;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = accepting.cancelled() => return,
            };
            match accepted.and_then(|(stream, peer)| Ok((stream.into_std()?, peer))) {
                Ok(connection) => {
                    let _ = queues[next % queues.len()].send(connection);
                    next = next.wrapping_add(1);
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    let stop = stop.clone();
    Ok(async move {
        use futures::StreamExt as _;
        let mut finished: futures::stream::FuturesUnordered<_> = finished.into_iter().collect();
        let mut outcome = Ok(());
        while let Some(result) = finished.next().await {
            let result = result.unwrap_or_else(|_| Err("a worker thread stopped".to_owned()));
            if let Err(e) = result {
                // One worker failing stops the others: a half-served port is worse than none.
                stop.cancel();
                outcome = Err(GatewayError::Setup(e));
            }
        }
        outcome
    })
}

/// Keep a worker's timer wheel from ever being empty. Tokio wakes its own driver (an eventfd
/// write, then one more epoll round) whenever a new timer is due before every pending one, and on
/// an idle worker a request's upstream deadline always is; with this earlier deadline always
/// pending, arming a request's deadline costs no system call.
async fn resident_timer() {
    let mut tick = tokio::time::interval(RESIDENT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Shorter than any upstream deadline (at least a second), so those never come first.
const RESIDENT_TICK: Duration = Duration::from_millis(500);

/// Serve the connections the acceptor deals to one worker until `stop`, then let each finish
/// the request it is on; returns once all are closed.
async fn serve_dealt(
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    app: server::ClientService,
    stop: CancellationToken,
) {
    // A token of this worker's own, so its connections' shutdown watch is not shared with the
    // other workers' (each connection polls it on every wake-up).
    let stop = stop.child_token();
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let dealt = tokio::select! {
            dealt = incoming.recv() => dealt,
            () = stop.cancelled() => None,
        };
        // `None` from the queue: the acceptor stopped, which only shutdown does.
        let Some((stream, _peer)) = dealt else { break };
        // Registered with this worker's runtime, so its I/O is driven here.
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "taking over a connection failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                biased;
                _ = connection.as_mut() => return,
                () = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            // An error here is the client's connection failing; nothing to tell anyone.
            let _ = connection.await;
        });
    }
    connections.close();
    connections.wait().await;
}
