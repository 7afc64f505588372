//! The gateway against MCP implementations we did not write: the official Python SDK's client
//! through the gateway to the Python SDK server, the npm reference server and a stdio server,
//! in both protocol eras; plus malformed requests, rate limits and the admin endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod gateway_support;
#[path = "gateway_support/issuer.rs"]
mod issuer;

use std::collections::BTreeMap;
use std::time::Duration;

use gateway_support::*;
use mcp_operator::api::common::RateLimit;
use mcp_operator::api::gateway_config::Upstream;
use serde_json::{Value, json};

/// What every peer scenario must show through a gateway that hides one tool.
fn assert_scenario(seen: &Value, hidden_tool: &str, echo: &str) {
    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(tools.contains(&"echo"), "{seen}");
    assert!(
        !tools.contains(&hidden_tool),
        "the hidden tool is listed: {seen}"
    );
    assert!(seen["echo"][0].as_str().unwrap().contains(echo), "{seen}");
    assert_eq!(seen["echoIsError"], false);
    assert!(
        seen["progress"].as_array().unwrap().len() >= 2,
        "no progress notifications: {seen}"
    );
    assert!(!seen["prompts"].as_array().unwrap().is_empty(), "{seen}");
    assert!(!seen["greeting"][0].as_str().unwrap().is_empty(), "{seen}");
    let bad = seen["badArgs"]["error"].as_str().unwrap_or_default();
    assert!(
        bad.contains("Invalid arguments") && bad.contains("/a"),
        "bad arguments not refused: {seen}"
    );
    let hidden = seen["hidden"]["error"].as_str().unwrap_or_default();
    assert!(
        hidden.contains("Unknown tool"),
        "hidden tool callable: {seen}"
    );
}

/// Lines in the audit log once it has `expected` of them; the chain must hold and no raw
/// argument may appear.
fn audit_chain_holds(gateway: &Gateway, secret: &str, expected: usize) -> usize {
    let lines = gateway.audit_lines_when(|lines| lines.len() >= expected);
    let count = mcp_operator::gateway::audit::verify_chain(lines.iter().map(String::as_str))
        .expect("the audit chain is intact");
    for line in &lines {
        assert!(
            !line.contains(secret),
            "raw arguments leaked into the audit log: {line}"
        );
    }
    count
}

#[test]
fn python_sdk_client_to_python_sdk_server_in_both_eras() {
    let server = fastmcp(&[], None);
    let mut config = config(http_upstream(server.port));
    config.tools.deny = vec!["secret_*".into()];
    let gateway = start_gateway(&config, &[], &[]);
    gateway.wait_ready();

    let legacy = python_client(&gateway.url(), "legacy", "fastmcp", None);
    assert_eq!(legacy["protocolVersion"], "2025-11-25");
    assert_scenario(&legacy, "secret_dump", "hello through the gateway");
    assert_eq!(legacy["progress"].as_array().unwrap().len(), 3);

    let stateless = python_client(&gateway.url(), "auto", "fastmcp", None);
    assert_eq!(stateless["protocolVersion"], "2026-07-28");
    assert_scenario(&stateless, "secret_dump", "hello through the gateway");

    // Two runs: echo, progress and a prompt allowed; bad arguments and a hidden tool refused.
    let lines = gateway.audit_lines_when(|lines| lines.len() >= 10);
    assert_eq!(
        audit_chain_holds(&gateway, "hello through the gateway", 10),
        lines.len()
    );
    let decisions: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {} {}",
                v["method"].as_str().unwrap(),
                v["target"].as_str().unwrap(),
                v["decision"].as_str().unwrap()
            )
        })
        .collect();
    for run in decisions.chunks(5) {
        assert_eq!(
            run,
            [
                "tools/call echo allow",
                "tools/call count allow",
                "prompts/get greet allow",
                "tools/call add invalid",
                "tools/call secret_dump invalid",
            ],
            "{decisions:?}"
        );
    }
}

