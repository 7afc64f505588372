//! The controller: kube-runtime's `Controller` over MCPServers, with the policies, prompt
//! versions, namespaces and children it depends on watched and mapped to the servers they
//! affect. Writes happen only while this replica holds the leader lease.

pub mod children;
pub mod context;
pub mod events;
pub mod index;
pub mod inventory;
pub mod leader;
pub mod metrics;
pub mod policy_status;
pub mod prompt_status;
pub mod reconcile;
pub mod status;
pub mod webhook;

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt, future};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::PredicateConfig;
use kube::runtime::controller::{Action, Config as ControllerRuntimeConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, CustomResourceExt, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use crate::api::{MCPPolicy, MCPPromptVersion, MCPServer};
use crate::builders::labels::{LABEL_MANAGED_BY, MANAGER};
use crate::builders::{BuildContext, BuildError};

use self::children::ChildKind;
use self::context::{Backoff, Context, Stores};
use self::index::{ChildIndex, ObservedChild};
use self::leader::{LeaderElector, LeaseConfig, LeaseError};
use self::metrics::Metrics;

/// Why one reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the spec is invalid: {0}")]
    InvalidSpec(String),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("applying {kind} {name:?} failed: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Bounded metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Build(_) => "build",
            Error::Apply { .. } => "api",
            Error::Internal(_) => "internal",
        }
    }
}

