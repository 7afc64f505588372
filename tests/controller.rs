//! The real kube-runtime Controller against the in-process API server (and, when
//! `MCP_TEST_KUBECONFIG` names a kubeconfig, the portable scenarios against that cluster).
//! Every wait is on a watch event or a condition, with a timeout; nothing sleeps to synchronise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

mod common;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, Resource};
use mcp_operator::api::{MCPPolicy, MCPPromptVersion, MCPServer};
use mcp_operator::builders::BuildContext;
use mcp_operator::controller::leader::LeaseConfig;
use mcp_operator::controller::metrics::Metrics;
use mcp_operator::controller::{self, ControllerConfig, ControllerError};
use mcp_operator::testkit::apiserver::{ApiServer, Faults};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);
const API_VERSION: &str = "mcp-operator.dev/v1alpha1";

fn fixed_clock() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_767_225_600).unwrap())
}

struct Running {
    handle: JoinHandle<Result<(), ControllerError>>,
    stop: Option<oneshot::Sender<()>>,
    metrics: Metrics,
}

impl Running {
    async fn stop(mut self) -> Result<(), ControllerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("the controller stops")
            .unwrap()
    }

    /// Wait until at least `n` reconciles completed.
    async fn reconciled(&self, n: u64) {
        let mut reconciles = self.metrics.reconciles();
        tokio::time::timeout(WAIT, reconciles.wait_for(|done| *done >= n))
            .await
            .expect("reconciles happen")
            .unwrap();
    }
}

fn start(client: Client, identity: &str, lease: Option<LeaseConfig>) -> Running {
    start_with(client, identity, lease, Vec::new(), None)
}

fn start_with(
    client: Client,
    identity: &str,
    lease: Option<LeaseConfig>,
    namespaces: Vec<String>,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Running {
    start_sharded(client, identity, lease, namespaces, metrics_addr, None)
}

fn start_sharded(
    client: Client,
    identity: &str,
    lease: Option<LeaseConfig>,
    namespaces: Vec<String>,
    metrics_addr: Option<std::net::SocketAddr>,
    server_selector: Option<String>,
) -> Running {
    let metrics = Metrics::default();
    let config = ControllerConfig {
        client,
        namespaces,
        server_selector,
        build: BuildContext::default(),
        lease,
        metrics_addr,
        concurrency: 8,
        crd_wait: Duration::from_secs(5),
        instance: identity.into(),
        clock: fixed_clock,
        metrics: metrics.clone(),
        inventory: None,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(controller::run(config, async move {
        let _ = stopped.await;
    }));
    Running {
        handle,
        stop: Some(stop),
        metrics,
    }
}

async fn double() -> ApiServer {
    let server = ApiServer::start().await.unwrap();
    server.install_crds().unwrap();
    server.spawn_deployment_controller();
    server
}

fn mcp_server(name: &str, spec: Value) -> MCPServer {
    serde_json::from_value(json!({"apiVersion": API_VERSION, "kind": "MCPServer", "metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    condition: impl Fn(Option<&K>) -> bool,
) -> Option<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), name, move |o: Option<&K>| condition(o)),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    .unwrap()
}

fn phase(s: Option<&MCPServer>) -> Option<&str> {
    s.and_then(|s| s.status.as_ref())
        .and_then(|st| st.phase.as_deref())
}

fn observed_current(s: Option<&MCPServer>) -> bool {
    s.is_some_and(|s| {
        s.status.as_ref().and_then(|st| st.observed_generation) == s.meta().generation
    })
}

/// Wait until the server's status describes its current generation: Ready when pods can run
/// (`expect_ready`), otherwise at least rolled out to the API.
async fn wait_settled(servers: &Api<MCPServer>, name: &str, expect_ready: bool) -> MCPServer {
    wait_for(servers, name, "the server to settle", move |s| {
        observed_current(s) && (!expect_ready || phase(s) == Some("Ready"))
    })
    .await
    .unwrap()
}

fn gateway_config(cm: &ConfigMap) -> String {
    cm.data.as_ref().unwrap()["gateway.yaml"].clone()
}

// ---- Portable scenarios: only the kube API, so they run on a real cluster too. ----

async fn scenario_create_update_delete(client: Client, ns: &str, expect_ready: bool) {
    let servers: Api<MCPServer> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    servers
        .create(
            &PostParams::default(),
            &mcp_server(
                "lifecycle",
                json!({"image": "registry.example.com/mcp@sha256:".to_string() + &"a".repeat(64)}),
            ),
        )
        .await
        .unwrap();
    let ready = wait_settled(&servers, "lifecycle", expect_ready).await;
    let status = ready.status.unwrap();
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("http://lifecycle.{ns}.svc:8443/mcp").as_str())
    );
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(1))
    );
    for (kind, exists) in [
        (
            "ServiceAccount",
            Api::<ServiceAccount>::namespaced(client.clone(), ns)
                .get_opt("lifecycle")
                .await
                .unwrap()
                .is_some(),
        ),
        (
            "ConfigMap",
            Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt("lifecycle-gateway")
                .await
                .unwrap()
                .is_some(),
        ),
        (
            "Deployment",
            deployments.get_opt("lifecycle").await.unwrap().is_some(),
        ),
        (
            "Service",
            Api::<Service>::namespaced(client.clone(), ns)
                .get_opt("lifecycle")
                .await
                .unwrap()
                .is_some(),
        ),
        (
            "NetworkPolicy",
            Api::<NetworkPolicy>::namespaced(client.clone(), ns)
                .get_opt("lifecycle")
                .await
                .unwrap()
                .is_some(),
        ),
    ] {
        assert!(exists, "{kind} was not created");
    }
    assert!(
        Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
            .get_opt("lifecycle")
            .await
            .unwrap()
            .is_none()
    );

    // A spec change rolls out and observedGeneration follows.
    servers
        .patch(
            "lifecycle",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"env": [{"name": "MODE", "value": "readonly"}]}})),
        )
        .await
        .unwrap();
    wait_for(
        &deployments,
        "lifecycle",
        "the env to reach the Deployment",
        |d| {
            d.and_then(|d| d.spec.as_ref()).is_some_and(|s| {
                s.template.spec.as_ref().unwrap().containers[0]
                    .env
                    .as_ref()
                    .is_some_and(|e| e.iter().any(|v| v.name == "MODE"))
            })
        },
    )
    .await;
    let updated = wait_settled(&servers, "lifecycle", expect_ready).await;
    assert_eq!(updated.status.unwrap().observed_generation, Some(2));

    // Deleting the server removes everything it created (owner references).
    servers
        .delete("lifecycle", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&deployments, "lifecycle", "the Deployment to go", |d| {
        d.is_none()
    })
    .await;
    wait_for(
        &Api::<ConfigMap>::namespaced(client.clone(), ns),
        "lifecycle-gateway",
        "the ConfigMap to go",
        |c| c.is_none(),
    )
    .await;
}

