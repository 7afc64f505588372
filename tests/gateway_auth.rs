//! The gateway as an OAuth 2.1 resource server: tokens minted here, keys served by an https
//! JWKS endpoint the test runs (with its own CA, trusted through SSL_CERT_FILE), the rejection
//! matrix, key rotation with one refresh, per-tool access by claims, subject-bound sessions,
//! and proof that the upstream never sees the client's Authorization header.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod gateway_support;
#[path = "gateway_support/issuer.rs"]
mod issuer;

use std::sync::atomic::Ordering;

use gateway_support::*;
use issuer::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_operator::api::common::{RuleAction, SubjectMatcher, ToolAccessRule};
use mcp_operator::api::gateway_config::{GatewayAuthentication, GatewayConfig};
use serde_json::{Value, json};

const RESOURCE: &str = "https://mcp.example.test/mcp";
const METADATA_URL: &str = "https://mcp.example.test/.well-known/oauth-protected-resource/mcp";
const SCOPE: &str = "mcp:tools";

fn claims(issuer: &str, sub: &str, groups: &[&str]) -> Value {
    json!({
        "iss": issuer, "sub": sub, "aud": RESOURCE, "scope": format!("openid {SCOPE}"),
        "groups": groups, "iat": now(), "exp": now() + 600, "client_id": "test-client",
    })
}