/// Why the controller stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot reach the Kubernetes API server: {0}")]
    Unreachable(String),
    #[error(
        "CustomResourceDefinition {name} is not installed: apply the files in crds/ first (kubectl apply --server-side -f crds/)"
    )]
    CrdMissing { name: String },
    #[error("CustomResourceDefinition {name} is not Established after {waited:?}")]
    CrdNotEstablished { name: String, waited: Duration },
    #[error("reading CustomResourceDefinition {name} failed: {source}")]
    CrdRead {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("cannot serve health and metrics on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How to run the controller.
#[derive(Clone)]
pub struct ControllerConfig {
    pub client: Client,
    /// Namespaces to manage; empty means all.
    pub namespaces: Vec<String>,
    /// Label selector limiting the MCPServers managed (for sharding).
    pub server_selector: Option<String>,
    pub build: BuildContext,
    /// Leader election; `None` runs without (a single replica).
    pub lease: Option<LeaseConfig>,
    /// Where to serve `/healthz`, `/readyz` and `/metrics`.
    pub metrics_addr: Option<SocketAddr>,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// How long to wait for the CRDs to become Established.
    pub crd_wait: Duration,
    /// Identity in Events (`reportingInstance`).
    pub instance: String,
    pub clock: fn() -> Time,
    pub metrics: Metrics,
    /// Reading the gateways' live tool inventories; `None` reads none (no tool status).
    pub inventory: Option<inventory::InventorySettings>,
}

/// The wall clock.
pub fn system_clock() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Run until `shutdown` resolves (graceful) or leadership is lost (an error).
pub async fn run(
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    let metrics = config.metrics.clone();
    let ready = Arc::new(AtomicBool::new(false));
    let server_counts: Arc<std::sync::Mutex<Vec<Store<GuardedServer>>>> = Arc::default();
    if let Some(addr) = config.metrics_addr {
        serve_health(addr, metrics.clone(), ready.clone(), server_counts.clone()).await?;
    }
    check_reachable(&config.client).await?;
    wait_for_crds(&config.client, config.crd_wait).await?;

    let shutdown =
        (Box::pin(shutdown) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>).shared();
    let elector = config
        .lease
        .clone()
        .map(|lease| LeaderElector::new(config.client.clone(), lease));
    if let Some(elector) = &elector {
        // A follower is healthy and ready: it only waits.
        ready.store(true, Ordering::SeqCst);
        tokio::select! {
            () = elector.acquire() => tracing::info!("acquired the leader lease"),
            () = shutdown.clone() => return Ok(()),
        }
        metrics.leader.set(1);
    }

    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let policy_status_wake = Arc::new(tokio::sync::Notify::new());
    let (caches_ready, caches_ready_rx) = tokio::sync::watch::channel(0usize);
    let caches_ready = Arc::new(caches_ready);
    let mut scope_stores: Vec<Stores> = Vec::new();
    let runs: Vec<_> = scopes
        .into_iter()
        .map(|scope| {
            let (controller, stores) = scope_controller(
                &config,
                scope,
                metrics.clone(),
                shutdown.clone(),
                policy_status_wake.clone(),
                caches_ready.clone(),
            );
            if let Ok(mut counted) = server_counts.lock() {
                counted.push(stores.servers.clone());
            }
            scope_stores.push(stores);
            controller
        })
        .collect();
    // Policies are cluster-wide: every scope caches them all; the first scope's cache serves.
    let policy_statuses = scope_stores.first().map(|first| {
        tokio::spawn(policy_status::keep_aggregate_statuses(
            policy_status::AggregateSources {
                client: config.client.clone(),
                policies: first.policies.clone(),
                prompt_versions: scope_stores
                    .iter()
                    .map(|s| s.prompt_versions.clone())
                    .collect(),
                servers: scope_stores.iter().map(|s| s.servers.clone()).collect(),
                namespaces: first.namespaces.clone(),
                clock: config.clock,
                caches_ready: caches_ready_rx,
            },
            policy_status_wake,
        ))
    });
    let all = future::join_all(runs);
    ready.store(true, Ordering::SeqCst);
    let result = match &elector {
        Some(elector) => tokio::select! {
            _ = all => Ok(()),
            lost = elector.hold() => Err(ControllerError::Lease(lost)),
        },
        None => {
            all.await;
            Ok(())
        }
    };
    if let Some(task) = policy_statuses {
        task.abort();
    }
    metrics.leader.set(0);
    if let (Some(elector), Ok(())) = (&elector, &result) {
        elector.release().await;
    }
    result
}

fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Objects per page of the initial lists: smaller pages keep the start-up peak of memory low
/// at a few more requests.
const LIST_PAGE_SIZE: u32 = 100;

/// Annotation `kubectl apply` (client-side) stores a whole copy of the object in.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drop what the controller never reads before caching: `managedFields` and kubectl's copy of
/// the last applied object.
fn strip_managed_fields<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// An MCPServer as cached: one that does not deserialize is kept as an error, so it cannot stop
/// the watch that feeds every other server.
pub type GuardedServer = DeserializeGuard<MCPServer>;

/// What of an MCPServer triggers a reconcile: its spec (generation), labels (policy selection),
/// deletion. Status writes, including the controller's own, do not.
fn server_trigger(server: &GuardedServer) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    server.meta().generation.hash(&mut hasher);
    server.meta().labels.hash(&mut hasher);
    server.meta().deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// A tick every `period`, the first one `period` from now.
fn periodic(period: Duration) -> impl futures::Stream<Item = ()> + Send {
    let start = tokio::time::Instant::now() + period;
    futures::stream::unfold(
        tokio::time::interval_at(start, period),
        |mut interval| async move {
            interval.tick().await;
            Some(((), interval))
        },
    )
}

/// Watch events reduced to the objects whose spec changed (a new generation) or that were
/// deleted: a status write (this controller writes the policies' and prompt versions' status)
/// does not wake the servers they affect.
trait SpecChanges<K>: Sized {
    fn spec_changes(self) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send;
}

impl<K, S> SpecChanges<K> for S
where
    K: Resource + Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    fn spec_changes(self) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send {
        let mut generations: std::collections::HashMap<
            (Option<String>, Option<String>),
            Option<i64>,
        > = std::collections::HashMap::new();
        self.flat_map(move |event| {
            let key = |o: &K| (o.meta().namespace.clone(), o.meta().name.clone());
            let changed: Vec<Result<K, watcher::Error>> = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    let generation = o.meta().generation;
                    if generations.insert(key(&o), generation) == Some(generation) {
                        Vec::new()
                    } else {
                        vec![Ok(o)]
                    }
                }
                Ok(watcher::Event::Delete(o)) => {
                    generations.remove(&key(&o));
                    vec![Ok(o)]
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => Vec::new(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(changed)
        })
    }
}

/// Drive a watcher into a cache in its own task, so caches keep up whatever the controller's
/// pace, and send the servers each change affects to `triggers`.
fn drive<K, S>(
    stream: S,
    triggers: mpsc::UnboundedSender<ObjectRef<GuardedServer>>,
    affected: impl Fn(&K) -> Vec<ObjectRef<GuardedServer>> + Send + 'static,
) -> JoinHandle<()>
where
    K: Send + 'static,
    S: futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(object) => {
                    for server in affected(&object) {
                        // The controller has stopped when nobody receives: nothing to do.
                        let _ = triggers.unbounded_send(server);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watch failed; retrying with backoff"),
            }
        }
    })
}

