//! Live tool checks end to end: the real controller in the in-process API server reads the
//! inventory of a real gateway (started from the configuration the controller rendered) in
//! front of the official Python SDK server, records each tool's hash and state in status, and
//! sees a tool that silently changes its definition quarantined within one inventory period.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod gateway_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use mcp_operator::api::gateway_config::GatewayConfig;
use mcp_operator::api::{MCPPolicy, MCPServer};
use mcp_operator::builders::BuildContext;
use mcp_operator::controller::inventory::InventorySettings;
use mcp_operator::controller::metrics::Metrics;
use mcp_operator::controller::{self, ControllerConfig};
use mcp_operator::testkit::apiserver::ApiServer;
use serde_json::{Value, json};

use gateway_support::{Gateway, Process, fastmcp, http, http_upstream, initialize};

const WAIT: Duration = Duration::from_secs(60);
/// The controller's inventory period in this scenario.
const PERIOD: Duration = Duration::from_secs(2);
/// The gateway's own tool-list refresh in this scenario.
const GATEWAY_REFRESH_SECONDS: u32 = 1;
const NS: &str = "tools";

fn clock() -> Time {
    controller::system_clock()
}

/// Wait until the server satisfies `condition`.
async fn wait_server(
    servers: &Api<MCPServer>,
    what: &str,
    condition: impl Fn(&MCPServer) -> bool + Send + 'static,
) -> MCPServer {
    tokio::time::timeout(
        WAIT,
        await_condition(servers.clone(), "peer", move |s: Option<&MCPServer>| {
            s.is_some_and(&condition)
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    .unwrap()
    .unwrap()
}

/// Wait for an Event about the server that satisfies `matches`.
async fn wait_event(client: &Client, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let stream = watcher(events, watcher::Config::default()).applied_objects();
    let mut stream = std::pin::pin!(stream);
    tokio::time::timeout(WAIT, async {
        while let Some(event) = stream.next().await {
            if let Ok(event) = event
                && matches(&event)
            {
                return event;
            }
        }
        panic!("the event watch ended")
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn tool_states(server: &MCPServer) -> Vec<(String, String)> {
    server
        .status
        .as_ref()
        .map(|s| {
            s.tools
                .iter()
                .map(|t| (t.name.clone(), t.state.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn condition(server: &MCPServer, type_: &str) -> Option<(String, String, String)> {
    server
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Start a gateway from the configuration the controller rendered, in front of `upstream`.
async fn gateway_from_config_map(client: &Client, upstream: u16, approvals: usize) -> Gateway {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let rendered = tokio::time::timeout(
        WAIT,
        await_condition(
            config_maps,
            "peer-gateway",
            move |cm: Option<&ConfigMap>| {
                cm.and_then(|cm| cm.data.as_ref())
                    .and_then(|d| d.get("gateway.yaml"))
                    .and_then(|text| serde_saphyr::from_str::<GatewayConfig>(text).ok())
                    .is_some_and(|c| c.tools.approved.len() == approvals)
            },
        ),
    )
    .await
    .expect("the controller renders the gateway configuration")
    .unwrap()
    .unwrap();
    let mut config: GatewayConfig =
        serde_saphyr::from_str(&rendered.data.unwrap()["gateway.yaml"]).unwrap();
    // Only what differs between a pod and this machine: addresses, and a faster refresh.
    config.listen = "127.0.0.1:0".into();
    config.admin_listen = "127.0.0.1:0".into();
    config.upstream = http_upstream(upstream);
    config.tools.refresh_seconds = Some(GATEWAY_REFRESH_SECONDS);
    tokio::task::spawn_blocking(move || {
        let gateway = gateway_support::start_gateway(&config, &[], &[]);
        gateway.wait_ready();
        gateway
    })
    .await
    .unwrap()
}

/// Tool names a client sees through the gateway.
async fn listed_tools(gateway: &Gateway) -> Vec<String> {
    let url = gateway.url();
    tokio::task::spawn_blocking(move || {
        let client = http();
        let session = initialize(&client, &url);
        gateway_support::listed_tool_names(&client, &url, &session)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_changing_behind_a_running_gateway_is_quarantined_and_shows_in_status() {
    let api = ApiServer::start().await.unwrap();
    api.install_crds().unwrap();
    api.spawn_deployment_controller();
    let client = api.client("user").unwrap();

    // The gateway's admin address, once it runs (the Service DNS name in a cluster).
    let admin: Arc<Mutex<Option<String>>> = Arc::default();
    let locate_admin = admin.clone();
    let metrics = Metrics::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(controller::run(
        ControllerConfig {
            client: api.client("controller").unwrap(),
            namespaces: Vec::new(),
            server_selector: None,
            build: BuildContext::default(),
            lease: None,
            metrics_addr: None,
            concurrency: 4,
            crd_wait: Duration::from_secs(5),
            instance: "tool-checks".into(),
            clock,
            metrics,
            inventory: Some(InventorySettings {
                period: PERIOD,
                locate: Arc::new(move |_, _, _| {
                    let admin = locate_admin.lock().unwrap().clone();
                    format!("http://{}/inventory", admin.unwrap_or_default())
                }),
            }),
        },
        async move {
            let _ = stopped.await;
        },
    ));

    // An Audit policy that pins tool definitions and enforces only the pinning rules: unapproved
    // tools are hidden, every other finding is reported.
    let policy: MCPPolicy = serde_json::from_value(json!({
        "apiVersion": "mcp-operator.dev/v1alpha1", "kind": "MCPPolicy",
        "metadata": {"name": "pinned-tools"},
        "spec": {"enforcement": "Audit", "tools": {"pinDefinitions": true},
            "overrides": [
                {"rule": "MCP-PIN-001", "enforcement": "Enforce", "reason": "changed tools wait for review"},
                {"rule": "MCP-PIN-002", "enforcement": "Enforce", "reason": "new tools wait for review"}
            ]}})).unwrap();
    Api::<MCPPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let servers: Api<MCPServer> = Api::namespaced(client.clone(), NS);
    let server: MCPServer = serde_json::from_value(json!({
        "apiVersion": "mcp-operator.dev/v1alpha1", "kind": "MCPServer",
        "metadata": {"name": "peer"}, "spec": {"image": "example/peer:1"}}))
    .unwrap();
    servers
        .create(&PostParams::default(), &server)
        .await
        .unwrap();

    let mut upstream: Process = tokio::task::spawn_blocking(|| fastmcp(&[], None))
        .await
        .unwrap();
    let gateway = gateway_from_config_map(&client, upstream.port, 0).await;
    *admin.lock().unwrap() = Some(gateway.admin.to_string());

    // 1. Nothing approved yet: every live tool is New, hidden, and said so.
    let unapproved = wait_server(&servers, "the live tools in status", |s| {
        let states = tool_states(s);
        states.len() == 5 && states.iter().all(|(_, state)| state == "Quarantined")
    })
    .await;
    let (status, reason, message) = condition(&unapproved, "ToolsVerified").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ToolsQuarantined")
    );
    assert!(message.contains("5 of 5 tools hidden"), "{message}");
    // Argo CD shows the server Degraded, with the same message.
    let (health, health_message) =
        common::argocd_health("mcpserver.lua", &serde_json::to_value(&unapproved).unwrap());
    assert_eq!(health, "Degraded");
    assert!(
        health_message.contains("5 of 5 tools hidden"),
        "{health_message}"
    );
    let status_of = unapproved.status.as_ref().unwrap();
    assert_eq!(
        status_of.phase.as_deref(),
        Some("Ready"),
        "tool rules never block a rollout"
    );
    let new_tool = status_of
        .findings
        .iter()
        .find(|f| f.rule == "MCP-PIN-002")
        .expect("a finding for the unapproved tools");
    assert!(
        new_tool.enforced && new_tool.message.contains("hidden by the gateway"),
        "{new_tool:?}"
    );
    assert!(
        listed_tools(&gateway).await.is_empty(),
        "the gateway hides them all"
    );
    wait_event(&client, "a ToolQuarantined event", |e| {
        e.reason.as_deref() == Some("ToolQuarantined")
            && e.note
                .as_deref()
                .is_some_and(|n| n.contains("echo (Quarantined: MCP-PIN-002"))
    })
    .await;

    // 2. The admin approves the live definitions status shows: the gateway rolls out with them.
    let approvals: Vec<Value> = status_of
        .tools
        .iter()
        .map(|t| json!({"name": t.name, "sha256": t.sha256}))
        .collect();
    servers
        .patch(
            "peer",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"toolApprovals": approvals}})),
        )
        .await
        .unwrap();
    drop(gateway);
    let gateway = gateway_from_config_map(&client, upstream.port, 5).await;
    *admin.lock().unwrap() = Some(gateway.admin.to_string());
    let approved = wait_server(&servers, "the approved tools", |s| {
        let states = tool_states(s);
        states.len() == 5 && states.iter().all(|(_, state)| state == "Approved")
    })
    .await;
    assert_eq!(
        condition(&approved, "ToolsVerified").map(|c| (c.0, c.1)),
        Some(("True".into(), "AllApproved".into()))
    );
    assert!(listed_tools(&gateway).await.contains(&"echo".to_owned()));

    // 3. The server silently changes echo's definition (a rug pull).
    let pulled = Instant::now();
    upstream.send_line("rug-pull");
    let changed = wait_server(&servers, "the changed tool quarantined", |s| {
        tool_states(s)
            .iter()
            .any(|(name, state)| name == "echo" && state == "Quarantined")
    })
    .await;
    let seen_after = pulled.elapsed();
    eprintln!(
        "the changed definition was quarantined in status {seen_after:?} after the change \
         (inventory period {PERIOD:?}, gateway refresh {GATEWAY_REFRESH_SECONDS}s)"
    );
    let echo = changed
        .status
        .as_ref()
        .unwrap()
        .tools
        .iter()
        .find(|t| t.name == "echo")
        .unwrap()
        .clone();
    assert!(
        echo.reasons.iter().any(|r| r.starts_with("MCP-PIN-001")),
        "{echo:?}"
    );
    assert!(
        echo.reasons.iter().any(|r| r.starts_with("MCP-TOOL-003")),
        "the new text asks for an SSH key: {echo:?}"
    );
    // One controller period after the gateway's refresh, plus the time to write the status.
    assert!(
        seen_after
            < PERIOD
                + Duration::from_secs(u64::from(GATEWAY_REFRESH_SECONDS))
                + Duration::from_secs(3),
        "took {seen_after:?}"
    );
    let untouched: Vec<(String, String)> = tool_states(&changed)
        .into_iter()
        .filter(|(name, _)| name != "echo")
        .collect();
    assert!(
        untouched.iter().all(|(_, state)| state == "Approved"),
        "{untouched:?}"
    );
    let listed = listed_tools(&gateway).await;
    assert!(
        !listed.contains(&"echo".to_owned()) && listed.len() == 4,
        "{listed:?}"
    );
    wait_event(&client, "an event naming the changed tool", |e| {
        e.reason.as_deref() == Some("ToolQuarantined")
            && e.note.as_deref().is_some_and(|n| {
                n.contains("echo (Quarantined: ") && n.contains("MCP-PIN-001: definition changed")
            })
    })
    .await;

    let _ = stop.send(());
    tokio::time::timeout(WAIT, controller)
        .await
        .expect("the controller stops")
        .unwrap()
        .unwrap();
}