async fn scenario_drift_is_repaired(client: Client, ns: &str) {
    let servers: Api<MCPServer> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    servers
        .create(
            &PostParams::default(),
            &mcp_server("drift", json!({"image": "example/drift:1"})),
        )
        .await
        .unwrap();
    wait_for(&deployments, "drift", "the Deployment", |d| d.is_some()).await;
    wait_for(&config_maps, "drift-gateway", "the ConfigMap", |c| {
        c.is_some()
    })
    .await;

    deployments.patch("drift", &PatchParams::default(), &Patch::Json::<()>(serde_json::from_value(json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "attacker/image:latest"}])).unwrap())).await.unwrap();
    wait_for(&deployments, "drift", "the image to be restored", |d| {
        d.and_then(|d| d.spec.as_ref()).is_some_and(|s| {
            s.template.spec.as_ref().unwrap().containers[0]
                .image
                .as_deref()
                == Some("example/drift:1")
        })
    })
    .await;

    config_maps
        .patch(
            "drift-gateway",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"gateway.yaml": "tampered"}})),
        )
        .await
        .unwrap();
    wait_for(
        &config_maps,
        "drift-gateway",
        "the gateway configuration to be restored",
        |c| c.is_some_and(|c| gateway_config(c).contains("kind: GatewayConfig")),
    )
    .await;

    services
        .delete("drift", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&services, "drift", "the Service to be re-created", |s| {
        s.is_some()
    })
    .await;
}

async fn scenario_autoscaling_removed(client: Client, ns: &str) {
    let servers: Api<MCPServer> = Api::namespaced(client.clone(), ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    servers.create(&PostParams::default(), &mcp_server("scaled", json!({"image": "example/s:1", "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}))).await.unwrap();
    wait_for(&hpas, "scaled", "the HPA", |h| h.is_some()).await;
    wait_for(&pdbs, "scaled", "the PDB", |p| p.is_some()).await;
    servers
        .patch(
            "scaled",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"autoscaling": null, "replicas": 1}})),
        )
        .await
        .unwrap();
    wait_for(&hpas, "scaled", "the HPA to be deleted", |h| h.is_none()).await;
    wait_for(&pdbs, "scaled", "the PDB to be deleted", |p| p.is_none()).await;
}

async fn scenario_policy_and_prompt_changes(client: Client, prod: &str, dev: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for (ns, env) in [(prod, "prod"), (dev, "dev")] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"env": env}}});
        namespaces
            .patch(ns, &PatchParams::apply("test").force(), &Patch::Apply(body))
            .await
            .unwrap();
    }
    let prompt =
        json!({"image": "example/p:1", "prompts": [{"name": "triage", "version": "^1.2"}]});
    for ns in [prod, dev] {
        Api::<MCPServer>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &mcp_server("tools", prompt.clone()))
            .await
            .unwrap();
    }
    let prod_cms: Api<ConfigMap> = Api::namespaced(client.clone(), prod);
    let dev_cms: Api<ConfigMap> = Api::namespaced(client.clone(), dev);
    for cms in [&prod_cms, &dev_cms] {
        wait_for(cms, "tools-gateway", "the gateway configuration", |c| {
            c.is_some()
        })
        .await;
    }
    let dev_before = dev_cms.get("tools-gateway").await.unwrap();

    // A policy selecting prod namespaces reaches the prod server only.
    let policy: MCPPolicy = serde_json::from_value(json!({"apiVersion": API_VERSION, "kind": "MCPPolicy", "metadata": {"name": format!("{prod}-deny")}, "spec": {"enforcement": "Audit", "namespaceSelector": {"matchLabels": {"env": "prod"}}, "tools": {"deny": ["delete_*"]}}})).unwrap();
    Api::<MCPPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    wait_for(
        &prod_cms,
        "tools-gateway",
        "the policy to reach prod",
        |c| c.is_some_and(|c| gateway_config(c).contains("delete_*")),
    )
    .await;

    // A prompt version published in prod reaches the prod server only.
    let version: MCPPromptVersion = serde_json::from_value(json!({"apiVersion": API_VERSION, "kind": "MCPPromptVersion", "metadata": {"name": "triage-1-3-0"}, "spec": {"prompt": "triage", "version": "1.3.0", "messages": [{"role": "user", "text": "triage"}]}})).unwrap();
    Api::<MCPPromptVersion>::namespaced(client.clone(), prod)
        .create(&PostParams::default(), &version)
        .await
        .unwrap();
    wait_for(
        &prod_cms,
        "tools-gateway",
        "the prompt to reach prod",
        |c| c.is_some_and(|c| gateway_config(c).contains("version: \"1.3.0\"")),
    )
    .await;
    let prod_server = wait_for(
        &Api::<MCPServer>::namespaced(client.clone(), prod),
        "tools",
        "the prompt in status",
        |s| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
                st.prompts
                    .iter()
                    .any(|p| p.resolved_version.as_deref() == Some("1.3.0"))
            })
        },
    )
    .await
    .unwrap();
    assert!(
        prod_server
            .status
            .unwrap()
            .policies
            .iter()
            .any(|p| p.name == format!("{prod}-deny"))
    );

    let dev_after = dev_cms.get("tools-gateway").await.unwrap();
    assert_eq!(
        dev_before.metadata.resource_version, dev_after.metadata.resource_version,
        "the dev server was not touched"
    );
    Api::<MCPPolicy>::all(client)
        .delete(&format!("{prod}-deny"), &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        &prod_cms,
        "tools-gateway",
        "the deleted policy to be lifted",
        |c| c.is_some_and(|c| !gateway_config(c).contains("delete_*")),
    )
    .await;
}

async fn scenario_invalid_spec(client: Client, ns: &str) {
    let servers: Api<MCPServer> = Api::namespaced(client.clone(), ns);
    // Valid for the schema, but the server port clashes with the gateway's.
    servers
        .create(
            &PostParams::default(),
            &mcp_server("clash", json!({"image": "example/c:1", "port": 8443})),
        )
        .await
        .unwrap();
    let s = wait_for(&servers, "clash", "the Invalid phase", |s| {
        phase(s) == Some("Invalid")
    })
    .await
    .unwrap();
    let ready = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(ready.message.contains("spec.port"), "{}", ready.message);
    assert!(
        Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt("clash")
            .await
            .unwrap()
            .is_none(),
        "nothing is rolled out"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let list = events.list(&Default::default()).await.unwrap();
            if let Some(e) = list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("InvalidSpec")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("clash")
            }) {
                return e;
            }
            // Events are written after the status; wait for the next change of any kind.
            let _ = wait_for(&servers, "clash", "a change", |_| true).await;
        }
    })
    .await
    .expect("a Warning event");
    assert_eq!(found.type_.as_deref(), Some("Warning"));
    // Fixing the spec rolls it out.
    servers
        .patch(
            "clash",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"port": 8080}})),
        )
        .await
        .unwrap();
    wait_for(
        &Api::<Deployment>::namespaced(client, ns),
        "clash",
        "the corrected server's Deployment",
        |d| d.is_some(),
    )
    .await;
}

// ---- Against the in-process API server. ----

/// Run a portable scenario against a fresh API server double with a controller running.
async fn on_double<F, Fut>(scenario: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let api = double().await;
    let controller = start(api.client("controller").unwrap(), "c", None);
    scenario(api.client("user").unwrap()).await;
    controller.stop().await.unwrap();
}