/// Keep the compact index of one child kind from a raw watch, and send the controlling server
/// of every change to `triggers` (after the first list: at start every server is reconciled).
fn drive_index<K, S>(
    stream: S,
    indexes: Arc<[ChildIndex; 7]>,
    kind: ChildKind,
    triggers: mpsc::UnboundedSender<ObjectRef<GuardedServer>>,
    observe: fn(&K) -> ObservedChild,
) -> JoinHandle<()>
where
    K: Resource + Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let index = &indexes[kind as usize];
        let key = |o: &K| {
            index::child_key(
                o.meta().namespace.as_deref().unwrap_or_default(),
                o.meta().name.as_deref().unwrap_or_default(),
            )
        };
        let notify = |o: &K| {
            for server in controlling_server(o) {
                let _ = triggers.unbounded_send(server);
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => index.begin_relist(),
                Ok(watcher::Event::InitApply(o)) => {
                    let was_ready = index.is_ready();
                    if index.relisted(key(&o), observe(&o)) && was_ready {
                        notify(&o);
                    }
                }
                Ok(watcher::Event::InitDone) => index.finish_relist(),
                Ok(watcher::Event::Apply(o)) => {
                    index.upsert(key(&o), observe(&o));
                    notify(&o);
                }
                Ok(watcher::Event::Delete(o)) => {
                    index.remove(key(&o));
                    notify(&o);
                }
                Err(e) => {
                    tracing::warn!(kind = kind.as_str(), error = %e, "watch failed; retrying with backoff")
                }
            }
        }
    })
}

/// The server that controls a child, from its owner references.
fn controlling_server<K: Resource>(child: &K) -> Vec<ObjectRef<GuardedServer>> {
    let meta = child.meta();
    meta.owner_references
        .iter()
        .flatten()
        .filter(|r| {
            r.controller == Some(true)
                && r.kind == "MCPServer"
                && r.api_version == MCPServer::api_version(&())
        })
        .filter_map(|r| Some(ObjectRef::new(&r.name).within(meta.namespace.as_deref()?)))
        .collect()
}