fn auth_config(issuer: &Issuer, upstream_port: u16) -> GatewayConfig {
    let mut config = config(http_upstream(upstream_port));
    config.resource = RESOURCE.into();
    config.authentication = Some(GatewayAuthentication {
        issuer: issuer.url.clone(),
        jwks_uri: None, // discovered from the issuer's RFC 8414 metadata
        audiences: vec![RESOURCE.into()],
        required_scopes: vec![SCOPE.into()],
        groups_claim: "groups".into(),
        max_token_lifetime_seconds: Some(3600),
    });
    config.tools.deny = vec!["secret_*".into()];
    config.authorization.rules = vec![
        ToolAccessRule {
            tools: vec!["*".into()],
            subjects: SubjectMatcher {
                groups: vec!["eng".into()],
                ..SubjectMatcher::default()
            },
            action: RuleAction::Allow,
        },
        ToolAccessRule {
            tools: vec!["delete_*".into()],
            subjects: SubjectMatcher {
                groups: vec!["contractors".into()],
                ..SubjectMatcher::default()
            },
            action: RuleAction::Deny,
        },
    ];
    config
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

fn post(
    client: &reqwest::blocking::Client,
    url: &str,
    token: Option<&str>,
    session: Option<&str>,
    body: &str,
) -> reqwest::blocking::Response {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request.body(body.to_owned()).send().unwrap()
}

fn result_of(response: reqwest::blocking::Response) -> Value {
    let text = response.text().unwrap();
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or(&text);
    serde_json::from_str(json).unwrap()
}

fn open_session(client: &reqwest::blocking::Client, url: &str, token: &str) -> String {
    let response = post(client, url, Some(token), None, INITIALIZE);
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let note = post(
        client,
        url,
        Some(token),
        Some(&session),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(note.status(), 202);
    session
}

fn tool_names(
    client: &reqwest::blocking::Client,
    url: &str,
    token: &str,
    session: &str,
) -> Vec<String> {
    let listed = result_of(post(
        client,
        url,
        Some(token),
        Some(session),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    ));
    let mut names: Vec<String> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn oauth_resource_server_rejection_matrix_rotation_and_per_tool_access() {
    let issuer = start_issuer();
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    *issuer.jwks.lock().unwrap() = json!({"keys": [rsa.jwk(), ec.jwk()]});
    let dir = tempfile::tempdir().unwrap();
    let header_log = dir.path().join("headers.log");
    let server = fastmcp(&[], Some(&header_log));
    let ca = issuer.ca_file.display().to_string();
    let gateway = start_gateway(
        &auth_config(&issuer, server.port),
        &[],
        &[("SSL_CERT_FILE", ca.as_str())],
    );
    gateway.wait_ready();
    let client = http();
    let url = gateway.url();

    // Protected-resource metadata, path form and root form.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let doc: Value = client
            .get(format!("http://{}{path}", gateway.listen))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(doc["resource"], RESOURCE);
        assert_eq!(doc["authorization_servers"], json!([issuer.url]));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
        assert!(
            doc["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(SCOPE))
        );
    }

    // Valid tokens of both key types.
    let alice = rsa.sign(&claims(&issuer.url, "alice", &["eng"]));
    assert_eq!(
        post(&client, &url, Some(&alice), None, INITIALIZE).status(),
        200
    );
    assert_eq!(
        post(
            &client,
            &url,
            Some(&ec.sign(&claims(&issuer.url, "erin", &["eng"]))),
            None,
            INITIALIZE
        )
        .status(),
        200
    );

    // Key rotation: 12 concurrent requests signed by a key published after start-up cause exactly
    // one JWKS fetch, and all succeed.
    let rotated = SigningKey::ec("ec-2");
    issuer.jwks.lock().unwrap()["keys"]
        .as_array_mut()
        .unwrap()
        .push(rotated.jwk());
    let before = issuer.fetches.load(Ordering::SeqCst);
    let token = rotated.sign(&claims(&issuer.url, "rita", &["eng"]));
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                scope.spawn(|| {
                    post(&client, &url, Some(&token), None, INITIALIZE)
                        .status()
                        .as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses, vec![200; 12]);
    assert_eq!(
        issuer.fetches.load(Ordering::SeqCst) - before,
        1,
        "one refresh for one unknown kid"
    );

    // The rejection matrix.
    let foreign = SigningKey::ec("ghost");
    let mut tampered_parts: Vec<String> = alice.split('.').map(str::to_owned).collect();
    tampered_parts[1] = b64(claims(&issuer.url, "mallory", &["eng"])
        .to_string()
        .as_bytes());
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&issuer.url, "alice", &["eng"]);
        f(&mut c);
        rsa.sign(&c)
    };
    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(
            &header,
            &claims(&issuer.url, "alice", &["eng"]),
            &EncodingKey::from_secret(rsa.public_pem.as_bytes()),
        )
        .unwrap()
    };
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims(&issuer.url, "alice", &["eng"])
            .to_string()
            .as_bytes())
    );
    struct Case {
        name: &'static str,
        authorization: Option<String>,
        query: Option<String>,
        status: u16,
        error: Option<&'static str>,
    }
    let bearer = |t: &str| Some(format!("Bearer {t}"));
    let cases = vec![
        Case {
            name: "no token",
            authorization: None,
            query: None,
            status: 401,
            error: None,
        },
        Case {
            name: "not a bearer scheme",
            authorization: Some("Basic YWxpY2U6c2VjcmV0".into()),
            query: None,
            status: 401,
            error: None,
        },
        Case {
            name: "malformed",
            authorization: bearer("not.a.jwt"),
            query: None,
            status: 401,
            error: Some("invalid_token"),
        },
        Case {
            name: "alg none",
            authorization: bearer(&alg_none),
            query: None,
            status: 401,
            error: Some("invalid_token"),
        },
        Case {
            name: "HS256 signed with the public key",
            authorization: bearer(&hs256_with_public_key),
            query: None,
            status: 401,
            error: Some("invalid_token"),
        },
        Case {
            name: "unknown kid",
            authorization: bearer(&foreign.sign(&claims(&issuer.url, "alice", &["eng"]))),
            query: None,
            status: 401,
            error: Some("invalid_token"),
        },
        Case {
            name: "tampered payload",
            authorization: bearer(&tampered_parts.join(".")),
            query: None,
            status: 401,
            error: Some("invalid_token"),
        },
        Case {
            name: "wrong iss",
            authorization: bearer(&with(&|c| c["iss"] = json!("https://evil.example"))),
            query: None,
            status: 401,
            error: Some("invalid_token"),
        },
        Case {
            name: "wrong aud",
            authorization: bearer(&with(&|c| c["aud"] = json!("https://other.example/mcp"))),
            query: None,
            status: 401,
            error: Some("invalid_token"),
        },
        Case {
            name: "expired",
            authorization: bearer(&with(&|c| {
                c["iat"] = json!(now() - 900);
                c["exp"] = json!(now() - 120)
            })),
            query: None,
            status: 401,
            error: Some("invalid_token"),
        },
        Case {
            name: "not yet valid",
            authorization: bearer(&with(&|c| c["nbf"] = json!(now() + 300))),
            query: None,
            status: 401,
            error: Some("invalid_token"),
        },
        Case {
            name: "lives too long",
            authorization: bearer(&with(&|c| c["exp"] = json!(now() + 86400))),
            query: None,
            status: 401,
            error: Some("invalid_token"),
        },
        Case {
            name: "missing scope",
            authorization: bearer(&with(&|c| c["scope"] = json!("openid"))),
            query: None,
            status: 403,
            error: Some("insufficient_scope"),
        },
        Case {
            name: "token in the query string",
            authorization: None,
            query: Some(format!("access_token={alice}")),
            status: 400,
            error: Some("invalid_request"),
        },
    ];
    for case in &cases {
        let target = match &case.query {
            Some(q) => format!("{url}?{q}"),
            None => url.clone(),
        };
        let mut request = client
            .post(&target)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(a) = &case.authorization {
            request = request.header("authorization", a);
        }
        let response = request.body(INITIALIZE).send().unwrap();
        assert_eq!(response.status().as_u16(), case.status, "{}", case.name);
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with(&format!("Bearer resource_metadata=\"{METADATA_URL}\"")),
            "{}: {challenge}",
            case.name
        );
        assert!(
            challenge.contains(&format!("scope=\"{SCOPE}\"")),
            "{}: {challenge}",
            case.name
        );
        match case.error {
            Some(error) => assert!(
                challenge.contains(&format!("error=\"{error}\"")),
                "{}: {challenge}",
                case.name
            ),
            None => assert!(!challenge.contains("error="), "{}: {challenge}", case.name),
        }
    }

    // Per-tool access by claims: eng sees everything exposed, contractors lose delete_*, and a
    // caller no rule matches sees nothing (default deny once rules exist).
    let bob = rsa.sign(&claims(&issuer.url, "bob", &["eng", "contractors"]));
    let carol = rsa.sign(&claims(&issuer.url, "carol", &[]));
    let alice_session = open_session(&client, &url, &alice);
    let bob_session = open_session(&client, &url, &bob);
    let carol_session = open_session(&client, &url, &carol);
    assert_eq!(
        tool_names(&client, &url, &alice, &alice_session),
        ["add", "count", "delete_repo", "echo"]
    );
    assert_eq!(
        tool_names(&client, &url, &bob, &bob_session),
        ["add", "count", "echo"]
    );
    assert!(tool_names(&client, &url, &carol, &carol_session).is_empty());
    let call_delete = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_repo","arguments":{"name":"x"}}}"#;
    let denied = result_of(post(
        &client,
        &url,
        Some(&bob),
        Some(&bob_session),
        call_delete,
    ));
    assert_eq!(denied["error"]["code"], -32001);
    assert!(
        !denied["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rules"),
        "no internals: {denied}"
    );
    let allowed = result_of(post(
        &client,
        &url,
        Some(&alice),
        Some(&alice_session),
        call_delete,
    ));
    assert_eq!(allowed["result"]["content"][0]["text"], "deleted x");

    // A session is bound to its subject: bob cannot use alice's.
    assert_eq!(
        post(
            &client,
            &url,
            Some(&bob),
            Some(&alice_session),
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#
        )
        .status(),
        404
    );

    // The caller's W3C trace context reaches the server and names the audit line's trace.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traced = client
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("authorization", format!("Bearer {alice}"))
        .header("mcp-session-id", &alice_session)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .body(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"text":"traced"}}}"#)
        .send()
        .unwrap();
    assert_eq!(result_of(traced)["result"]["content"][0]["text"], "traced");

    // The official client works with a token, in both eras.
    let legacy = python_client(&url, "legacy", "fastmcp", Some(&alice));
    assert_eq!(legacy["echo"][0], "hello through the gateway");
    let modern = python_client(&url, "auto", "fastmcp", Some(&alice));
    assert_eq!(modern["protocolVersion"], "2026-07-28");

    // Audit lines name the subject, client and deciding rule.
    let audit = gateway.audit_lines_when(|lines| {
        lines.iter().any(|l| l.contains("\"decision\":\"deny\""))
            && lines
                .iter()
                .any(|l| l.contains(&format!("\"traceId\":\"{trace}\"")))
    });
    let deny_line: Value = serde_json::from_str(
        audit
            .iter()
            .find(|l| l.contains("\"decision\":\"deny\""))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(deny_line["subject"], "bob");
    assert_eq!(deny_line["clientId"], "test-client");
    assert_eq!(deny_line["decidedBy"], "authorization.rules[1]");
    assert!(
        audit
            .iter()
            .any(|l| l.contains(&format!("\"traceId\":\"{trace}\""))),
        "no audit line carries the caller's trace id: {audit:?}"
    );
    assert!(
        audit.iter().all(|l| !l.contains(&alice)),
        "a token leaked into the audit log"
    );

    // The upstream never saw an Authorization header.
    let seen = std::fs::read_to_string(&header_log).unwrap();
    assert!(
        seen.lines().count() > 20,
        "the header log recorded the traffic"
    );
    assert!(
        seen.split_whitespace().all(|h| h != "authorization"),
        "{seen}"
    );
    assert!(
        seen.split_whitespace()
            .any(|h| h.starts_with("traceparent=00-") && h.contains(trace)),
        "the trace context did not reach the server: {seen}"
    );
}
