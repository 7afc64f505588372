//! Controller scale benchmark. For each N: create N MCPServers in the in-process API server,
//! run `mcp-operator controller` as a separate process against it, and measure the time until
//! all are Ready, the API requests per server by verb, and the controller's peak RSS. Then
//! restart the controller with nothing to do and count its writes (must be 0). The floor, in
//! the same run: the same server-side-apply writes (children + one status per server) issued by
//! a minimal loop with the same concurrency against a fresh API server.
//!
//! Run: `cargo bench --bench controller_scale --features testkit -- [N ...]` (default 1000 10000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use mcp_operator::api::MCPServer;
use mcp_operator::builders::{self, BuildContext, ServerInputs};
use mcp_operator::testkit::apiserver::{ApiServer, EventKind, Options};
use serde_json::{Value, json};

const CONCURRENCY: u16 = 32;
const NAMESPACE: &str = "bench";

fn server_spec(i: usize) -> Value {
    json!({
        "apiVersion": "mcp-operator.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": format!("server-{i:05}"), "labels": {"team": format!("team-{}", i % 20)}},
        "spec": {
            "image": format!("registry.example.com/mcp/server-{}@sha256:{}", i % 50, "ab".repeat(32)),
            "replicas": 2,
            "egress": [{"cidr": "140.82.112.0/20", "ports": [{"port": 443}]}],
            "authentication": {"issuer": "https://login.example.com/realms/agents", "requiredScopes": ["mcp:tools"]},
            "authorization": [{"tools": ["get_*", "list_*"], "subjects": {"groups": ["developers"]}}],
            "secretEnv": [{"name": "TOKEN", "secretKeyRef": {"name": "server-token", "key": "token"}}]
        }
    })
}

async fn populated_server(n: usize) -> ApiServer {
    let api = ApiServer::start_with(Options {
        history_limit: 50_000,
        ..Options::default()
    })
    .await
    .unwrap();
    api.install_crds().unwrap();
    for i in 0..n {
        api.create(
            "mcp-operator.dev/v1alpha1",
            "MCPServer",
            NAMESPACE,
            server_spec(i),
        )
        .unwrap();
    }
    api.spawn_deployment_controller();
    api
}