#[test]
fn an_https_server_is_reached_over_tls_trusting_the_configured_ca() {
    let server = fastmcp(&[], None);
    let front = issuer::start_tls_front(server.port);
    let mut config = config(Upstream::StreamableHttp {
        url: format!("https://127.0.0.1:{}/mcp", front.port),
    });
    config.tools.deny = vec!["secret_*".into()];
    let ca_file = front.ca_file.to_str().unwrap();
    let gateway = start_gateway(&config, &[], &[("SSL_CERT_FILE", ca_file)]);
    gateway.wait_ready();
    let seen = python_client(&gateway.url(), "legacy", "fastmcp", None);
    assert_scenario(&seen, "secret_dump", "hello through the gateway");

    // Without the CA the certificate is refused: the inventory says why, and it is not ready.
    let untrusted = start_gateway(&config, &[], &[]);
    let client = http();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let error = loop {
        let seen: Value = client
            .get(untrusted.admin_url("/inventory"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null);
        if let Some(error) = seen["inventory"]["lastError"].as_str() {
            break error.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed fetch reported: {seen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    let ready = client.get(untrusted.admin_url("/readyz")).send().unwrap();
    assert_eq!(ready.status().as_u16(), 503);
}

#[test]
fn python_sdk_client_to_the_npm_reference_server() {
    let server = everything();
    let mut config = config(http_upstream(server.port));
    config.tools.deny = vec!["get-env".into()];
    let gateway = start_gateway(&config, &[], &[]);
    gateway.wait_ready();
    let seen = python_client(&gateway.url(), "legacy", "everything", None);
    assert_scenario(&seen, "get-env", "hello through the gateway");
    let auto = python_client(&gateway.url(), "auto", "everything", None);
    assert_scenario(&auto, "get-env", "hello through the gateway");
    assert_eq!(
        audit_chain_holds(&gateway, "hello through the gateway", 10),
        10
    );
}

#[test]
fn stdio_server_bridged_and_restarted() {
    let mut config = config(Upstream::Stdio {
        command: fastmcp_stdio_command(),
    });
    config.tools.deny = vec!["secret_*".into()];
    let gateway = start_gateway(&config, &[], &[]);
    gateway.wait_ready();
    let seen = python_client(&gateway.url(), "legacy", "fastmcp", None);
    assert_scenario(&seen, "secret_dump", "hello through the gateway");
    assert_eq!(seen["progress"].as_array().unwrap().len(), 3);

    // Kill the stdio server: the gateway restarts it and serves again.
    // Children of any of the gateway's threads (tokio spawns from worker threads).
    let children: String = std::fs::read_dir(format!("/proc/{}/task", gateway.pid()))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("children")).ok())
        .collect::<Vec<_>>()
        .join(" ");
    let server_pid: i32 = children
        .split_whitespace()
        .next()
        .expect("the gateway runs the stdio server")
        .parse()
        .unwrap();
    std::process::Command::new("kill")
        .arg("-9")
        .arg(server_pid.to_string())
        .status()
        .unwrap();
    gateway.wait_ready();
    let again = python_client(&gateway.url(), "legacy", "fastmcp", None);
    assert_eq!(again["echo"][0], "hello through the gateway");
}

/// The JSON-RPC error code in a body that may be JSON or one SSE event.
fn rpc_error_code(body: &str) -> Option<i64> {
    let json = body
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or(body);
    serde_json::from_str::<Value>(json).ok()?["error"]["code"].as_i64()
}

struct Case {
    name: &'static str,
    method: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
    status: u16,
    code: Option<i64>,
}

#[test]
fn malformed_requests_get_the_specified_answers_and_the_gateway_keeps_serving() {
    let server = fastmcp(&[], None);
    let mut config = config(http_upstream(server.port));
    config.limits.max_request_bytes = 64 * 1024;
    let gateway = start_gateway(&config, &[], &[]);
    gateway.wait_ready();
    let client = http();
    let url = gateway.url();
    let session = initialize(&client, &url);
    let json_ct = ("content-type", "application/json".to_owned());
    let accept = ("accept", ACCEPT_BOTH.to_owned());
    let sid = ("mcp-session-id", session.clone());
    let v25 = ("mcp-protocol-version", "2025-11-25".to_owned());
    let v26 = ("mcp-protocol-version", "2026-07-28".to_owned());
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;
    let session_headers = || vec![json_ct.clone(), accept.clone(), sid.clone(), v25.clone()];
    let cases = vec![
        Case { name: "bad JSON", method: "POST", headers: session_headers(), body: "{\"jsonrpc\":".into(), status: 400, code: Some(-32700) },
        Case { name: "batch array", method: "POST", headers: session_headers(), body: r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.into(), status: 400, code: Some(-32600) },
        Case { name: "empty batch", method: "POST", headers: session_headers(), body: "[]".into(), status: 400, code: Some(-32600) },
        Case { name: "not an object", method: "POST", headers: session_headers(), body: "\"ping\"".into(), status: 400, code: Some(-32600) },
        Case { name: "jsonrpc 1.0", method: "POST", headers: session_headers(), body: r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#.into(), status: 400, code: Some(-32600) },
        Case { name: "null id", method: "POST", headers: session_headers(), body: r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#.into(), status: 400, code: Some(-32600) },
        Case { name: "method not a string", method: "POST", headers: session_headers(), body: r#"{"jsonrpc":"2.0","id":1,"method":7}"#.into(), status: 400, code: Some(-32600) },
        Case { name: "params not an object", method: "POST", headers: session_headers(), body: r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#.into(), status: 400, code: Some(-32600) },
        Case { name: "wrong content type", method: "POST", headers: vec![("content-type", "text/plain".into()), accept.clone(), sid.clone()], body: r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.into(), status: 415, code: None },
        Case { name: "unacceptable Accept", method: "POST", headers: vec![json_ct.clone(), ("accept", "text/html".into()), sid.clone()], body: r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.into(), status: 406, code: None },
        Case { name: "oversized body", method: "POST", headers: session_headers(), body: format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#, "x".repeat(100 * 1024)), status: 413, code: Some(-32600) },
        Case { name: "missing session id", method: "POST", headers: vec![json_ct.clone(), accept.clone(), v25.clone()], body: r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.into(), status: 400, code: None },
        Case { name: "unknown session id", method: "POST", headers: vec![json_ct.clone(), accept.clone(), v25.clone(), ("mcp-session-id", "0123456789abcdef".into())], body: r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.into(), status: 404, code: None },
        Case { name: "unsupported protocol version", method: "POST", headers: vec![json_ct.clone(), accept.clone(), sid.clone(), ("mcp-protocol-version", "1999-01-01".into())], body: r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.into(), status: 400, code: Some(-32022) },
        Case { name: "2026 Mcp-Method mismatch", method: "POST", headers: vec![json_ct.clone(), accept.clone(), v26.clone(), ("mcp-method", "tools/list".into())], body: format!(r#"{{"jsonrpc":"2.0","id":1,"method":"prompts/list","params":{{{meta}}}}}"#), status: 400, code: Some(-32020) },
        Case { name: "2026 Mcp-Name mismatch", method: "POST", headers: vec![json_ct.clone(), accept.clone(), v26.clone(), ("mcp-method", "tools/call".into()), ("mcp-name", "add".into())], body: format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"x"}},{meta}}}}}"#), status: 400, code: Some(-32020) },
        Case { name: "2026 missing Mcp-Method", method: "POST", headers: vec![json_ct.clone(), accept.clone(), v26.clone()], body: format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{{meta}}}}}"#), status: 400, code: Some(-32020) },
        Case { name: "2026 _meta version differs from header", method: "POST", headers: vec![json_ct.clone(), accept.clone(), v26.clone(), ("mcp-method", "tools/list".into())], body: r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25"}}}"#.into(), status: 400, code: Some(-32020) },
        Case { name: "2026 GET", method: "GET", headers: vec![accept.clone(), v26.clone()], body: String::new(), status: 405, code: None },
        Case { name: "2026 DELETE", method: "DELETE", headers: vec![v26.clone()], body: String::new(), status: 405, code: None },
        Case { name: "arguments violate the schema", method: "POST", headers: session_headers(), body: r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1}}}"#.into(), status: 200, code: Some(-32602) },
        Case { name: "unknown tool", method: "POST", headers: session_headers(), body: r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"no_such_tool","arguments":{}}}"#.into(), status: 200, code: Some(-32602) },
        Case { name: "tools/call without a name", method: "POST", headers: session_headers(), body: r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#.into(), status: 200, code: Some(-32602) },
        Case { name: "foreign Origin", method: "POST", headers: [session_headers(), vec![("origin", "https://evil.example".into())]].concat(), body: r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.into(), status: 403, code: None },
        Case { name: "GET without session", method: "GET", headers: vec![("accept", "text/event-stream".into())], body: String::new(), status: 400, code: None },
        Case { name: "DELETE unknown session", method: "DELETE", headers: vec![("mcp-session-id", "feedface".into())], body: String::new(), status: 404, code: None },
        Case { name: "PUT", method: "PUT", headers: vec![], body: String::new(), status: 405, code: None },
    ];
    assert!(cases.len() >= 20);
    for case in &cases {
        let mut request = client.request(case.method.parse().unwrap(), &url);
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let response = request.body(case.body.clone()).send().unwrap();
        let status = response.status().as_u16();
        let body = response.text().unwrap();
        assert_eq!(status, case.status, "{}: {body}", case.name);
        if let Some(code) = case.code {
            assert_eq!(rpc_error_code(&body), Some(code), "{}: {body}", case.name);
        }
        // The gateway keeps serving the well-behaved session.
        let ok = client
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", ACCEPT_BOTH)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25")
            .body(r#"{"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#)
            .send()
            .unwrap();
        assert_eq!(ok.status(), 200, "after {}", case.name);
        assert!(ok.text().unwrap().contains("\"5\""), "after {}", case.name);
    }
    // Only the MCP path itself reaches the MCP handler: its neighbours are not found.
    for other in [
        format!("{url}/"),
        format!("{url}-other"),
        format!("{url}/tools"),
    ] {
        let response = client
            .post(&other)
            .header("content-type", "application/json")
            .header("accept", ACCEPT_BOTH)
            .header("mcp-session-id", &session)
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
            .send()
            .unwrap();
        assert_eq!(response.status(), 404, "POST {other}");
    }
}

/// A TCP server that answers every HTTP request with the JSON body `answer`, or never answers
/// when `None`.
fn fake_upstream(answer: Option<&'static str>) -> (u16, std::thread::JoinHandle<()>) {
    raw_upstream(answer.map(|body| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nmcp-session-id: s1\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }))
}