#[tokio::test]
async fn create_update_and_delete() {
    on_double(|client| scenario_create_update_delete(client, "tools", true)).await;
}

#[tokio::test]
async fn drift_is_repaired() {
    on_double(|client| scenario_drift_is_repaired(client, "tools")).await;
}

#[tokio::test]
async fn autoscaling_removed_deletes_hpa_and_pdb() {
    on_double(|client| scenario_autoscaling_removed(client, "tools")).await;
}

#[tokio::test]
async fn policy_and_prompt_changes_reach_exactly_the_affected_servers() {
    on_double(|client| scenario_policy_and_prompt_changes(client, "prod-a", "dev-b")).await;
}

#[tokio::test]
async fn invalid_spec_waits_with_status_and_event() {
    on_double(|client| scenario_invalid_spec(client, "tools")).await;
}

#[tokio::test]
async fn writes_per_new_server_and_none_after_restart() {
    let api = double().await;
    let user = api.client("user").unwrap();
    let servers: Api<MCPServer> = Api::namespaced(user.clone(), "tools");
    let controller = start(api.client("first").unwrap(), "first", None);
    for i in 0..3 {
        servers
            .create(
                &PostParams::default(),
                &mcp_server(
                    &format!("s{i}"),
                    json!({"image": "example/s:1", "replicas": 2}),
                ),
            )
            .await
            .unwrap();
    }
    for i in 0..3 {
        wait_settled(&servers, &format!("s{i}"), true).await;
    }
    let counts = api.counts();
    // 6 children each (SA, ConfigMap, Deployment, Service, NetworkPolicy, PDB) + 1 status write.
    assert_eq!(
        counts.writes(Some("first")),
        3 * 7,
        "writes per new server: {:?}",
        counts.writes_by_resource(Some("first"))
    );
    controller.stop().await.unwrap();

    api.reset_counts();
    let restarted = start(api.client("second").unwrap(), "second", None);
    restarted.reconciled(3).await;
    let counts = api.counts();
    assert_eq!(
        counts.writes(Some("second")),
        0,
        "a restart with nothing to do writes nothing: {:?}",
        counts.writes_by_resource(Some("second"))
    );
    assert!(
        counts.count(Some("second"), "list") > 0,
        "it did read the cluster"
    );
    restarted.stop().await.unwrap();
}

async fn wait_for_lease_holder(api: &ApiServer, identity: &str) {
    let holder = json!(identity);
    api.wait_until(&format!("{identity} holds the lease"), WAIT, |s| {
        s.get(
            "coordination.k8s.io/v1",
            "Lease",
            "mcp-operator",
            "mcp-operator-leader",
        )
        .and_then(|l| l.pointer("/spec/holderIdentity").cloned())
            == Some(holder.clone())
    })
    .await
    .unwrap();
}

fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: "mcp-operator".into(),
        name: "mcp-operator-leader".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(3),
        renew_interval: Duration::from_millis(300),
    }
}