/// Build one scope's controller (a namespace, or the whole cluster) and its server cache.
fn scope_controller(
    config: &ControllerConfig,
    scope: Option<String>,
    metrics: Metrics,
    shutdown: future::Shared<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
    policy_status_wake: Arc<tokio::sync::Notify>,
    caches_ready: Arc<tokio::sync::watch::Sender<usize>>,
) -> (impl Future<Output = ()>, Stores) {
    let client = config.client.clone();
    let mut server_config = watcher::Config::default()
        .any_semantic()
        .page_size(LIST_PAGE_SIZE);
    if let Some(selector) = &config.server_selector {
        server_config = server_config.labels(selector);
    }
    let children_config = watcher::Config::default()
        .labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"))
        .any_semantic()
        .page_size(LIST_PAGE_SIZE);
    let (triggers, trigger_stream) = mpsc::unbounded::<ObjectRef<GuardedServer>>();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();

    let status_memory: Arc<context::StatusMemory> = Arc::default();
    let seen_statuses = status_memory.clone();
    let (servers, servers_writer) = reflector::store();
    let server_stream = watcher(scoped::<GuardedServer>(&client, &scope), server_config)
        .default_backoff()
        .modify(strip_managed_fields)
        .reflect(servers_writer)
        .inspect({
            // The first full list of servers is in the cache (counted once per scope).
            let caches_ready = caches_ready.clone();
            let listed = AtomicBool::new(false);
            move |event| {
                if matches!(event, Ok(watcher::Event::InitDone))
                    && !listed.swap(true, Ordering::SeqCst)
                {
                    caches_ready.send_modify(|ready| *ready += 1);
                }
            }
        })
        .applied_objects()
        .inspect(move |server| {
            if let Ok(server) = server {
                seen_statuses.seen(
                    &ObjectRef::from_obj(server),
                    server.meta().resource_version.as_deref(),
                );
            }
        })
        .predicate_filter(server_trigger, PredicateConfig::default());

    let (namespaces, namespaces_writer) = reflector::store();
    let namespace_servers = servers.clone();
    tasks.push(drive(
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .modify(strip_managed_fields)
        .reflect(namespaces_writer)
        .touched_objects()
        .predicate_filter(
            |n: &PartialObjectMeta<Namespace>| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                n.metadata.labels.hash(&mut hasher);
                Some(hasher.finish())
            },
            PredicateConfig::default(),
        ),
        triggers.clone(),
        move |n: &PartialObjectMeta<Namespace>| {
            servers_in_namespace(&n.name_any(), &namespace_servers)
        },
    ));

    let (policies, policies_writer) = reflector::store();
    let (policy_servers, policy_namespaces) = (servers.clone(), namespaces.clone());
    let policy_changed = policy_status_wake.clone();
    tasks.push(drive(
        watcher(
            Api::<MCPPolicy>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .modify(strip_managed_fields)
        .reflect(policies_writer)
        .spec_changes(),
        triggers.clone(),
        move |p: &MCPPolicy| {
            policy_changed.notify_one();
            servers_affected_by_policy(p, &policy_servers, &policy_namespaces)
        },
    ));

    let (prompt_versions, prompts_writer) = reflector::store();
    let prompt_servers = servers.clone();
    let prompt_changed = policy_status_wake.clone();
    tasks.push(drive(
        watcher(
            scoped::<MCPPromptVersion>(&client, &scope),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .modify(strip_managed_fields)
        .reflect(prompts_writer)
        .spec_changes(),
        triggers.clone(),
        move |v: &MCPPromptVersion| {
            prompt_changed.notify_one();
            servers_using_prompt(v, &prompt_servers)
        },
    ));

    // Children: compact indexes (what the apply decision needs), filled by their own tasks.
    let children: Arc<[ChildIndex; 7]> = Arc::new(Default::default());
    tasks.push(drive_index(
        watcher(
            scoped::<Deployment>(&client, &scope),
            children_config.clone(),
        )
        .default_backoff(),
        children.clone(),
        ChildKind::Deployment,
        triggers.clone(),
        |d: &Deployment| {
            ObservedChild::from_meta(&d.metadata, Some(reconcile::rollout_from_deployment(d)))
        },
    ));
    macro_rules! child_meta {
        ($kind:ty, $child_kind:expr) => {
            tasks.push(drive_index(
                watcher(
                    scoped::<PartialObjectMeta<$kind>>(&client, &scope),
                    children_config.clone(),
                )
                .default_backoff(),
                children.clone(),
                $child_kind,
                triggers.clone(),
                |m: &PartialObjectMeta<$kind>| ObservedChild::from_meta(&m.metadata, None),
            ))
        };
    }
    child_meta!(ServiceAccount, ChildKind::ServiceAccount);
    child_meta!(ConfigMap, ChildKind::ConfigMap);
    child_meta!(Service, ChildKind::Service);
    child_meta!(NetworkPolicy, ChildKind::NetworkPolicy);
    child_meta!(HorizontalPodAutoscaler, ChildKind::HorizontalPodAutoscaler);
    child_meta!(PodDisruptionBudget, ChildKind::PodDisruptionBudget);
    let stores = Stores {
        servers: servers.clone(),
        policies,
        prompt_versions,
        namespaces,
        children,
    };
    let inventories = config
        .inventory
        .clone()
        .map(|settings| Arc::new(inventory::InventoryReader::new(settings)));
    if let Some(reader) = &inventories {
        let children = stores.children.clone();
        tasks.push(tokio::spawn(reader.clone().run(
            servers.clone(),
            move |namespace, name| {
                children[ChildKind::Deployment as usize]
                    .get(namespace, name)?
                    .rollout
            },
            triggers.clone(),
        )));
    }
    drop(triggers);
    let context = Arc::new(Context {
        client: client.clone(),
        build: config.build.clone(),
        stores: stores.clone(),
        events: events::EventPublisher::new(client.clone(), MANAGER, &config.instance),
        metrics,
        backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(300)),
        baselines: Default::default(),
        status_memory,
        clock: config.clock,
        inventories,
        policy_status_wake,
    });

    let concurrency = config.concurrency;
    let server_store = servers.clone();
    let scope_stores = stores.clone();
    let run = async move {
        // Reconcile only once every cache is loaded: a child merely not loaded yet must never
        // look missing. The caches fill on their own tasks, whatever the controller does.
        tokio::select! {
            () = stores.ready_except_servers() => caches_ready.send_modify(|ready| *ready += 1),
            () = shutdown.clone() => {
                tasks.iter().for_each(JoinHandle::abort);
                return;
            }
        }
        Controller::for_stream(server_stream, server_store)
            .with_config(ControllerRuntimeConfig::default().concurrency(concurrency))
            .reconcile_on(trigger_stream)
            .reconcile_all_on(periodic(reconcile::RESYNC_PERIOD))
            .graceful_shutdown_on(shutdown)
            .run(reconcile::reconcile, error_policy, context)
            .for_each(|result| {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "reconcile round ended with an error");
                }
                future::ready(())
            })
            .await;
        tasks.iter().for_each(JoinHandle::abort);
    };
    (run, scope_stores)
}