/// Resolves when `n` servers have status phase Ready, following the change feed.
async fn all_ready(api: &ApiServer, n: usize) {
    let mut changes = api.changes();
    let mut ready: HashSet<String> = HashSet::new();
    for s in api.list("mcp-operator.dev/v1alpha1", "MCPServer") {
        if s.pointer("/status/phase") == Some(&json!("Ready")) {
            ready.insert(s["metadata"]["name"].as_str().unwrap().to_string());
        }
    }
    while ready.len() < n {
        match changes.recv().await {
            Ok(e)
                if e.resource == "mcp-operator.dev/mcpservers" && e.kind != EventKind::Deleted =>
            {
                let name = e.object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if e.object.pointer("/status/phase") == Some(&json!("Ready")) {
                    ready.insert(name);
                } else {
                    ready.remove(&name);
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                ready = api
                    .list("mcp-operator.dev/v1alpha1", "MCPServer")
                    .into_iter()
                    .filter(|s| s.pointer("/status/phase") == Some(&json!("Ready")))
                    .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
                    .collect();
            }
            Err(_) => panic!("the API server stopped"),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A controller process, killed when dropped (so a failed run leaves none behind).
struct ControllerProcess(Option<Child>);

impl ControllerProcess {
    fn id(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Stop it with SIGTERM, as Kubernetes would, and wait for it.
    fn stop(mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_controller(
    api: &ApiServer,
    identity: &str,
    dir: &std::path::Path,
    metrics_port: u16,
) -> ControllerProcess {
    let kubeconfig = dir.join(format!("{identity}.kubeconfig"));
    std::fs::write(&kubeconfig, api.kubeconfig(identity)).unwrap();
    let log = std::fs::File::create(dir.join(format!("{identity}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_mcp-operator"))
        .args([
            "controller",
            "--leader-elect=false",
            "--concurrency",
            &CONCURRENCY.to_string(),
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .env(
            "RUST_LOG",
            std::env::var("BENCH_CONTROLLER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(|child| ControllerProcess(Some(child)))
        .unwrap()
}

/// Peak resident set size of a process, in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The controller's completed reconciles, from its /metrics.
fn reconciles(port: u16) -> u64 {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.lines()
        .find(|l| l.starts_with("mcp_operator_reconciles_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// The minimal loop: build each server's objects and apply them plus one status, with the
/// controller's concurrency and no watches or caches.
async fn floor(api: &ApiServer, n: usize) -> Duration {
    let client = api.client("floor").unwrap();
    let servers: Vec<MCPServer> = (0..n)
        .map(|i| {
            let mut s: MCPServer = serde_json::from_value(server_spec(i)).unwrap();
            s.metadata.namespace = Some(NAMESPACE.into());
            s.metadata.uid = api
                .get(
                    "mcp-operator.dev/v1alpha1",
                    "MCPServer",
                    NAMESPACE,
                    s.metadata.name.as_deref().unwrap(),
                )
                .and_then(|o| {
                    o.pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
            s
        })
        .collect();
    let ctx = BuildContext::default();
    let started = Instant::now();
    futures::stream::iter(servers.iter())
        .for_each_concurrent(usize::from(CONCURRENCY), |server| {
            let client = client.clone();
            let ctx = ctx.clone();
            async move {
                let desired = builders::build(ServerInputs { server, policies: &[], prompt_versions: &[] }, &ctx).unwrap();
                for object in desired.objects().unwrap() {
                    let resource = ApiResource::from_gvk(&kube::core::GroupVersionKind::try_from(&kube::api::TypeMeta {
                        api_version: object["apiVersion"].as_str().unwrap().into(),
                        kind: object["kind"].as_str().unwrap().into(),
                    })
                    .unwrap());
                    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
                    api.patch(object["metadata"]["name"].as_str().unwrap(), &PatchParams::apply("floor").force(), &Patch::Apply(&object)).await.unwrap();
                }
                let servers: Api<MCPServer> = Api::namespaced(client.clone(), NAMESPACE);
                let status = json!({"apiVersion": "mcp-operator.dev/v1alpha1", "kind": "MCPServer", "status": {"phase": "Ready", "observedGeneration": 1}});
                servers.patch_status(server.metadata.name.as_deref().unwrap(), &PatchParams::apply("floor").force(), &Patch::Apply(&status)).await.unwrap();
            }
        })
        .await;
    started.elapsed()
}

#[derive(Debug)]
struct Row {
    n: usize,
    ready: Duration,
    floor: Duration,
    per_server: Vec<(&'static str, f64)>,
    writes_per_server: f64,
    peak_rss_kib: u64,
    resync_writes: u64,
    resync_peak_rss_kib: u64,
}

async fn run(n: usize) -> Row {
    // Controller logs stay in the temporary directory; BENCH_KEEP_LOGS keeps it.
    let tmp = tempfile::tempdir().unwrap();
    let kept;
    let dir: &std::path::Path = if std::env::var_os("BENCH_KEEP_LOGS").is_some() {
        kept = tmp.keep();
        eprintln!("controller logs in {}", kept.display());
        &kept
    } else {
        tmp.path()
    };

    // Floor first (a fresh API server with the same servers).
    let floor_api = populated_server(n).await;
    let floor_time = floor(&floor_api, n).await;
    drop(floor_api);

    let api = populated_server(n).await;
    let port = free_port();
    let started = Instant::now();
    let controller = spawn_controller(&api, "controller", dir, port);
    all_ready(&api, n).await;
    let ready = started.elapsed();
    let peak = peak_rss_kib(controller.id());
    let counts = api.counts();
    let per_server: Vec<(&'static str, f64)> = counts
        .by_verb(Some("controller"))
        .into_iter()
        .map(|(verb, count)| (verb, count as f64 / n as f64))
        .collect();
    let writes_per_server = counts.writes(Some("controller")) as f64 / n as f64;
    eprintln!(
        "N={n}: controller writes by resource: {:?}",
        counts.writes_by_resource(Some("controller"))
    );
    controller.stop();

    // A restart with nothing to do: every server is reconciled, nothing is written.
    api.reset_counts();
    let port = free_port();
    let resync = spawn_controller(&api, "resync", dir, port);
    let deadline = Instant::now() + Duration::from_secs(600);
    while reconciles(port) < n as u64 {
        assert!(
            Instant::now() < deadline,
            "the restarted controller did not reconcile every server"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resync_peak = peak_rss_kib(resync.id());
    let resync_writes = api.counts().writes(Some("resync"));
    eprintln!(
        "N={n}: restarted controller writes by resource: {:?}",
        api.counts().writes_by_resource(Some("resync"))
    );
    resync.stop();

    Row {
        n,
        ready,
        floor: floor_time,
        per_server,
        writes_per_server,
        peak_rss_kib: peak,
        resync_writes,
        resync_peak_rss_kib: resync_peak,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1000, 10_000]
    } else {
        sizes
    };
    println!(
        "| N | time to all Ready | floor (same SSA writes, minimal loop) | ratio | writes per server | requests per server by verb | no-op restart writes | peak RSS | peak RSS per server |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let row = run(n).await;
        let verbs = row
            .per_server
            .iter()
            .map(|(v, c)| format!("{v} {c:.3}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "| {} | {:.2} s | {:.2} s | {:.2} | {:.2} | {} | {} | {:.1} MiB | {:.2} KiB |",
            row.n,
            row.ready.as_secs_f64(),
            row.floor.as_secs_f64(),
            row.ready.as_secs_f64() / row.floor.as_secs_f64(),
            row.writes_per_server,
            verbs,
            row.resync_writes,
            row.peak_rss_kib as f64 / 1024.0,
            row.peak_rss_kib as f64 / row.n as f64,
        );
        eprintln!(
            "restarted controller peak RSS: {:.1} MiB",
            row.resync_peak_rss_kib as f64 / 1024.0
        );
    }
}