#[tokio::test]
async fn only_the_leader_writes_and_a_follower_takes_over() {
    let api = double().await;
    let servers: Api<MCPServer> = Api::namespaced(api.client("user").unwrap(), "tools");
    let a = start(
        api.client("replica-a").unwrap(),
        "replica-a",
        Some(lease("replica-a")),
    );
    wait_for_lease_holder(&api, "replica-a").await;
    let b = start(
        api.client("replica-b").unwrap(),
        "replica-b",
        Some(lease("replica-b")),
    );
    servers
        .create(
            &PostParams::default(),
            &mcp_server("one", json!({"image": "example/s:1"})),
        )
        .await
        .unwrap();
    wait_settled(&servers, "one", true).await;
    let counts = api.counts();
    assert!(counts.writes(Some("replica-a")) > 0);
    let follower_writes: BTreeMap<String, u64> = counts.writes_by_resource(Some("replica-b"));
    assert!(
        follower_writes.is_empty(),
        "the follower wrote: {follower_writes:?}"
    );

    // The leader steps down; the follower takes over and reconciles new servers.
    a.stop().await.unwrap();
    servers
        .create(
            &PostParams::default(),
            &mcp_server("two", json!({"image": "example/s:1"})),
        )
        .await
        .unwrap();
    wait_settled(&servers, "two", true).await;
    assert!(api.counts().writes(Some("replica-b")) > 0);
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_replica_that_loses_its_lease_stops() {
    let api = double().await;
    let a = start(
        api.client("replica-a").unwrap(),
        "replica-a",
        Some(lease("replica-a")),
    );
    wait_for_lease_holder(&api, "replica-a").await;
    // Someone else takes the lease (as after a network partition).
    api.merge_patch(
        "coordination.k8s.io/v1",
        "Lease",
        "mcp-operator",
        "mcp-operator-leader",
        json!({"spec": {"holderIdentity": "intruder", "renewTime": "2099-01-01T00:00:00.000000Z"}}),
    )
    .unwrap();
    let result = tokio::time::timeout(WAIT, a.handle)
        .await
        .expect("the replica stops")
        .unwrap();
    assert!(
        matches!(result, Err(ControllerError::Lease(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn converges_under_injected_faults() {
    let api = double().await;
    let servers: Api<MCPServer> = Api::namespaced(api.client("user").unwrap(), "tools");
    for i in 0..8 {
        servers
            .create(
                &PostParams::default(),
                &mcp_server(
                    &format!("f{i}"),
                    json!({"image": "example/f:1", "replicas": 2}),
                ),
            )
            .await
            .unwrap();
    }
    api.set_faults(
        Faults::errors(0.2, &[500, 429, 409])
            .with_watch_drops(0.05)
            .seeded(11),
    );
    let controller = start(api.client("controller").unwrap(), "c", None);
    api.wait_until(
        "all servers Ready despite faults",
        Duration::from_secs(60),
        |s| {
            (0..8).all(|i| {
                s.get(API_VERSION, "MCPServer", "tools", &format!("f{i}"))
                    .and_then(|o| o.pointer("/status/phase").cloned())
                    == Some(json!("Ready"))
            })
        },
    )
    .await
    .unwrap();
    api.set_faults(Faults::default());
    for (version, kind) in [
        ("v1", "ServiceAccount"),
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("policy/v1", "PodDisruptionBudget"),
    ] {
        assert_eq!(
            api.count_of(version, kind),
            8,
            "exactly one {kind} per server, none lost or duplicated"
        );
    }
    controller.stop().await.unwrap();
}

#[tokio::test]
async fn a_malformed_server_does_not_stop_the_others() {
    let api = double().await;
    // Stored around validation, as after a schema change: `port` is not a number.
    api.insert_unchecked(API_VERSION, "MCPServer", "tools", json!({"apiVersion": API_VERSION, "kind": "MCPServer", "metadata": {"name": "broken"}, "spec": {"image": "x", "port": "eighty"}})).unwrap();
    let servers: Api<MCPServer> = Api::namespaced(api.client("user").unwrap(), "tools");
    servers
        .create(
            &PostParams::default(),
            &mcp_server("healthy", json!({"image": "example/h:1"})),
        )
        .await
        .unwrap();
    let controller = start(api.client("controller").unwrap(), "c", None);
    wait_settled(&servers, "healthy", true).await;
    api.wait_until("a Malformed event", WAIT, |s| {
        s.list("events.k8s.io/v1", "Event")
            .iter()
            .any(|e| e["reason"] == "Malformed" && e["regarding"]["name"] == "broken")
    })
    .await
    .unwrap();
    controller.stop().await.unwrap();
}

#[tokio::test]
async fn missing_crds_stop_the_controller_with_a_clear_error() {
    let api = ApiServer::start().await.unwrap();
    let controller = start(api.client("controller").unwrap(), "c", None);
    let result = tokio::time::timeout(WAIT, controller.handle)
        .await
        .unwrap()
        .unwrap();
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("mcpservers.mcp-operator.dev is not installed"),
        "{message}"
    );
}

// ---- Against a real cluster, when one is configured. ----

#[tokio::test]
async fn portable_scenarios_on_a_real_cluster() {
    let Some(path) = std::env::var_os("MCP_TEST_KUBECONFIG") else {
        eprintln!(
            "skipped: set MCP_TEST_KUBECONFIG to a kubeconfig (with the CRDs installed) to run the controller scenarios against a real cluster"
        );
        return;
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let suffix = std::process::id();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = ["lifecycle", "drift", "scale", "prod", "dev", "invalid"]
        .iter()
        .map(|n| format!("mcp-e2e-{n}-{suffix}"))
        .collect();
    for ns in &names {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        namespaces
            .patch(
                ns,
                &PatchParams::apply("mcp-e2e").force(),
                &Patch::Apply(body),
            )
            .await
            .unwrap();
    }
    let controller = start(client.clone(), "e2e", None);
    // Pods need pullable images to become Ready, so readiness is not awaited here.
    scenario_create_update_delete(client.clone(), &names[0], false).await;
    scenario_drift_is_repaired(client.clone(), &names[1]).await;
    scenario_autoscaling_removed(client.clone(), &names[2]).await;
    scenario_policy_and_prompt_changes(client.clone(), &names[3], &names[4]).await;
    scenario_invalid_spec(client.clone(), &names[5]).await;
    controller.stop().await.unwrap();
    for ns in &names {
        let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    }
}

/// GET `path` from the controller's health and metrics endpoint.
async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

#[tokio::test]
async fn health_and_metrics_endpoint() {
    let api = double().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let controller = start_with(
        api.client("controller").unwrap(),
        "c",
        None,
        Vec::new(),
        Some(addr),
    );
    let servers: Api<MCPServer> = Api::namespaced(api.client("user").unwrap(), "tools");
    servers
        .create(
            &PostParams::default(),
            &mcp_server("observed", json!({"image": "example/o:1"})),
        )
        .await
        .unwrap();
    wait_settled(&servers, "observed", true).await;
    assert_eq!(http_get(port, "/healthz").await.0, 200);
    assert_eq!(http_get(port, "/readyz").await.0, 200);
    let (code, metrics) = http_get(port, "/metrics").await;
    assert_eq!(code, 200);
    for name in [
        "mcp_operator_reconciles_total",
        "mcp_operator_reconcile_duration_seconds_bucket",
        "mcp_operator_status_writes_total 1",
        "mcp_operator_managed_servers 1",
        "mcp_operator_child_writes_total{kind=\"Deployment\"} 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    controller.stop().await.unwrap();
}

#[tokio::test]
async fn a_namespace_scoped_controller_leaves_other_namespaces_alone() {
    let api = double().await;
    let controller = start_with(
        api.client("controller").unwrap(),
        "c",
        None,
        vec!["team-a".into()],
        None,
    );
    let user = api.client("user").unwrap();
    let team_a: Api<MCPServer> = Api::namespaced(user.clone(), "team-a");
    let team_b: Api<MCPServer> = Api::namespaced(user.clone(), "team-b");
    team_b
        .create(
            &PostParams::default(),
            &mcp_server("other", json!({"image": "example/o:1"})),
        )
        .await
        .unwrap();
    team_a
        .create(
            &PostParams::default(),
            &mcp_server("mine", json!({"image": "example/m:1"})),
        )
        .await
        .unwrap();
    wait_settled(&team_a, "mine", true).await;
    assert!(
        api.get("apps/v1", "Deployment", "team-b", "other")
            .is_none(),
        "team-b is another shard's"
    );
    assert!(team_b.get("other").await.unwrap().status.is_none());
    controller.stop().await.unwrap();
}

#[tokio::test]
async fn a_label_sharded_controller_manages_only_its_shard() {
    let api = double().await;
    let controller = start_sharded(
        api.client("controller").unwrap(),
        "c",
        None,
        Vec::new(),
        None,
        Some("shard=a".into()),
    );
    let servers: Api<MCPServer> = Api::namespaced(api.client("user").unwrap(), "tools");
    let labelled = |name: &str, shard: &str| -> MCPServer {
        serde_json::from_value(json!({"apiVersion": API_VERSION, "kind": "MCPServer", "metadata": {"name": name, "labels": {"shard": shard}}, "spec": {"image": "example/s:1"}})).unwrap()
    };
    servers
        .create(&PostParams::default(), &labelled("in-b", "b"))
        .await
        .unwrap();
    servers
        .create(&PostParams::default(), &labelled("in-a", "a"))
        .await
        .unwrap();
    wait_settled(&servers, "in-a", true).await;
    assert!(
        api.get("apps/v1", "Deployment", "tools", "in-b").is_none(),
        "shard b belongs to another instance"
    );
    assert!(servers.get("in-b").await.unwrap().status.is_none());
    controller.stop().await.unwrap();
}

fn condition<'a>(server: &'a MCPServer, type_: &str) -> Option<(&'a str, &'a str)> {
    server
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// An Enforce policy blocks a new violating server (nothing created, status and a Warning Event
/// say which rule and what to change) and keeps an existing server's last compliant rollout
/// when its spec starts violating; flipping the policy to Audit rolls both out with findings.
#[tokio::test]
async fn enforce_blocks_violating_servers_and_audit_rolls_them_out() {
    on_double(scenario_enforce_and_audit).await;
}

async fn scenario_enforce_and_audit(client: Client) {
    {
        let ns = "governed";
        let servers: Api<MCPServer> = Api::namespaced(client.clone(), ns);
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let policy = |enforcement: &str| -> MCPPolicy {
            serde_json::from_value(json!({"apiVersion": API_VERSION, "kind": "MCPPolicy", "metadata": {"name": "digests"},
                "spec": {"enforcement": enforcement, "workload": {"requireDigest": true},
                    "overrides": [
                        {"rule": "MCP-AUTH-001", "enforcement": "Audit", "reason": "test servers run without a token issuer"},
                        {"rule": "MCP-AUTHZ-001", "enforcement": "Audit", "reason": "test servers run without rules"},
                    ]}})).unwrap()
        };
        let policies: Api<MCPPolicy> = Api::all(client.clone());
        policies
            .create(&PostParams::default(), &policy("Enforce"))
            .await
            .unwrap();
        let pinned = format!("registry.example.com/mcp/a@sha256:{}", "ab".repeat(32));
        servers
            .create(
                &PostParams::default(),
                &mcp_server("compliant", json!({"image": pinned})),
            )
            .await
            .unwrap();
        servers
            .create(
                &PostParams::default(),
                &mcp_server("tagged", json!({"image": "example/b:1"})),
            )
            .await
            .unwrap();

        let blocked = wait_for(&servers, "tagged", "the tagged server to be blocked", |s| {
            s.is_some_and(|s| phase(Some(s)) == Some("Blocked"))
        })
        .await
        .unwrap();
        assert_eq!(
            condition(&blocked, "PolicyCompliant"),
            Some(("False", "BlockedByPolicy"))
        );
        let status = blocked.status.as_ref().unwrap();
        let digest = status
            .findings
            .iter()
            .find(|f| f.rule == "MCP-SUPPLY-001")
            .expect("a digest finding");
        assert!(
            digest.enforced && digest.message.contains("example/b:1"),
            "{digest:?}"
        );
        assert!(status.compliance.as_ref().unwrap().failed >= 1);
        assert_eq!(status.policies[0].name, "digests");
        assert!(
            deployments.get_opt("tagged").await.unwrap().is_none(),
            "nothing is rolled out"
        );

        let compliant = wait_for(
            &servers,
            "compliant",
            "the pinned server to be Ready",
            |s| phase(s) == Some("Ready"),
        )
        .await
        .unwrap();
        // Audit overrides: the auth findings are reported, not blocking.
        assert_eq!(
            condition(&compliant, "PolicyCompliant"),
            Some(("False", "ViolationsReported"))
        );
        let before = deployments.get("compliant").await.unwrap();

        // The running server's spec starts violating: its Deployment stays as it was.
        servers
            .patch(
                "compliant",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"image": "example/a:2", "replicas": 3}})),
            )
            .await
            .unwrap();
        let still = wait_for(&servers, "compliant", "the change to be blocked", |s| {
            s.is_some_and(|s| condition(s, "PolicyCompliant") == Some(("False", "BlockedByPolicy")))
        })
        .await
        .unwrap();
        assert_eq!(
            phase(Some(&still)),
            Some("Ready"),
            "the last rollout keeps serving"
        );
        let after = deployments.get("compliant").await.unwrap();
        assert_eq!(before.spec, after.spec);

        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
        // Events are written after the status: wait for the next change until it is there.
        let blocked_event = tokio::time::timeout(WAIT, async {
            loop {
                let list = events.list(&Default::default()).await.unwrap();
                if let Some(e) = list.items.into_iter().find(|e| {
                    e.reason.as_deref() == Some("RolloutBlocked")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("tagged")
                }) {
                    return e;
                }
                let _ = wait_for(&servers, "tagged", "a change", |_| true).await;
            }
        })
        .await
        .expect("a RolloutBlocked event");
        assert_eq!(blocked_event.type_.as_deref(), Some("Warning"));
        assert!(
            blocked_event
                .note
                .as_deref()
                .unwrap_or_default()
                .contains("MCP-SUPPLY-001")
        );

        // Audit: both roll out, with their findings.
        policies
            .replace("digests", &PostParams::default(), &{
                let mut p = policy("Audit");
                p.metadata.resource_version = policies
                    .get("digests")
                    .await
                    .unwrap()
                    .metadata
                    .resource_version;
                p
            })
            .await
            .unwrap();
        wait_for(
            &deployments,
            "tagged",
            "the tagged server to roll out",
            |d| d.is_some(),
        )
        .await;
        wait_for(
            &deployments,
            "compliant",
            "the new image to roll out",
            |d| d.is_some_and(|d| d.spec.as_ref().and_then(|s| s.replicas) == Some(3)),
        )
        .await;
        let tagged = wait_for(&servers, "tagged", "findings reported", |s| {
            s.is_some_and(|s| {
                condition(s, "PolicyCompliant") == Some(("False", "ViolationsReported"))
            })
        })
        .await
        .unwrap();
        assert!(
            tagged
                .status
                .unwrap()
                .findings
                .iter()
                .any(|f| f.rule == "MCP-SUPPLY-001" && !f.enforced)
        );

        // The policy counts what it selects: both servers, evaluated with its current
        // generation, neither compliant (the auth rules are only audited, still failing).
        let generation = policies.get("digests").await.unwrap().metadata.generation;
        let counted = wait_for(&policies, "digests", "the policy status", move |p| {
            p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
                s.observed_generation == generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                    && s.violations
                        .iter()
                        .any(|v| v.rule == "MCP-SUPPLY-001" && v.servers == 2)
            })
        })
        .await
        .unwrap();
        let status = counted.status.unwrap();
        assert_eq!((status.matched_servers, status.compliant_servers), (2, 0));
        let digests = status
            .violations
            .iter()
            .find(|v| v.rule == "MCP-SUPPLY-001")
            .unwrap();
        assert_eq!(digests.examples, ["governed/compliant", "governed/tagged"]);
    }
}

/// A repeated Event (same reason and note) counts into the first one's series; the same reason
/// with another note is a new Event, so what it says is never the first occurrence's text.
#[tokio::test]
async fn repeated_events_fold_into_a_series_and_new_notes_are_new_events() {
    let api = double().await;
    let publisher = controller::events::EventPublisher::new(
        api.client("controller").unwrap(),
        "mcp-operator",
        "test",
    );
    let regarding = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(API_VERSION.into()),
        kind: Some("MCPServer".into()),
        namespace: Some("events".into()),
        name: Some("peer".into()),
        uid: Some("1".into()),
        ..Default::default()
    };
    use kube::runtime::events::EventType::Warning;
    publisher
        .publish(&regarding, Warning, "ToolQuarantined", "echo changed")
        .await
        .unwrap();
    publisher
        .publish(&regarding, Warning, "ToolQuarantined", "echo changed")
        .await
        .unwrap();
    publisher
        .publish(&regarding, Warning, "ToolQuarantined", "add is new")
        .await
        .unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(api.client("user").unwrap(), "events");
    let mut seen: Vec<(String, Option<i32>)> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| (e.note.unwrap_or_default(), e.series.map(|s| s.count)))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("add is new".to_owned(), None),
            ("echo changed".to_owned(), Some(2))
        ]
    );
}