/// Invalid specs wait for a change; everything else retries with per-object exponential backoff.
fn error_policy(server: Arc<GuardedServer>, error: &Error, ctx: Arc<Context>) -> Action {
    match error {
        Error::InvalidSpec(_) => Action::await_change(),
        _ => {
            let delay = ctx.backoff.next(&ObjectRef::from_obj(server.as_ref()));
            tracing::warn!(server = %server.name_any(), error = %error, ?delay, "reconcile failed; retrying");
            Action::requeue(delay)
        }
    }
}

/// Servers a policy selects now, or selected when their status was last written.
pub fn servers_affected_by_policy(
    policy: &MCPPolicy,
    servers: &Store<GuardedServer>,
    namespaces: &Store<PartialObjectMeta<Namespace>>,
) -> Vec<ObjectRef<GuardedServer>> {
    let name = policy.name_any();
    valid_servers(servers)
        .filter(|g| {
            let Some(s) = server_of(g) else { return false };
            let ns = s.namespace().unwrap_or_default();
            let mut labels = namespaces
                .get(&ObjectRef::new(&ns))
                .and_then(|n| n.metadata.labels.clone())
                .unwrap_or_default();
            labels.insert("kubernetes.io/metadata.name".into(), ns);
            policy.selects(&labels, s.labels())
                || s.status
                    .as_ref()
                    .is_some_and(|st| st.policies.iter().any(|p| p.name == name))
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// Servers in the prompt version's namespace that reference its prompt.
pub fn servers_using_prompt(
    version: &MCPPromptVersion,
    servers: &Store<GuardedServer>,
) -> Vec<ObjectRef<GuardedServer>> {
    let namespace = version.namespace();
    valid_servers(servers)
        .filter(|g| {
            server_of(g).is_some_and(|s| {
                s.namespace() == namespace
                    && s.spec.prompts.iter().any(|p| p.name == version.spec.prompt)
            })
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

fn servers_in_namespace(
    namespace: &str,
    servers: &Store<GuardedServer>,
) -> Vec<ObjectRef<GuardedServer>> {
    servers
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The servers of a cache that deserialized.
fn valid_servers(servers: &Store<GuardedServer>) -> impl Iterator<Item = Arc<GuardedServer>> {
    servers.state().into_iter().filter(|g| g.0.is_ok())
}

/// The server inside a cache entry [`valid_servers`] returned.
fn server_of(guarded: &GuardedServer) -> Option<&MCPServer> {
    guarded.0.as_ref().ok()
}

async fn check_reachable(client: &Client) -> Result<(), ControllerError> {
    match tokio::time::timeout(Duration::from_secs(8), client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ControllerError::Unreachable(e.to_string())),
        Err(_) => Err(ControllerError::Unreachable("no answer within 8s".into())),
    }
}

/// Wait until every CRD of ours is Established; a missing one is an error at once.
async fn wait_for_crds(client: &Client, wait: Duration) -> Result<(), ControllerError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + wait;
    for name in [
        MCPServer::crd_name(),
        MCPPolicy::crd_name(),
        MCPPromptVersion::crd_name(),
    ] {
        loop {
            let crd = api
                .get_opt(name)
                .await
                .map_err(|source| ControllerError::CrdRead {
                    name: name.into(),
                    source,
                })?;
            let Some(crd) = crd else {
                return Err(ControllerError::CrdMissing { name: name.into() });
            };
            let established = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ControllerError::CrdNotEstablished {
                    name: name.into(),
                    waited: wait,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

async fn serve_health(
    addr: SocketAddr,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    servers: Arc<std::sync::Mutex<Vec<Store<GuardedServer>>>>,
) -> Result<(), ControllerError> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ControllerError::Listen { addr, source })?;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::SeqCst);
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let cached: Vec<_> = servers
                    .lock()
                    .map(|s| s.iter().flat_map(|store| store.state()).collect())
                    .unwrap_or_default();
                let managed = cached.len();
                metrics.set_findings(
                    cached
                        .iter()
                        .filter_map(|g| g.0.as_ref().ok())
                        .filter_map(|s| s.status.as_ref())
                        .flat_map(|s| s.findings.iter()),
                );
                metrics
                    .managed_servers
                    .set(i64::try_from(managed).unwrap_or(i64::MAX));
                let text = metrics.encode();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the health and metrics endpoint stopped");
        }
    });
    Ok(())
}
