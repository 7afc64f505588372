//! What the gateway adds to a `tools/call`, against the plain proxy hop nginx adds, in one run,
//! interleaved, on one machine; plus the gateway's memory idle and with 1,000 open sessions, and
//! the official Python SDK server as a realistic upstream.
//!
//! Run: `cargo bench --bench gateway_latency` (needs nginx on PATH or in /usr/sbin, and the
//! Python SDK in .venv as `scripts/test.sh` installs it). Optional argument: seconds per
//! measurement slice (default 2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/gateway_support/issuer.rs"]
mod issuer;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use mcp_operator::api::common::{RuleAction, SubjectMatcher, ToolAccessRule};
use mcp_operator::api::gateway_config::{GatewayAuthentication, Upstream};
use nix::sched::CpuSet;
use serde_json::{Value, json};

const RESOURCE: &str = "https://bench.example.test/mcp";
/// Interleaved rounds per path and concurrency: on a shared two-CPU machine one slice can land on
/// a bad placement of the threads, and more rounds make one such slice count for less.
const ROUNDS: usize = 5;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        // SIGTERM, so nginx's master stops its workers too.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// The fast upstream: answers initialize (with a session id), tools/list and an echo tool.
async fn fast_upstream(headers: HeaderMap, body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let _ = headers;
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return (axum::http::StatusCode::BAD_REQUEST, "bad json").into_response();
    };
    let id = message.get("id").cloned();
    let method = message["method"].as_str().unwrap_or("");
    let Some(id) = id else {
        return axum::http::StatusCode::ACCEPTED.into_response();
    };
    let result = match method {
        "initialize" => {
            json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "fast", "version": "1"}})
        }
        "tools/list" => {
            json!({"tools": [{"name": "echo", "description": "Echo the text.", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}]})
        }
        "tools/call" => {
            json!({"content": [{"type": "text", "text": message["params"]["arguments"]["text"]}], "isError": false})
        }
        _ => json!({}),
    };
    let body = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
    let mut response = (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if method == "initialize" {
        let session = format!("{:032x}", fastrand::u128(..));
        response
            .headers_mut()
            .insert("mcp-session-id", session.parse().unwrap());
    }
    response
}

fn start_fast_upstream() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().route("/mcp", axum::routing::post(fast_upstream));
            axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app)
                .await
                .unwrap();
        });
    });
    address
}