fn prompt_version(name: &str, version: &str, created_text: &str) -> MCPPromptVersion {
    serde_json::from_value(
        json!({"apiVersion": API_VERSION, "kind": "MCPPromptVersion",
        "metadata": {"name": name},
        "spec": {"prompt": "triage", "version": version,
            "messages": [{"role": "user", "text": created_text}]}}),
    )
    .unwrap()
}

fn resolved(server: Option<&MCPServer>) -> Option<String> {
    server?
        .status
        .as_ref()?
        .prompts
        .iter()
        .find(|p| p.name == "triage")?
        .resolved_version
        .clone()
}

/// Wait for an Event about `server` with `reason`.
async fn wait_server_event(client: &Client, ns: &str, server: &str, reason: &str) -> String {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let stream = kube::runtime::watcher(events, Default::default());
    let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(stream));
    tokio::time::timeout(WAIT, async {
        use futures::StreamExt;
        while let Some(Ok(event)) = stream.next().await {
            if event.reason.as_deref() == Some(reason)
                && event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(server)
            {
                return event.note.unwrap_or_default();
            }
        }
        panic!("the event watch ended")
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for a {reason} event"))
}

/// Publish, roll forward, retire (roll back), deprecated-only match (served, with an Event),
/// no match (condition, the rest of the server still reconciled), a duplicate version, and a
/// published spec that cannot be edited; the prompt versions' status lists who serves them.
#[tokio::test]
async fn prompt_versions_roll_forward_back_and_report_who_serves_them() {
    on_double(scenario_prompt_versions).await;
}

async fn scenario_prompt_versions(client: Client) {
    {
        let ns = "prompts";
        let servers: Api<MCPServer> = Api::namespaced(client.clone(), ns);
        let versions: Api<MCPPromptVersion> = Api::namespaced(client.clone(), ns);
        versions
            .create(
                &PostParams::default(),
                &prompt_version("triage-1-2-0", "1.2.0", "v1.2"),
            )
            .await
            .unwrap();
        servers
            .create(
                &PostParams::default(),
                &mcp_server("ops", json!({"image": "example/ops:1", "prompts": [{"name": "triage", "version": "^1.2"}]})),
            )
            .await
            .unwrap();
        wait_for(&servers, "ops", "1.2.0 served", |s| {
            resolved(s).as_deref() == Some("1.2.0")
        })
        .await;
        let published = wait_for(&versions, "triage-1-2-0", "its status", |v| {
            v.and_then(|v| v.status.as_ref())
                .is_some_and(|s| s.servers == ["prompts/ops"])
        })
        .await
        .unwrap();
        let hash = published.status.unwrap().content_hash.unwrap();
        assert_eq!(hash.len(), 64);

        // Roll forward.
        versions
            .create(
                &PostParams::default(),
                &prompt_version("triage-1-3-0", "1.3.0", "v1.3"),
            )
            .await
            .unwrap();
        wait_for(&servers, "ops", "1.3.0 served", |s| {
            resolved(s).as_deref() == Some("1.3.0")
        })
        .await;
        wait_for(&versions, "triage-1-2-0", "1.2.0 no longer served", |v| {
            v.and_then(|v| v.status.as_ref())
                .is_some_and(|s| s.servers.is_empty())
        })
        .await;

        // Retire 1.3.0: back to 1.2.0.
        let lifecycle = |value: &str| Patch::Merge(json!({"spec": {"lifecycle": value}}));
        versions
            .patch(
                "triage-1-3-0",
                &PatchParams::default(),
                &lifecycle("Retired"),
            )
            .await
            .unwrap();
        wait_for(&servers, "ops", "rolled back to 1.2.0", |s| {
            resolved(s).as_deref() == Some("1.2.0")
        })
        .await;

        // Only a Deprecated version matches: still served, with a Warning Event.
        versions
            .patch(
                "triage-1-2-0",
                &PatchParams::default(),
                &lifecycle("Deprecated"),
            )
            .await
            .unwrap();
        let note = wait_server_event(&client, ns, "ops", "PromptDeprecated").await;
        assert!(
            note.contains("1.2.0") && note.contains("triage-1-2-0"),
            "{note}"
        );
        let still = servers.get("ops").await.unwrap();
        assert_eq!(resolved(Some(&still)).as_deref(), Some("1.2.0"));

        // Nothing matches: the condition names the reference, the server still reconciles.
        versions
            .patch(
                "triage-1-2-0",
                &PatchParams::default(),
                &lifecycle("Retired"),
            )
            .await
            .unwrap();
        let unresolved = wait_for(&servers, "ops", "PromptsResolved False", |s| {
            s.is_some_and(|s| condition(s, "PromptsResolved") == Some(("False", "NotResolved")))
        })
        .await
        .unwrap();
        let message = &unresolved
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == "PromptsResolved")
            .unwrap()
            .message;
        assert!(message.contains("triage ^1.2"), "{message}");
        assert_eq!(
            phase(Some(&unresolved)),
            Some("Ready"),
            "the rest of the server is served"
        );

        // A lifecycle never moves back, and a published spec cannot be edited.
        let back = versions
            .patch(
                "triage-1-2-0",
                &PatchParams::default(),
                &lifecycle("Active"),
            )
            .await
            .unwrap_err();
        assert!(back.to_string().contains("lifecycle"), "{back}");
        let edit = versions
            .patch(
                "triage-1-3-0",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"messages": [{"role": "user", "text": "changed"}]}})),
            )
            .await
            .unwrap_err();
        assert!(
            edit.to_string().contains("spec.messages is immutable"),
            "{edit}"
        );

        // Two objects claim 1.4.0: the older one is served, the newer says so.
        versions
            .create(
                &PostParams::default(),
                &prompt_version("triage-1-4-0", "1.4.0", "v1.4"),
            )
            .await
            .unwrap();
        versions
            .create(
                &PostParams::default(),
                &prompt_version("triage-1-4-0-copy", "1.4.0", "copy"),
            )
            .await
            .unwrap();
        wait_for(&servers, "ops", "1.4.0 served", |s| {
            resolved(s).as_deref() == Some("1.4.0")
        })
        .await;
        let shadowed = wait_for(
            &versions,
            "triage-1-4-0-copy",
            "the duplicate reported",
            |v| {
                v.and_then(|v| v.status.as_ref()).is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Conflict" && c.status == "True")
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.reason == "Shadowed")
                })
            },
        )
        .await
        .unwrap();
        let conflict = shadowed
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Conflict")
            .unwrap();
        assert!(
            conflict.message.contains("triage-1-4-0 is served"),
            "{}",
            conflict.message
        );
    }
}