/// POST an `initialize` with no `Accept` header, as a bare client would.
fn post_initialize(client: &reqwest::blocking::Client, url: &str) -> reqwest::blocking::Response {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#)
        .send()
        .unwrap()
}

/// A TCP server that answers the first request on each connection with the bytes `answer`,
/// then closes it; or never answers when `None`.
fn raw_upstream(answer: Option<Vec<u8>>) -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { return };
            let answer = answer.clone();
            // A thread per connection: the gateway keeps a spare connection open that sends
            // nothing, and one blocked read must not hold up the others.
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buffer = [0u8; 65536];
                let _ = stream.read(&mut buffer);
                match answer {
                    Some(answer) => {
                        let _ = stream.write_all(&answer);
                    }
                    None => std::thread::sleep(Duration::from_secs(30)),
                }
            });
        }
    });
    (port, handle)
}

#[test]
fn a_server_whose_answer_is_not_http_gets_a_gateway_error_that_says_why() {
    let client = http();
    for (answer, says) in [
        (
            &b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: lots\r\n\r\n{}"[..],
            "Content-Length",
        ),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not HTTP/1.1"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 99\r\n\r\n{\"jsonrpc\"",
            "closed the connection before the answer ended",
        ),
    ] {
        let (port, _server) = raw_upstream(Some(answer.to_vec()));
        let gateway = start_gateway(&config(http_upstream(port)), &[], &[]);
        let response = post_initialize(&client, &gateway.url());
        assert_eq!(response.status(), 502);
        let text = response.text().unwrap();
        assert_eq!(rpc_error_code(&text), Some(-32603));
        assert!(text.contains(says), "{text} does not say {says:?}");
    }
}