/// Worker processes of nginx and serving threads of the gateway (`GATEWAY_BENCH_WORKERS`,
/// default 2).
fn workers() -> usize {
    std::env::var("GATEWAY_BENCH_WORKERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2)
}

/// Where the parties run (`GATEWAY_BENCH_PLACEMENT`).
///
/// `free` (the default): no pinning, as the kernel places them.
///
/// `pinned`: the clients on the first half of the CPUs; the upstream and the proxy
/// under test (nginx's workers, the gateway's threads) on the other half, as a sidecar sits next
/// to its server with the clients elsewhere. Every path then has the same wake-up topology: two
/// hops across CPUs per call (client to server side and back), the proxy and the upstream
/// waking each other on one side. Left free, the kernel settles the three parties into one of
/// several stable placements per run, and on a virtual machine, where a wake-up on another CPU
/// costs about 20 µs, which one it picks moves the one-client figures more than the proxies'
/// own work does. Pinned, though, the proxy shares its CPUs with the upstream, so its CPU time
/// adds to the upstream's (the Python SDK server's above all) where left free it would often run
/// beside it.
struct Placement {
    clients: Option<CpuSet>,
    server_side: Option<CpuSet>,
}

impl Placement {
    fn from_env() -> Self {
        let free = Self {
            clients: None,
            server_side: None,
        };
        let wanted = std::env::var("GATEWAY_BENCH_PLACEMENT").unwrap_or_else(|_| "free".into());
        match wanted.as_str() {
            "free" => free,
            "pinned" => {
                let cpus = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
                    .map(|set| cpus_in(&set))
                    .unwrap_or_default();
                if cpus.len() < 2 {
                    return free;
                }
                let (clients, server_side) = cpus.split_at(cpus.len() / 2);
                let set = |cpus: &[usize]| {
                    let mut set = CpuSet::new();
                    for &cpu in cpus {
                        set.set(cpu).unwrap();
                    }
                    set
                };
                Self {
                    clients: Some(set(clients)),
                    server_side: Some(set(server_side)),
                }
            }
            other => panic!("GATEWAY_BENCH_PLACEMENT is pinned or free, not {other:?}"),
        }
    }

    fn describe(&self) -> String {
        let list = |set: &CpuSet| {
            cpus_in(set)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match (&self.clients, &self.server_side) {
            (Some(c), Some(s)) => format!(
                "pinned: clients on CPU {}, upstream and proxy on CPU {}",
                list(c),
                list(s)
            ),
            _ => "free: placed by the kernel".into(),
        }
    }

    /// Run `start` on the server side's CPUs: the threads and processes it starts stay there.
    fn on_server_side<T>(&self, start: impl FnOnce() -> T) -> T {
        pin_this_thread(self.server_side.as_ref());
        let started = start();
        pin_this_thread(self.clients.as_ref());
        started
    }
}

fn cpus_in(set: &CpuSet) -> Vec<usize> {
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

fn pin_this_thread(cpus: Option<&CpuSet>) {
    if let Some(cpus) = cpus {
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), cpus).unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nginx(dir: &Path, upstream: SocketAddr) -> (Killed, SocketAddr) {
    let port = free_port();
    let d = dir.display();
    let workers = workers();
    let conf = format!(
        "worker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           upstream mcp {{ server {upstream}; keepalive 128; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://mcp;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let nginx = ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .find(|n| {
            Command::new(n)
                .arg("-v")
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
        .expect("nginx is not installed (apt-get install nginx-light)");
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_port(address);
    (Killed(child), address)
}

fn wait_for_port(address: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "{address} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_gateway(
    dir: &Path,
    name: &str,
    upstream: &str,
    issuer: &issuer::Issuer,
    busy_poll_microseconds: Option<u16>,
) -> (Killed, SocketAddr, SocketAddr) {
    let mut config = mcp_operator::gateway::local_config(
        "127.0.0.1:0",
        Upstream::StreamableHttp {
            url: upstream.to_owned(),
        },
    );
    config.admin_listen = "127.0.0.1:0".into();
    config.resource = RESOURCE.into();
    config.authentication = Some(GatewayAuthentication {
        issuer: issuer.url.clone(),
        jwks_uri: Some(format!("{}/jwks.json", issuer.url)),
        audiences: vec![RESOURCE.into()],
        required_scopes: vec!["mcp:tools".into()],
        groups_claim: "groups".into(),
        max_token_lifetime_seconds: None,
    });
    config.authorization.rules = vec![ToolAccessRule {
        tools: vec!["*".into()],
        subjects: SubjectMatcher {
            groups: vec!["eng".into()],
            ..SubjectMatcher::default()
        },
        action: RuleAction::Allow,
    }];
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcp-operator"));
    command.arg("gateway");
    if let Some(micros) = busy_poll_microseconds {
        command
            .arg("--busy-poll-microseconds")
            .arg(micros.to_string());
    }
    let mut child = command
        .args(["--log-format", "json", "--config"])
        .arg(&path)
        .arg("--audit-log")
        .arg(dir.join(format!("{name}-audit.log")))
        .env("SSL_CERT_FILE", &issuer.ca_file)
        .env("RUST_LOG", "warn,mcp_operator::gateway=info")
        .arg("--worker-threads")
        .arg(workers().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["fields"]["message"] == "gateway listening"
            {
                let _ = tx.send((
                    v["fields"]["listen"].as_str().unwrap().parse().unwrap(),
                    v["fields"]["admin"].as_str().unwrap().parse().unwrap(),
                ));
            }
        }
    });
    let (listen, admin): (SocketAddr, SocketAddr) =
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = reqwest::blocking::get(format!("http://{admin}/readyz"))
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Killed(child), listen, admin)
}

/// User and system CPU time of process `pid` so far, in seconds (`/proc` counts in 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The gateway with busy polling off (`--busy-poll-microseconds 0`).
const NO_POLL: &str = "gateway-no-poll";

#[derive(Clone)]
struct Target {
    name: &'static str,
    url: String,
    token: Option<String>,
    /// A new connection per request instead of keep-alive.
    fresh_connections: bool,
}

async fn open_session(client: &reqwest::Client, target: &Target) -> Option<String> {
    let mut request = client
        .post(&target.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#);
    if let Some(token) = &target.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{}: initialize {}",
        target.name,
        response.status()
    );
    let session = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let _ = response.bytes().await;
    let mut note = client
        .post(&target.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    if let Some(token) = &target.token {
        note = note.bearer_auth(token);
    }
    if let Some(s) = &session {
        note = note.header("mcp-session-id", s);
    }
    let _ = note.send().await.unwrap().bytes().await;
    session
}

/// `clients` workers each calling echo back to back for `slice`; latencies in microseconds.
async fn measure(target: &Target, clients: usize, slice: Duration) -> (Vec<u32>, f64) {
    let mut workers = Vec::new();
    let started = Instant::now();
    for worker in 0..clients {
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let idle = if target.fresh_connections { 0 } else { 1 };
            let client = reqwest::Client::builder().http1_only().pool_max_idle_per_host(idle).build().unwrap();
            let session = open_session(&client, &target).await;
            let mut latencies = Vec::new();
            let begin = Instant::now();
            let mut id = (worker as u64) << 32;
            while begin.elapsed() < slice {
                id += 1;
                let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"ping {id}"}}}}}}"#);
                let mut request = client
                    .post(&target.url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-protocol-version", "2025-11-25")
                    .body(body);
                if let Some(token) = &target.token {
                    request = request.bearer_auth(token);
                }
                if let Some(s) = &session {
                    request = request.header("mcp-session-id", s);
                }
                let t = Instant::now();
                let response = request.send().await.unwrap();
                let ok = response.status().is_success();
                let bytes = response.bytes().await.unwrap();
                assert!(ok && bytes.windows(4).any(|w| w == b"ping"), "{}: bad answer", target.name);
                latencies.push(t.elapsed().as_micros() as u32);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let rps = all.len() as f64 / started.elapsed().as_secs_f64();
    (all, rps)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

struct Summary {
    p50: f64,
    p90: f64,
    p99: f64,
    rps: f64,
}

fn summarize(mut latencies: Vec<u32>, rps_samples: &[f64]) -> Summary {
    latencies.sort_unstable();
    Summary {
        p50: percentile(&latencies, 0.5),
        p90: percentile(&latencies, 0.9),
        p99: percentile(&latencies, 0.99),
        rps: rps_samples.iter().sum::<f64>() / rps_samples.len() as f64,
    }
}

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("MCP_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    venv.join("bin/python")
}

fn main() {
    let slice = Duration::from_secs(
        std::env::args()
            .skip(1)
            .find_map(|a| a.parse().ok())
            .unwrap_or(2),
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer::start_issuer();
    let key = issuer::SigningKey::ec("bench");
    *issuer.jwks.lock().unwrap() = json!({"keys": [key.jwk()]});
    let token = key.sign(&json!({"iss": issuer.url, "sub": "bench", "aud": RESOURCE, "scope": "mcp:tools", "groups": ["eng"], "iat": issuer::now(), "exp": issuer::now() + 3600}));

    let placement = Placement::from_env();
    let (
        upstream,
        (_nginx, nginx),
        (gateway, listen, _admin),
        (no_poll_gateway, no_poll_listen, _),
    ) = placement.on_server_side(|| {
        let upstream = start_fast_upstream();
        wait_for_port(upstream);
        let upstream_url = format!("http://{upstream}/mcp");
        (
            upstream,
            start_nginx(dir.path(), upstream),
            start_gateway(dir.path(), "fast", &upstream_url, &issuer, None),
            start_gateway(dir.path(), "no-poll", &upstream_url, &issuer, Some(0)),
        )
    });
    let targets = [
        Target {
            name: "direct",
            url: format!("http://{upstream}/mcp"),
            token: None,
            fresh_connections: false,
        },
        Target {
            name: "nginx",
            url: format!("http://{nginx}/mcp"),
            token: None,
            fresh_connections: false,
        },
        Target {
            name: "gateway",
            url: format!("http://{listen}/mcp"),
            token: Some(token.clone()),
            fresh_connections: false,
        },
        Target {
            name: NO_POLL,
            url: format!("http://{no_poll_listen}/mcp"),
            token: Some(token.clone()),
            fresh_connections: false,
        },
    ];
    let cpus = mcp_operator::gateway::cpu_quota::cpu_quota();
    let automatic = mcp_operator::gateway::busy_poll::automatic_ceiling(cpus, workers());
    let client_cpus = placement.clients;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || pin_this_thread(client_cpus.as_ref()))
        .build()
        .unwrap();
    // Profiling aid: `GATEWAY_BENCH_PROFILE=SECONDS[,PATH[,CLIENTS]]` loads only one path
    // (default gateway, 32 clients) for that long, so `perf record -p PID` sees nothing else.
    if let Ok(profile) = std::env::var("GATEWAY_BENCH_PROFILE") {
        let mut parts = profile.split(',');
        let seconds: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(10);
        let path = parts.next().unwrap_or("gateway");
        let clients: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(32);
        let target = targets
            .iter()
            .find(|t| t.name == path)
            .expect("a path name");
        eprintln!(
            "gateway pid {} no-poll pid {} nginx pid {}",
            gateway.0.id(),
            no_poll_gateway.0.id(),
            _nginx.0.id()
        );
        let (latencies, rps) =
            runtime.block_on(measure(target, clients, Duration::from_secs(seconds)));
        if std::env::var_os("GATEWAY_BENCH_SPREAD").is_some() {
            let mut sorted = latencies.clone();
            sorted.sort_unstable();
            let spread: Vec<String> = [0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]
                .iter()
                .map(|p| format!("{:.0}", percentile(&sorted, *p) * 1000.0))
                .collect();
            eprintln!(
                "{path} spread us p10/25/50/75/90/95/99: {}",
                spread.join(" ")
            );
        }
        let s = summarize(latencies, &[rps]);
        println!(
            "{path}, {clients} clients: p50 {:.3} ms, p99 {:.3} ms, {:.0} requests/s",
            s.p50, s.p99, s.rps
        );
        return;
    }
    println!(
        "# gateway_latency: {} s slices, {ROUNDS} interleaved rounds per target and concurrency; {} serving threads; gateway has the defaults (CPU quota {:?}: busy polling up to {} µs), {NO_POLL} --busy-poll-microseconds 0; placement {}\n",
        slice.as_secs(),
        workers(),
        cpus,
        automatic.as_micros(),
        placement.describe()
    );
    let mut results: Vec<(usize, &'static str, Summary)> = Vec::new();
    // CPU time (user + system) of each gateway per call, by concurrency.
    let gateway_pids = [
        ("gateway", gateway.0.id()),
        (NO_POLL, no_poll_gateway.0.id()),
    ];
    let mut cpu_per_call: Vec<(usize, &'static str, f64)> = Vec::new();
    for clients in [1usize, 32] {
        for target in &targets {
            runtime.block_on(measure(target, clients, Duration::from_millis(500))); // warm-up
        }
        let mut latencies: Vec<Vec<u32>> = vec![Vec::new(); targets.len()];
        let mut rps: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
        let mut cpu = vec![(0.0f64, 0usize); targets.len()];
        for _round in 0..ROUNDS {
            for (i, target) in targets.iter().enumerate() {
                let pid = gateway_pids
                    .iter()
                    .find(|(n, _)| *n == target.name)
                    .map(|(_, p)| *p);
                let before = pid.map(cpu_seconds);
                let (l, r) = runtime.block_on(measure(target, clients, slice));
                if let (Some(pid), Some(before)) = (pid, before) {
                    cpu[i].0 += cpu_seconds(pid) - before;
                    cpu[i].1 += l.len();
                }
                latencies[i].extend(l);
                rps[i].push(r);
            }
        }
        for (i, target) in targets.iter().enumerate() {
            if cpu[i].1 > 0 {
                cpu_per_call.push((clients, target.name, cpu[i].0 / cpu[i].1 as f64 * 1e6));
            }
        }
        for (i, target) in targets.iter().enumerate() {
            results.push((
                clients,
                target.name,
                summarize(std::mem::take(&mut latencies[i]), &rps[i]),
            ));
        }
    }
    println!("| clients | path | p50 ms | p90 ms | p99 ms | requests/s |");
    println!("|---|---|---|---|---|---|");
    for (clients, name, s) in &results {
        println!(
            "| {clients} | {name} | {:.3} | {:.3} | {:.3} | {:.0} |",
            s.p50, s.p90, s.p99, s.rps
        );
    }
    println!();
    for clients in [1usize, 32] {
        let get = |name: &str| {
            &results
                .iter()
                .find(|(c, n, _)| *c == clients && *n == name)
                .unwrap()
                .2
        };
        let (direct, nginx) = (get("direct"), get("nginx"));
        let added = |s: &Summary, d: &Summary| (s.p50 - d.p50, s.p99 - d.p99);
        let (n50, n99) = added(nginx, direct);
        for name in ["gateway", NO_POLL] {
            let gateway = get(name);
            let (g50, g99) = added(gateway, direct);
            let cpu = cpu_per_call
                .iter()
                .find(|(c, n, _)| *c == clients && *n == name)
                .map_or(0.0, |(_, _, us)| *us);
            println!(
                "- {clients} client(s), {name}: added p50 {g50:.3} ms vs nginx {n50:.3} ms (ratio {:.2}, target ≤ 1.5); added p99 {g99:.3} ms vs nginx {n99:.3} ms (ratio {:.2}, target ≤ 2); throughput vs nginx {:.2} (target ≥ 0.7 at 32); gateway CPU {cpu:.1} µs per call",
                g50 / n50,
                g99 / n99,
                gateway.rps / nginx.rps
            );
        }
    }

    // Memory: idle, then with 1,000 open sessions.
    let pid = gateway.0.id();
    let idle = rss_kib(pid);
    runtime.block_on(async {
        let client = reqwest::Client::builder().http1_only().build().unwrap();
        for _ in 0..1000 {
            open_session(&client, &targets[2])
                .await
                .expect("the gateway passes the session id");
        }
    });
    let with_sessions = rss_kib(pid);
    println!(
        "- gateway RSS idle {idle} KiB, with 1,000 open sessions {with_sessions} KiB: {:.2} KiB per session (target ≤ 16)",
        (with_sessions.saturating_sub(idle)) as f64 / 1000.0
    );

    // A realistic upstream: the official Python SDK server, direct and through the gateway.
    let mut python = placement.on_server_side(|| {
        Command::new(venv_python())
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/fastmcp_server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the Python SDK is installed in .venv (scripts/test.sh)")
    });
    let mut line = String::new();
    BufReader::new(python.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _python = Killed(python);
    let python_url = format!(
        "http://127.0.0.1:{}/mcp",
        line.trim().strip_prefix("PORT ").unwrap()
    );
    let (_py_gateway, py_listen, _) = placement
        .on_server_side(|| start_gateway(dir.path(), "python", &python_url, &issuer, None));
    let py_targets = [
        Target {
            name: "python direct, keep-alive",
            url: python_url.clone(),
            token: None,
            fresh_connections: false,
        },
        Target {
            name: "python direct, new connection per request",
            url: python_url.clone(),
            token: None,
            fresh_connections: true,
        },
        Target {
            name: "python via gateway",
            url: format!("http://{py_listen}/mcp"),
            token: Some(token),
            fresh_connections: false,
        },
    ];
    let mut py_latencies = [Vec::new(), Vec::new(), Vec::new()];
    for target in &py_targets {
        runtime.block_on(measure(target, 1, Duration::from_millis(500)));
    }
    for _round in 0..3 {
        for (i, target) in py_targets.iter().enumerate() {
            py_latencies[i].extend(runtime.block_on(measure(target, 1, slice)).0);
        }
    }
    let kept = summarize(std::mem::take(&mut py_latencies[0]), &[1.0]);
    let direct = summarize(std::mem::take(&mut py_latencies[1]), &[1.0]);
    let via = summarize(std::mem::take(&mut py_latencies[2]), &[1.0]);
    // The Python SDK's server answers a request on a reused connection about 40 ms late; the
    // gateway opens a connection per SSE answer, so the fair baseline is a client that does too.
    println!(
        "- Python SDK upstream, 1 client: p50 direct {:.3} ms (keep-alive {:.3} ms), through the gateway {:.3} ms: ratio {:.3} (target ≤ 1.10); p99 {:.3} / {:.3} ms",
        direct.p50,
        kept.p50,
        via.p50,
        via.p50 / direct.p50,
        direct.p99,
        via.p99
    );
}