// ---- RBAC from evidence. ----

/// What the controller asked the API server for: (verb, group, resource, namespace, name).
type Used = (&'static str, String, String, Option<String>, Option<String>);

/// Every permission the controller needed while `scenario` ran, with leader election on and
/// managing `namespaces` (all when empty), against a fresh API server.
async fn permissions_used_by<F, Fut>(namespaces: &[&str], scenario: F) -> BTreeSet<Used>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let api = double().await;
    let controller = start_with(
        api.client("controller").unwrap(),
        "controller",
        Some(lease("controller")),
        namespaces.iter().map(|n| n.to_string()).collect(),
        None,
    );
    wait_for_lease_holder(&api, "controller").await;
    scenario(api.client("user").unwrap()).await;
    controller.stop().await.unwrap();
    // A repeated Event patches the first one's series: the same publisher, as the controller.
    let publisher = controller::events::EventPublisher::new(
        api.client("controller").unwrap(),
        "mcp-operator",
        "controller",
    );
    let regarding = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(API_VERSION.into()),
        kind: Some("MCPServer".into()),
        namespace: Some(namespaces.first().unwrap_or(&"tools").to_string()),
        name: Some("repeated".into()),
        uid: Some("1".into()),
        ..Default::default()
    };
    for _ in 0..2 {
        publisher
            .publish(
                &regarding,
                kube::runtime::events::EventType::Warning,
                "ToolQuarantined",
                "echo changed",
            )
            .await
            .unwrap();
    }
    api.permissions_checked()
        .into_iter()
        .filter(|p| p.client == "controller")
        .map(|p| (p.verb, p.group, p.resource, p.namespace, p.name))
        .collect()
}