#[test]
fn a_server_that_answers_garbage_or_hangs_gets_a_gateway_error() {
    let client = http();
    let (garbage_port, _g) = fake_upstream(Some("this is not json"));
    let garbage = start_gateway(&config(http_upstream(garbage_port)), &[], &[]);
    let response = post_initialize(&client, &garbage.url());
    assert_eq!(response.status(), 502);
    assert_eq!(rpc_error_code(&response.text().unwrap()), Some(-32603));
    assert_eq!(
        client
            .get(garbage.admin_url("/readyz"))
            .send()
            .unwrap()
            .status(),
        503
    );

    let (hanging_port, _h) = fake_upstream(None);
    let hanging = start_gateway(
        &config(http_upstream(hanging_port)),
        &["--upstream-timeout-seconds", "1"],
        &[],
    );
    let started = std::time::Instant::now();
    let response = post_initialize(&client, &hanging.url());
    assert_eq!(response.status(), 504);
    assert_eq!(rpc_error_code(&response.text().unwrap()), Some(-32003));
    assert!(started.elapsed() < Duration::from_secs(20));
    let metrics = admin_metrics(&client, &hanging);
    assert!(
        metrics.contains("mcp_gateway_upstream_errors_total{kind=\"timeout\"}"),
        "{metrics}"
    );
}

