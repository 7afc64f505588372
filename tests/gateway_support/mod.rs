//! Starting the gateway and the third-party MCP peers it is tested against. Every process
//! listens on 127.0.0.1 with a port from the OS and is killed when its handle drops (and exits
//! by itself when its standard input closes, should the test process die first).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mcp_operator::api::gateway_config::{GatewayConfig, Upstream};
use serde_json::{Value, json};

use crate::common::{repo, venv_tool};

/// How long a peer may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an audit line may take to appear after its answer (the gateway writes within half a
/// second even when busy; this allows for a loaded machine).
pub const AUDIT_WAIT: Duration = Duration::from_secs(10);

/// A child process killed on drop.
pub struct Process {
    child: Child,
    /// The port it printed (peers) or 0.
    pub port: u16,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Write one line to the peer's standard input (a command the peer understands).
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self
            .child
            .stdin
            .as_mut()
            .expect("the peer's stdin is piped");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `command` (stdin kept open, stdout piped) and wait for it to print `PORT <n>`.
pub fn spawn_peer(mut command: Command) -> Process {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().expect("start the peer");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("PORT ") {
                let _ = tx.send(port.trim().parse::<u16>().unwrap());
            }
        }
    });
    let port = rx
        .recv_timeout(START_TIMEOUT)
        .unwrap_or_else(|_| panic!("{command:?} did not print its port"));
    Process { child, port }
}

pub fn peers_dir() -> PathBuf {
    repo().join("tests/peers")
}

/// The official Python SDK server (`tests/peers/fastmcp_server.py`) over streamable HTTP.
pub fn fastmcp(args: &[&str], header_log: Option<&Path>) -> Process {
    let mut command = Command::new(venv_tool("python"));
    command
        .arg(peers_dir().join("fastmcp_server.py"))
        .args(args);
    if let Some(log) = header_log {
        command.env("MCP_TEST_HEADER_LOG", log);
    }
    spawn_peer(command)
}

/// The command that runs the Python SDK server over stdio.
pub fn fastmcp_stdio_command() -> Vec<String> {
    vec![
        venv_tool("python").display().to_string(),
        peers_dir().join("fastmcp_server.py").display().to_string(),
        "--stdio".into(),
    ]
}

/// The npm reference server `@modelcontextprotocol/server-everything` over streamable HTTP.
pub fn everything() -> Process {
    let node_dir = peers_dir().join("node");
    let entry = node_dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        entry.exists(),
        "{} is missing: run `scripts/test.sh` (it runs npm ci in tests/peers/node)",
        entry.display()
    );
    let mut command = Command::new("node");
    command
        .current_dir(&node_dir)
        .arg("-r")
        .arg("./listen-loopback.cjs")
        .arg(entry)
        .arg("streamableHttp")
        .env("PORT", "0");
    spawn_peer(command)
}

/// A running gateway.
pub struct Gateway {
    process: Process,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub audit_log: PathBuf,
    /// The configuration file it runs with (it reloads the prompt bundle from it).
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.listen)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The audit log once `complete` holds for its lines, or as it is after [`AUDIT_WAIT`]
    /// (the caller's assertions then say what is missing). The gateway writes its lines just
    /// after its answers, so a client that has its answer may still find them unwritten.
    pub fn audit_lines_when(&self, complete: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + AUDIT_WAIT;
        loop {
            let lines: Vec<String> = std::fs::read_to_string(&self.audit_log)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect();
            if complete(&lines) || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The exit status once the gateway has exited, or `None` if it still runs after `limit`.
    pub fn exit_status_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.process.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until /readyz says the upstream answers.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let client = http();
        loop {
            if let Ok(r) = client.get(self.admin_url("/readyz")).send()
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "the gateway never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A blocking HTTP client (rustls with ring, like the binary).
pub fn http() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A configuration for tests: loopback, port 0, the given upstream, no auth.
pub fn config(upstream: Upstream) -> GatewayConfig {
    let mut config = mcp_operator::gateway::local_config("127.0.0.1:0", upstream);
    config.admin_listen = "127.0.0.1:0".into();
    config.server.namespace = "tests".into();
    config.server.name = "peer".into();
    config
}

pub fn http_upstream(port: u16) -> Upstream {
    Upstream::StreamableHttp {
        url: format!("http://127.0.0.1:{port}/mcp"),
    }
}

/// Start `mcp-operator gateway --config` with `config` (written as JSON, which is YAML).
pub fn start_gateway(config: &GatewayConfig, extra_args: &[&str], env: &[(&str, &str)]) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).unwrap();
    let audit_log = dir.path().join("audit.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcp-operator"));
    command
        .arg("gateway")
        .arg("--config")
        .arg(&path)
        .arg("--audit-log")
        .arg(&audit_log)
        .arg("--log-format")
        .arg("json")
        .args(extra_args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start the gateway");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str::<Value>(&line)
                && value["fields"]["message"] == "gateway listening"
            {
                let _ = tx.send((
                    value["fields"]["listen"]
                        .as_str()
                        .unwrap()
                        .parse::<SocketAddr>()
                        .unwrap(),
                    value["fields"]["admin"]
                        .as_str()
                        .unwrap()
                        .parse::<SocketAddr>()
                        .unwrap(),
                ));
            } else {
                eprintln!("gateway: {line}");
            }
        }
    });
    let (listen, admin) = rx
        .recv_timeout(START_TIMEOUT)
        .expect("the gateway did not start listening");
    Gateway {
        process: Process {
            child,
            port: listen.port(),
        },
        listen,
        admin,
        audit_log,
        config_path: path,
        _dir: dir,
    }
}

/// Run the Python SDK client scenario (`tests/peers/client.py`) and return what it saw.
pub fn python_client(url: &str, mode: &str, profile: &str, token: Option<&str>) -> Value {
    let mut command = Command::new(venv_tool("python"));
    command
        .arg(peers_dir().join("client.py"))
        .arg(url)
        .arg(mode)
        .arg(profile);
    if let Some(token) = token {
        command.arg(token);
    }
    let output = command.output().expect("run the Python client");
    assert!(
        output.status.success(),
        "the Python client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

pub const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// Open a session (2025-11-25) and send `initialized`; returns the session id.
pub fn initialize(client: &reqwest::blocking::Client, url: &str) -> String {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH)
        .body(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}).to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let note = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .send()
        .unwrap();
    assert_eq!(note.status(), 202);
    session
}

/// One JSON-RPC request in a session; the response (JSON or one SSE event).
pub fn rpc(client: &reqwest::blocking::Client, url: &str, session: &str, body: Value) -> Value {
    let text = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH)
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-11-25")
        .body(body.to_string())
        .send()
        .unwrap()
        .text()
        .unwrap();
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or(&text);
    serde_json::from_str(json).unwrap()
}

/// The tools of the gateway's admin /inventory.
pub fn inventory_tools(gateway: &Gateway) -> Vec<Value> {
    let inventory: Value = http()
        .get(gateway.admin_url("/inventory"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    inventory["inventory"]["tools"].as_array().unwrap().clone()
}

/// The tool names `tools/list` returns in a session, sorted.
pub fn listed_tool_names(
    client: &reqwest::blocking::Client,
    url: &str,
    session: &str,
) -> Vec<String> {
    let listed = rpc(
        client,
        url,
        session,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    );
    let mut names: Vec<String> = listed["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {listed}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}