/// One (verb, group, resource) a chart rule grants: cluster-wide (`None`) or in one namespace,
/// on any object or only the named ones.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    verb: String,
    group: String,
    resource: String,
    namespace: Option<String>,
    names: Vec<String>,
}

/// What the chart's ClusterRoles and Roles grant the operator's ServiceAccount.
fn grants_of(chart: &common::RenderedChart) -> Vec<Grant> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut grants = Vec::new();
    for binding in chart
        .of_kind("ClusterRoleBinding")
        .into_iter()
        .chain(chart.of_kind("RoleBinding"))
    {
        assert_eq!(
            binding["subjects"][0]["name"], "mcp-operator",
            "bound to the operator's ServiceAccount"
        );
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
        let namespace = binding["metadata"]["namespace"]
            .as_str()
            .map(str::to_string);
        let role = chart
            .of_kind(role_kind)
            .into_iter()
            .find(|r| {
                r["metadata"]["name"] == binding["roleRef"]["name"]
                    && r["metadata"]["namespace"].as_str() == namespace.as_deref()
            })
            .unwrap_or_else(|| panic!("{binding} binds a role the chart does not render"));
        for rule in role["rules"].as_array().unwrap() {
            for verb in strings(&rule["verbs"]) {
                for group in strings(&rule["apiGroups"]) {
                    for resource in strings(&rule["resources"]) {
                        assert!(
                            verb != "*" && group != "*" && resource != "*",
                            "no wildcards: {rule}"
                        );
                        grants.push(Grant {
                            verb: verb.clone(),
                            group: group.clone(),
                            resource,
                            namespace: namespace.clone(),
                            names: strings(&rule["resourceNames"]),
                        });
                    }
                }
            }
        }
    }
    grants
}

fn covers(grant: &Grant, used: &Used) -> bool {
    let (verb, group, resource, namespace, name) = used;
    grant.verb == *verb
        && grant.group == *group
        && grant.resource == *resource
        && (grant.namespace.is_none() || grant.namespace == *namespace)
        && (grant.names.is_empty() || name.as_ref().is_some_and(|n| grant.names.contains(n)))
}

/// Granted although no scenario uses it, and why.
const GRANTED_BEYOND_USE: [(&str, &str, &str, &str); 1] = [(
    "update",
    "mcp-operator.dev",
    "mcpservers/finalizers",
    "children carry ownerReferences with blockOwnerDeletion, which a real API server allows only \
     to a client that may update the owner's finalizers (OwnerReferencesPermissionEnforcement); \
     the double does not enforce it",
)];

/// Fails when the chart grants less than the controller used, or anything it did not use
/// (beyond GRANTED_BEYOND_USE).
fn assert_rbac_matches(chart: &common::RenderedChart, used: &BTreeSet<Used>) {
    let grants = grants_of(chart);
    let missing: Vec<&Used> = used
        .iter()
        .filter(|u| !grants.iter().any(|g| covers(g, u)))
        .collect();
    assert!(
        missing.is_empty(),
        "the chart does not grant what the controller used: {missing:#?}"
    );
    let unused: Vec<&Grant> = grants
        .iter()
        // The same rules go into every managed namespace's Role: a rule is used when it was
        // used in any namespace.
        .filter(|g| {
            !used
                .iter()
                .any(|u| g.verb == u.0 && g.group == u.1 && g.resource == u.2)
        })
        .filter(|g| {
            !GRANTED_BEYOND_USE.iter().any(|(verb, group, resource, _)| {
                g.verb == *verb && g.group == *group && g.resource == *resource
            })
        })
        .collect();
    assert!(
        unused.is_empty(),
        "the chart grants what the controller never used: {unused:#?}"
    );
}

/// The controller scenarios (every kind, every child, status, Events, the Lease), one API
/// server each, as the cluster-wide default install runs them.
#[tokio::test]
async fn the_charts_rbac_grants_exactly_what_the_controller_uses() {
    let mut used = BTreeSet::new();
    used.extend(
        permissions_used_by(&[], |c| scenario_create_update_delete(c, "tools", true)).await,
    );
    used.extend(permissions_used_by(&[], |c| scenario_drift_is_repaired(c, "tools")).await);
    used.extend(permissions_used_by(&[], |c| scenario_autoscaling_removed(c, "tools")).await);
    used.extend(
        permissions_used_by(&[], |c| {
            scenario_policy_and_prompt_changes(c, "prod-a", "dev-b")
        })
        .await,
    );
    used.extend(permissions_used_by(&[], |c| scenario_invalid_spec(c, "tools")).await);
    used.extend(permissions_used_by(&[], scenario_enforce_and_audit).await);
    used.extend(permissions_used_by(&[], scenario_prompt_versions).await);
    // The Lease namespace of the tests is the release namespace.
    let chart = common::render_chart(&json!({}), "mcp-operator", "mcp-operator").unwrap();
    assert_rbac_matches(&chart, &used);
    // The Lease is the only thing the controller touches in its own namespace.
    let in_own: Vec<&Used> = used
        .iter()
        .filter(|u| u.3.as_deref() == Some("mcp-operator"))
        .collect();
    assert!(in_own.iter().all(|u| u.2 == "leases"), "{in_own:?}");
}

/// A namespace-scoped install: Roles in the managed namespaces suffice.
#[tokio::test]
async fn a_namespace_scoped_installs_rbac_grants_exactly_what_the_controller_uses() {
    let mut used = BTreeSet::new();
    used.extend(
        permissions_used_by(&["tools"], |c| {
            scenario_create_update_delete(c, "tools", true)
        })
        .await,
    );
    used.extend(
        permissions_used_by(&["tools"], |c| scenario_autoscaling_removed(c, "tools")).await,
    );
    used.extend(permissions_used_by(&["prompts"], scenario_prompt_versions).await);
    used.extend(permissions_used_by(&["governed"], scenario_enforce_and_audit).await);
    let chart = common::render_chart(
        &json!({"scope": {"namespaces": ["tools", "prompts", "governed"]}}),
        "mcp-operator",
        "mcp-operator",
    )
    .unwrap();
    assert_rbac_matches(&chart, &used);
}

// ---- Argo CD health of the statuses the controller writes. ----

/// The object as Argo CD would read it, once `ready` holds for it.
async fn settled_object(
    api: &ApiServer,
    kind: &str,
    ns: &str,
    name: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    api.wait_until(what, WAIT, |s| {
        s.get(API_VERSION, kind, ns, name)
            .is_some_and(|o| ready(&o))
    })
    .await
    .unwrap();
    api.get(API_VERSION, kind, ns, name).unwrap()
}