/// SIGTERM (what Kubernetes sends a pod it deletes): the gateway stops taking connections, lets
/// a call already streaming its answer finish, closes idle connections, writes the call's audit
/// line and exits 0.
#[test]
fn sigterm_lets_calls_in_flight_finish_then_exits_cleanly() {
    let server = fastmcp(&[], None);
    let mut gateway = start_gateway(&config(http_upstream(server.port)), &[], &[]);
    gateway.wait_ready();
    // This client keeps its connection to the gateway open and idle in its pool.
    let client = http();
    let url = gateway.url();
    let session = initialize(&client, &url);
    let call = client
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .body(
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                   "params": {"name": "count", "arguments": {"n": 100},
                              "_meta": {"progressToken": "shutdown"}}})
            .to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(call.status(), 200);
    let (lines, received) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(call).lines() {
            let Ok(line) = line else { return false };
            let _ = lines.send(line);
        }
        true
    });
    // The first progress notification: the call is under way at the server.
    let first = received
        .iter()
        .find(|line| line.contains("notifications/progress"));
    assert!(first.is_some(), "no progress before the stream ended");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(gateway.pid()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(gateway.listen).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway still takes connections after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rest: Vec<String> = received.iter().collect();
    assert!(
        reader.join().unwrap(),
        "the answer stream broke off: {rest:?}"
    );
    assert!(
        rest.iter().any(|line| line.contains("counted to 100")),
        "the call's result never came: {rest:?}"
    );
    let status = gateway
        .exit_status_within(Duration::from_secs(30))
        .expect("the gateway is still running 30 s after SIGTERM");
    assert!(status.success(), "the gateway exited with {status}");
    let audit = std::fs::read_to_string(&gateway.audit_log).unwrap();
    assert!(
        audit
            .lines()
            .any(|line| line.contains(r#""target":"count""#)
                && line.contains(r#""decision":"allow""#)),
        "{audit}"
    );
}

#[test]
fn rate_limits_answer_429_with_retry_after() {
    let server = fastmcp(&[], None);
    let mut config = config(http_upstream(server.port));
    config.limits.rate_limit = Some(RateLimit {
        requests_per_minute: 6,
        burst: Some(4),
        per_tool: vec![],
    });
    let gateway = start_gateway(&config, &[], &[]);
    gateway.wait_ready();
    let client = http();
    let session = initialize(&client, &gateway.url()); // two requests of the four
    let call = || {
        client
            .post(gateway.url())
            .header("content-type", "application/json")
            .header("accept", ACCEPT_BOTH)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25")
            .body(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#)
            .send()
            .unwrap()
    };
    // Read each answer to its end, so each call is complete (and audited) before the next.
    let answered = |response: reqwest::blocking::Response| {
        let status = response.status();
        response.text().unwrap();
        status
    };
    assert_eq!(answered(call()), 200);
    assert_eq!(answered(call()), 200);
    let limited = call();
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    assert_eq!(rpc_error_code(&limited.text().unwrap()), Some(-32002));
    let limited_line = |line: &String| line.contains("\"decision\":\"rate_limited\"");
    let audit = gateway.audit_lines_when(|lines| lines.last().is_some_and(limited_line));
    assert!(audit.last().is_some_and(limited_line), "{audit:?}");
}

/// The `/proc` directory of the gateway's thread `name`.
fn thread_dir(pid: u32, name: &str) -> std::path::PathBuf {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        if std::fs::read_to_string(task.join("comm")).unwrap().trim() == name {
            return task;
        }
    }
    panic!("the gateway has no thread named {name}");
}

/// CPU time the gateway's serving thread `name` has run, from the kernel's schedstat.
fn thread_run_time(pid: u32, name: &str) -> Duration {
    let schedstat = std::fs::read_to_string(thread_dir(pid, name).join("schedstat")).unwrap();
    let nanos = schedstat
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Duration::from_nanos(nanos)
}

/// How often the gateway's thread `name` has gone to sleep (voluntary context switches; a
/// polling thread that yields the CPU still counts as running).
fn thread_sleeps(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(thread_dir(pid, name).join("status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The gateway's Prometheus text from its admin port.
fn admin_metrics(client: &reqwest::blocking::Client, gateway: &Gateway) -> String {
    client
        .get(gateway.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// `mcp_gateway_busy_poll_seconds_total` from the gateway's admin port.
fn polled_seconds(client: &reqwest::blocking::Client, gateway: &Gateway) -> f64 {
    let text = admin_metrics(client, gateway);
    text.lines()
        .find_map(|line| line.strip_prefix("mcp_gateway_busy_poll_seconds_total "))
        .unwrap_or_else(|| panic!("no busy-poll counter in\n{text}"))
        .parse()
        .unwrap()
}

/// Call the echo tool `calls` times back to back; how often the serving thread slept meanwhile.
fn sleeps_over_calls(
    gateway: &Gateway,
    client: &reqwest::blocking::Client,
    session: &str,
    calls: u64,
) -> u64 {
    let before = thread_sleeps(gateway.pid(), "gateway-0");
    for n in 0..calls {
        let text = format!("call {n}");
        let answer = rpc(
            client,
            &gateway.url(),
            session,
            json!({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}}),
        );
        assert!(answer.to_string().contains(&text), "{answer}");
    }
    thread_sleeps(gateway.pid(), "gateway-0") - before
}

#[test]
fn busy_polling_learns_the_gaps_serves_calls_and_stops_once_requests_stop() {
    let server = fastmcp(&[], None);
    let upstream = config(http_upstream(server.port));
    // Without polling the serving thread sleeps at least once per call, waiting for the server.
    let sleeping = start_gateway(
        &upstream,
        &["--worker-threads", "1", "--busy-poll-microseconds", "0"],
        &[],
    );
    sleeping.wait_ready();
    let client = http();
    let session = initialize(&client, &sleeping.url());
    let slept = sleeps_over_calls(&sleeping, &client, &session, 40);
    assert!(slept >= 40, "without polling: {slept} sleeps over 40 calls");
    assert_eq!(polled_seconds(&client, &sleeping), 0.0);
    drop(sleeping);
    // With a 10 ms ceiling the windows grow to cover both gaps (the server's answer, the
    // client's next call) within the first calls; after that the thread hardly sleeps.
    let gateway = start_gateway(
        &upstream,
        &["--worker-threads", "1", "--busy-poll-microseconds", "10000"],
        &[],
    );
    gateway.wait_ready();
    let session = initialize(&client, &gateway.url());
    sleeps_over_calls(&gateway, &client, &session, 20);
    let slept = sleeps_over_calls(&gateway, &client, &session, 40);
    assert!(slept < 20, "polling: {slept} sleeps over 40 calls");
    assert!(
        polled_seconds(&client, &gateway) > 0.0,
        "the time spent polling shows on the admin port"
    );
    // Once no request has come for the 10 ms window, the serving thread sleeps: over a quiet
    // 100 ms it runs for almost nothing (a poller that never stopped would run all of it).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = thread_run_time(gateway.pid(), "gateway-0");
        std::thread::sleep(Duration::from_millis(100));
        let ran = thread_run_time(gateway.pid(), "gateway-0") - before;
        if ran < Duration::from_millis(5) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the serving thread still ran {ran:?} of 100 ms long after the last request"
        );
    }
}

#[test]
fn admin_port_serves_inventory_health_and_metrics() {
    let server = fastmcp(&[], None);
    let mut config = config(http_upstream(server.port));
    config.tools.deny = vec!["secret_*".into()];
    let gateway = start_gateway(&config, &[], &[]);
    gateway.wait_ready();
    let client = http();
    assert_eq!(
        client
            .get(gateway.admin_url("/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );
    let inventory: Value = client
        .get(gateway.admin_url("/inventory"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(inventory["server"], "tests/peer");
    assert_eq!(inventory["inventory"]["serverInfo"]["name"], "peer-fastmcp");
    assert_eq!(inventory["inventory"]["protocolVersion"], "2025-11-25");
    let tools = inventory["inventory"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 5);
    let secret = tools.iter().find(|t| t["name"] == "secret_dump").unwrap();
    assert_eq!(secret["hidden"], true);
    // The hashes are SHA-256 over RFC 8785 canonical JSON, checked with Python's own encoder
    // (sorted keys, no spaces: the same bytes as JCS for these definitions).
    let definitions: Vec<&Value> = tools.iter().map(|t| &t["definition"]).collect();
    let script = "import sys, json, hashlib\nfor d in json.load(sys.stdin):\n    print(hashlib.sha256(json.dumps(d, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode()).hexdigest())";
    let output = common::run_program_with_stdin(
        &common::venv_tool("python"),
        &["-c", script],
        serde_json::to_string(&definitions).unwrap().as_bytes(),
    );
    let python_hashes: Vec<&str> = std::str::from_utf8(&output.stdout)
        .unwrap()
        .lines()
        .collect();
    let our_hashes: Vec<&str> = tools
        .iter()
        .map(|t| t["sha256"].as_str().unwrap())
        .collect();
    assert_eq!(python_hashes, our_hashes);

    python_client(&gateway.url(), "legacy", "fastmcp", None);
    let metrics = admin_metrics(&client, &gateway);
    assert!(
        metrics.contains(r#"mcp_gateway_requests_total{method="tools/call",decision="allow"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mcp_gateway_requests_total{method="tools/call",decision="invalid"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcp_gateway_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("mcp_gateway_active_sessions"), "{metrics}");
}

#[test]
fn unauthenticated_gateway_refuses_a_public_address_unless_allowed() {
    let output = common::run(&[
        "gateway",
        "--upstream",
        "http://127.0.0.1:9/mcp",
        "--listen",
        "0.0.0.0:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without authentication"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-unauthenticated"), "{stderr}");
}

#[test]
fn the_documented_configuration_example_is_accepted() {
    let path = common::repo().join("docs/gateway-config.yaml");
    let config = mcp_operator::gateway::load_config(&path).unwrap();
    mcp_operator::gateway::check_exposure(&config, false).unwrap();
    let options = mcp_operator::gateway::GatewayOptions::default();
    mcp_operator::gateway::build(&config, &options, Box::new(std::io::sink())).unwrap();
    assert_eq!(config.authorization.rules.len(), 3);
    // And every gateway document `render` produces for the examples is one the gateway reads.
    let rendered = common::run(&["render", "-f", "examples/", "-o", "json"]);
    assert!(rendered.status.success());
    let objects: Value = serde_json::from_slice(&rendered.stdout).unwrap();
    let documents: Vec<&str> = objects["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["data"]["gateway.yaml"].as_str())
        .collect();
    assert!(documents.len() >= 3);
    let dir = tempfile::tempdir().unwrap();
    for (i, document) in documents.iter().enumerate() {
        let file = common::write(dir.path(), &format!("{i}.yaml"), document);
        mcp_operator::gateway::load_config(&file).unwrap();
    }
}

/// A stand-in OTLP/HTTP collector: every request body it receives goes to the channel.
fn otlp_collector() -> (String, std::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let _ = tx.send(body.to_vec());
                    async { axum::http::StatusCode::OK }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (url, rx)
}

#[test]
fn spans_are_exported_over_otlp_and_the_trace_continues_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let header_log = dir.path().join("headers.log");
    let server = fastmcp(&[], Some(&header_log));
    let (collector, exported) = otlp_collector();
    let gateway = start_gateway(
        &config(http_upstream(server.port)),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    gateway.wait_ready();
    let client = http();
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let post = |session: Option<&str>, body: &str| {
        let mut request = client
            .post(gateway.url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .header("traceparent", format!("00-{trace}-{caller_span}-01"));
        if let Some(s) = session {
            request = request.header("mcp-session-id", s);
        }
        request.body(body.to_owned()).send().unwrap()
    };
    let initialized = post(
        None,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#,
    );
    let session = initialized.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = initialized.text();
    let called = post(
        Some(&session),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"traced"}}}"#,
    );
    assert!(called.text().unwrap().contains("traced"));

    // The exported span: named after the call, MCP attributes, inside the caller's trace.
    let trace_bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let span = loop {
        let body = exported
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("the gateway exported the tools/call span");
        if body.windows(15).any(|w| w == b"tools/call echo") {
            break body;
        }
    };
    for attribute in [
        &b"mcp.method.name"[..],
        b"gen_ai.tool.name",
        b"mcp.session.id",
        b"mcp.protocol.version",
        b"jsonrpc.request.id",
    ] {
        assert!(
            span.windows(attribute.len()).any(|w| w == attribute),
            "span lacks {}",
            String::from_utf8_lossy(attribute)
        );
    }
    assert!(
        span.windows(16).any(|w| w == trace_bytes.as_slice()),
        "the span is not in the caller's trace"
    );

    // Upstream, the trace goes on with the gateway's span as parent, not the caller's.
    let seen = std::fs::read_to_string(&header_log).unwrap();
    let forwarded: Vec<&str> = seen
        .split_whitespace()
        .filter_map(|h| h.strip_prefix("traceparent="))
        .collect();
    assert!(!forwarded.is_empty(), "no traceparent upstream: {seen}");
    for parent in forwarded {
        let parts: Vec<&str> = parent.split('-').collect();
        assert_eq!(parts[1], trace, "{parent}");
        assert_ne!(
            parts[2], caller_span,
            "the gateway's span is not the parent"
        );
    }
}

#[test]
fn pinned_definitions_quarantine_new_and_changed_tools_until_approved() {
    let server = fastmcp(&[], None);
    // Pinning in Audit: every tool is New and still served.
    let mut config = config(http_upstream(server.port));
    config.tools.pin_definitions = true;
    config.tools.scan_descriptions = true;
    let audit = start_gateway(&config, &[], &[]);
    audit.wait_ready();
    let tools = inventory_tools(&audit);
    assert_eq!(tools.len(), 5);
    for tool in &tools {
        assert_eq!(tool["state"], "New", "{tool}");
        assert_eq!(tool["hidden"], false);
        assert!(
            tool["reasons"][0]
                .as_str()
                .unwrap()
                .starts_with("MCP-PIN-002")
        );
    }
    drop(audit);

    // Approve echo and count as listed, `add` under an older hash; delete_repo and secret_dump
    // stay unapproved. Enforce: only the approved, unchanged tools are served.
    for tool in &tools {
        let name = tool["name"].as_str().unwrap();
        let hash = tool["sha256"].as_str().unwrap();
        match name {
            "echo" | "count" => {
                config.tools.approved.insert(name.into(), hash.into());
            }
            "add" => {
                config.tools.approved.insert(name.into(), "0".repeat(64));
            }
            _ => {}
        }
    }
    config.tools.quarantine = true;
    let enforce = start_gateway(&config, &[], &[]);
    enforce.wait_ready();
    let states: BTreeMap<String, (String, bool)> = inventory_tools(&enforce)
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                (
                    t["state"].as_str().unwrap().to_owned(),
                    t["hidden"].as_bool().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(states["echo"], ("Approved".to_owned(), false));
    assert_eq!(states["add"], ("Quarantined".to_owned(), true));
    assert_eq!(states["delete_repo"], ("Quarantined".to_owned(), true));

    let client = http();
    let url = enforce.url();
    let session = initialize(&client, &url);
    assert_eq!(
        listed_tool_names(&client, &url, &session),
        ["count", "echo"]
    );
    let call = rpc(
        &client,
        &url,
        &session,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}),
    );
    assert_eq!(call["error"]["code"], -32602, "{call}");
    assert_eq!(call["error"]["message"], "Unknown tool: add");
    let echoed = rpc(
        &client,
        &url,
        &session,
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}}),
    );
    assert!(echoed["result"].is_object(), "{echoed}");
    let quarantined = |l: &String| l.contains("\"add\"") && l.contains("\"quarantine\"");
    let audit_lines = enforce.audit_lines_when(|lines| lines.iter().any(quarantined));
    assert!(audit_lines.iter().any(quarantined), "{audit_lines:#?}");
}

/// Managed prompts (the resolved MCPPromptVersions in the gateway configuration) seen by the
/// official Python SDK client in both protocol eras: listed with their version, rendered by the
/// gateway with an argument that looks like a placeholder kept literal, winning a name clash
/// with the server's own prompt, and a missing required argument refused.
#[test]
fn managed_prompts_are_served_by_the_gateway_to_the_python_sdk_client() {
    let server = fastmcp(&[], None);
    let mut config = config(http_upstream(server.port));
    config.prompts = serde_json::from_value(json!([
        {"name": "triage", "version": "1.2.0", "description": "Triage an incident",
         "arguments": [{"name": "service", "required": true}, {"name": "severity"}],
         "messages": [
            {"role": "user", "text": "Triage {{service}} at severity {{severity}}."},
            {"role": "assistant", "resource": {"uri": "runbook://triage", "text": "Runbook for {{service}}"}}
         ]},
        {"name": "greet", "version": "2.0.0", "arguments": [{"name": "name", "required": true}],
         "messages": [{"role": "user", "text": "Good day, {{name}}."}]}
    ]))
    .unwrap();
    let gateway = start_gateway(&config, &[], &[]);
    gateway.wait_ready();
    for mode in ["legacy", "auto"] {
        let mut command = std::process::Command::new(common::venv_tool("python"));
        command
            .arg(peers_dir().join("prompts_client.py"))
            .arg(gateway.url())
            .arg(mode);
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(seen["prompts"]["triage"], "1.2.0", "{mode}: {seen}");
        assert_eq!(
            seen["prompts"]["greet"], "2.0.0",
            "the managed greet wins: {seen}"
        );
        assert_eq!(
            seen["triage"],
            json!([
                ["user", "Triage {{severity}} api at severity high."],
                ["assistant", "Runbook for {{severity}} api"]
            ]),
            "{mode}"
        );
        assert_eq!(
            seen["triageMeta"]["mcp-operator.dev/promptVersion"],
            "1.2.0"
        );
        assert_eq!(seen["greet"], json!([["user", "Good day, Ada."]]));
        assert!(
            seen["missing"]
                .as_str()
                .unwrap()
                .contains("Missing required argument: service"),
            "{seen}"
        );
    }
    let admin: Value = http()
        .get(gateway.admin_url("/inventory"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(admin["prompts"]["hiddenServerPrompts"], json!(["greet"]));
    let audited: Vec<Value> = gateway
        .audit_lines_when(|lines| {
            lines.iter().any(|l| l.contains("managedPrompt"))
                && lines.iter().any(|l| l.contains("MCP-PROMPT-002"))
        })
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["method"] == "prompts/get")
        .collect();
    assert!(
        audited
            .iter()
            .any(|l| l["target"] == "triage" && l["decidedBy"] == "managedPrompt"),
        "{audited:?}"
    );
    assert!(
        audited
            .iter()
            .any(|l| l["decidedBy"] == "MCP-PROMPT-002" && l["decision"] == "invalid"),
        "{audited:?}"
    );
}

/// A new prompt bundle in the configuration file is served without a restart, and a session
/// with an open GET stream is told (`notifications/prompts/list_changed`).
#[test]
fn a_changed_prompt_bundle_is_reloaded_and_announced_to_open_sessions() {
    let server = fastmcp(&[], None);
    let mut config = config(http_upstream(server.port));
    let bundle = |version: &str| -> Vec<mcp_operator::api::gateway_config::ManagedPrompt> {
        serde_json::from_value(json!([{"name": "triage", "version": version,
            "messages": [{"role": "user", "text": format!("triage, version {version}")}]}]))
        .unwrap()
    };
    config.prompts = bundle("1.2.0");
    let gateway = start_gateway(&config, &[], &[]);
    gateway.wait_ready();
    let client = http();
    let url = gateway.url();
    let session = initialize(&client, &url);
    let stream = client
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .unwrap();
    assert_eq!(stream.status(), 200);
    let (seen, notified) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("notifications/prompts/list_changed") {
                let _ = seen.send(line);
            }
        }
    });

    config.prompts = bundle("1.3.0");
    std::fs::write(
        &gateway.config_path,
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    notified
        .recv_timeout(Duration::from_secs(30))
        .expect("the open session is told the prompt list changed");
    let listed = rpc(
        &client,
        &url,
        &session,
        json!({"jsonrpc": "2.0", "id": 5, "method": "prompts/list"}),
    );
    let triage = listed["result"]["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "triage")
        .unwrap()
        .clone();
    assert_eq!(
        triage["_meta"]["mcp-operator.dev/promptVersion"], "1.3.0",
        "{listed}"
    );
    let got = rpc(
        &client,
        &url,
        &session,
        json!({"jsonrpc": "2.0", "id": 6, "method": "prompts/get", "params": {"name": "triage"}}),
    );
    assert_eq!(
        got["result"]["messages"][0]["content"]["text"],
        "triage, version 1.3.0"
    );
}