fn phase_is(object: &Value, phase: &str) -> bool {
    object.pointer("/status/phase") == Some(&json!(phase))
        && object.pointer("/status/observedGeneration") == object.pointer("/metadata/generation")
}

fn ready_reason_is(object: &Value, reason: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["reason"] == reason)
        })
}

async fn create_server(servers: &Api<MCPServer>, name: &str, spec: Value) -> MCPServer {
    servers
        .create(&PostParams::default(), &mcp_server(name, spec))
        .await
        .unwrap()
}

#[tokio::test]
async fn argocd_health_checks_read_the_statuses_the_controller_writes() {
    let api = double().await;
    let controller = start(api.client("controller").unwrap(), "c", None);
    let client = api.client("user").unwrap();
    let ns = "argocd";
    let servers: Api<MCPServer> = Api::namespaced(client.clone(), ns);
    let health = |script: &str, object: &Value| common::argocd_health(script, object);

    // Not yet seen by the controller: Progressing.
    let created = create_server(&servers, "fresh", json!({"image": "example/s:1"})).await;
    assert_eq!(
        health("mcpserver.lua", &serde_json::to_value(&created).unwrap()).0,
        "Progressing"
    );

    // Rolled out: Healthy.
    let ready = settled_object(&api, "MCPServer", ns, "fresh", "fresh is Ready", |o| {
        phase_is(o, "Ready")
    })
    .await;
    let (status, message) = health("mcpserver.lua", &ready);
    assert_eq!(status, "Healthy", "{message}");
    assert!(message.starts_with("RolledOut"), "{message}");

    // A spec change the controller has not observed yet: Progressing again.
    let mut edited = ready.clone();
    edited["metadata"]["generation"] = json!(ready["metadata"]["generation"].as_i64().unwrap() + 1);
    let (status, message) = health("mcpserver.lua", &edited);
    assert_eq!(status, "Progressing");
    assert!(message.contains("generation"), "{message}");

    // Invalid for the controller (the server port is the gateway's): Degraded, saying why.
    create_server(
        &servers,
        "clash",
        json!({"image": "example/c:1", "port": 8443}),
    )
    .await;
    let invalid = settled_object(&api, "MCPServer", ns, "clash", "clash is Invalid", |o| {
        phase_is(o, "Invalid")
    })
    .await;
    let (status, message) = health("mcpserver.lua", &invalid);
    assert_eq!(status, "Degraded");
    assert!(message.contains("8443"), "{message}");

    // Scaled to zero on purpose: Suspended.
    create_server(
        &servers,
        "idle",
        json!({"image": "example/s:1", "replicas": 0}),
    )
    .await;
    let idle = settled_object(&api, "MCPServer", ns, "idle", "idle is observed", |o| {
        o.pointer("/status/observedGeneration") == o.pointer("/metadata/generation")
            && o.pointer("/status/phase").is_some()
    })
    .await;
    assert_eq!(health("mcpserver.lua", &idle).0, "Suspended");

    // A managed prompt that resolves to nothing: the server runs, but Degraded says what is missing.
    create_server(
        &servers,
        "unprompted",
        json!({"image": "example/s:1", "prompts": [{"name": "missing", "version": "^1"}]}),
    )
    .await;
    let unresolved = settled_object(
        &api,
        "MCPServer",
        ns,
        "unprompted",
        "unprompted is Ready",
        |o| phase_is(o, "Ready"),
    )
    .await;
    let (status, message) = health("mcpserver.lua", &unresolved);
    assert_eq!(status, "Degraded");
    assert!(message.contains("missing"), "{message}");

    // Blocked by an enforced policy: Degraded; the policy itself is Healthy once applied.
    let policies: Api<MCPPolicy> = Api::all(client.clone());
    let policy: MCPPolicy = serde_json::from_value(json!({"apiVersion": API_VERSION, "kind": "MCPPolicy",
        "metadata": {"name": "digests"},
        "spec": {"enforcement": "Enforce", "workload": {"requireDigest": true},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "argocd-enforced"}}}}))
    .unwrap();
    let created_policy = policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    assert_eq!(
        health(
            "mcppolicy.lua",
            &serde_json::to_value(&created_policy).unwrap()
        )
        .0,
        "Progressing"
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let enforced = "argocd-enforced";
    namespaces
        .patch(
            enforced,
            &PatchParams::apply("test").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": enforced, "labels": {"kubernetes.io/metadata.name": enforced}}})),
        )
        .await
        .unwrap();
    create_server(
        &Api::<MCPServer>::namespaced(client.clone(), enforced),
        "tagged",
        json!({"image": "example/b:1"}),
    )
    .await;
    let blocked = settled_object(
        &api,
        "MCPServer",
        enforced,
        "tagged",
        "tagged is Blocked",
        |o| phase_is(o, "Blocked"),
    )
    .await;
    let (status, message) = health("mcpserver.lua", &blocked);
    assert_eq!(status, "Degraded");
    assert!(message.contains("MCP-SUPPLY-001"), "{message}");
    let applied = api
        .wait_until("the policy is applied", WAIT, |s| {
            s.get(API_VERSION, "MCPPolicy", "", "digests")
                .is_some_and(|p| {
                    ready_reason_is(&p, "Applied")
                        && p.pointer("/status/matchedServers") == Some(&json!(1))
                })
        })
        .await
        .map(|()| api.get(API_VERSION, "MCPPolicy", "", "digests").unwrap())
        .unwrap();
    let (status, message) = health("mcppolicy.lua", &applied);
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("Healthy", "0 of 1 selected servers compliant")
    );

    // Prompt versions: published, retired, shadowed by a duplicate.
    let versions: Api<MCPPromptVersion> = Api::namespaced(client.clone(), ns);
    versions
        .create(
            &PostParams::default(),
            &prompt_version("triage-1-0-0", "1.0.0", "v1"),
        )
        .await
        .unwrap();
    let published = settled_object(
        &api,
        "MCPPromptVersion",
        ns,
        "triage-1-0-0",
        "1.0.0 is published",
        |o| ready_reason_is(o, "Published"),
    )
    .await;
    assert_eq!(health("mcppromptversion.lua", &published).0, "Healthy");
    versions
        .create(
            &PostParams::default(),
            &prompt_version("triage-1-0-0-copy", "1.0.0", "v1 again"),
        )
        .await
        .unwrap();
    let shadowed = settled_object(
        &api,
        "MCPPromptVersion",
        ns,
        "triage-1-0-0-copy",
        "the copy is shadowed",
        |o| ready_reason_is(o, "Shadowed"),
    )
    .await;
    let (status, message) = health("mcppromptversion.lua", &shadowed);
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("Shadowed"), "{message}");
    versions
        .patch(
            "triage-1-0-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"lifecycle": "Retired"}})),
        )
        .await
        .unwrap();
    let retired = settled_object(
        &api,
        "MCPPromptVersion",
        ns,
        "triage-1-0-0",
        "1.0.0 is retired",
        |o| ready_reason_is(o, "Retired"),
    )
    .await;
    assert_eq!(health("mcppromptversion.lua", &retired).0, "Suspended");
    controller.stop().await.unwrap();
}
