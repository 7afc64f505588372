//! An in-process Kubernetes API server for tests and benchmarks.
//!
//! It speaks the real REST API over HTTP on 127.0.0.1, so the unmodified `kube::Client` and
//! `kube::runtime::Controller` run against it: get, list (label and field selectors, `limit` and
//! `continue`), watch (replay from a resourceVersion, 410 Gone inside the stream for a compacted
//! one, bookmarks when asked), create, update, delete, patch (server-side apply, JSON merge
//! patch, JSON patch), the `status` and `scale` subresources (spec changes bump
//! `metadata.generation`, status writes do not), `resourceVersion` preconditions (409),
//! finalizers and `deletionTimestamp`, garbage collection through owner references, and
//! validation of custom resources against their CRD's schema and CEL rules (including
//! transition rules) on every write. CustomResourceDefinitions are served once created, and
//! become Established at once. Faults can be injected (error rate by verb with chosen status
//! codes, latency, cut watch streams) and requests are counted by client (bearer token), verb
//! and resource.
//!
//! What it does not reproduce (tests must not rely on these):
//! - server-side apply is merge semantics: maps merge key by key, lists are replaced whole
//!   (no list-map merge keys), a manager's dropped fields are removed; conflicts are detected
//!   only between managers' applied values, and `managedFields` is a rough mirror;
//! - built-in objects are not defaulted (a Deployment is stored as sent, but for its pod
//!   template's quantities, which are stored in canonical form like the API server's), and not
//!   validated beyond JSON shape; custom resources are defaulted from their CRD schema
//!   (`default`, non-nullable nulls dropped) as the API server does, and their unknown fields
//!   are refused (strict field validation) rather than pruned;
//! - garbage collection is synchronous and always background-cascading; `propagationPolicy`
//!   and orphaning are ignored, and dependents with finalizers are left in place;
//! - namespaces need not exist, there is no admission chain, no RBAC, no authentication (the
//!   bearer token only names the client in request counts), no aggregated discovery;
//! - a watch with a label selector does not send DELETED when an object stops matching;
//! - list results are not a consistent snapshot across pages; `resourceVersionMatch` and
//!   streaming lists (`sendInitialEvents`) are not supported;
//! - timestamps come from a fixed clock that advances one second per write;
//! - nothing runs pods: [`ApiServer::spawn_deployment_controller`] plays the Deployment
//!   controller's part by marking Deployments rolled out.

mod faults;
mod http;
mod registry;
mod selector;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::CustomResourceExt;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

pub use self::faults::Faults;
pub use self::http::{Permission, RequestKey};
pub use self::store::{ApiError, Event, EventKind};

use self::http::Shared;
use self::store::{PatchKind, Store};
use crate::api::{MCPPolicy, MCPPromptVersion, MCPServer};

/// Options of a test API server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Events kept for watches to resume from; older resource versions get 410 Gone.
    pub history_limit: usize,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            history_limit: 200_000,
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

/// A running test API server. Stops when dropped.
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
    helpers: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.server.abort();
        for helper in self
            .helpers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            helper.abort();
        }
    }
}

/// Why waiting for a condition ended without it.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {0:?} waiting for: {1}")]
pub struct WaitTimeout(pub Duration, pub String);

/// Request counts by client, verb and resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts(pub BTreeMap<RequestKey, u64>);

/// Verbs that change state.
pub const WRITE_VERBS: [&str; 4] = ["create", "update", "patch", "delete"];

impl RequestCounts {
    /// Requests matching `client` (any when `None`) and `verb`.
    pub fn count(&self, client: Option<&str>, verb: &str) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.verb == verb && client.is_none_or(|c| c == k.client))
            .map(|(_, n)| n)
            .sum()
    }

    /// Write requests of `client` (any when `None`).
    pub fn writes(&self, client: Option<&str>) -> u64 {
        WRITE_VERBS.iter().map(|v| self.count(client, v)).sum()
    }

    /// Requests of `client` by verb.
    pub fn by_verb(&self, client: Option<&str>) -> BTreeMap<&'static str, u64> {
        let mut by_verb = BTreeMap::new();
        for (k, n) in &self.0 {
            if client.is_none_or(|c| c == k.client) {
                *by_verb.entry(k.verb).or_default() += n;
            }
        }
        by_verb
    }

    /// Write requests of `client` by resource.
    pub fn writes_by_resource(&self, client: Option<&str>) -> BTreeMap<String, u64> {
        let mut by_resource = BTreeMap::new();
        for (k, n) in &self.0 {
            if WRITE_VERBS.contains(&k.verb) && client.is_none_or(|c| c == k.client) {
                *by_resource
                    .entry(format!("{} {}", k.verb, k.resource))
                    .or_default() += n;
            }
        }
        by_resource
    }
}

impl ApiServer {
    /// Start on 127.0.0.1 with a port from the OS.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(options.history_limit)),
            counts: Mutex::new(BTreeMap::new()),
            authorized: Mutex::new(BTreeSet::new()),
            faults: Mutex::new(Faults::default()),
            bookmark_interval: options.bookmark_interval,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            // Serving ends only when the task is aborted; an accept error ends the test server.
            let _ = axum::serve(listener, app).await;
        });
        Ok(ApiServer {
            addr,
            shared,
            server,
            helpers: Mutex::new(Vec::new()),
        })
    }

    /// Every permission an RBAC authorizer would have checked so far (see the module's notes:
    /// the double itself authorizes nothing).
    pub fn permissions_checked(&self) -> BTreeSet<Permission> {
        self.shared
            .authorized
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client that identifies itself as `identity` in the request counts.
    pub fn client(&self, identity: &str) -> Result<kube::Client, kube::Error> {
        kube::Client::try_from(self.config(identity))
    }

    /// Client configuration for `identity`.
    pub fn config(&self, identity: &str) -> kube::Config {
        let mut config = kube::Config::new(self.url().parse().unwrap_or_default());
        config.auth_info.token = Some(identity.to_string().into());
        config.default_namespace = "default".into();
        config
    }

    /// A kubeconfig file's content pointing at this server, for a controller in another process.
    pub fn kubeconfig(&self, identity: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: {identity}\ncurrent-context: test\nusers:\n- name: {identity}\n  user:\n    token: {identity}\n",
            self.url()
        )
    }

    /// Replace the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    pub fn counts(&self) -> RequestCounts {
        RequestCounts(
            self.shared
                .counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    pub fn reset_counts(&self) {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Drop the watch history, so watches from older resource versions get 410 Gone.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Register the operator's validating admission webhook for its three kinds, as the
    /// chart's ValidatingWebhookConfiguration does: the double hands it each AdmissionReview
    /// in process (the HTTPS transport is tested on its own).
    pub fn install_admission_webhook(&self) {
        self.shared.store().add_webhook(store::Webhook {
            kinds: vec![
                "MCPServer".into(),
                "MCPPolicy".into(),
                "MCPPromptVersion".into(),
            ],
            review: Box::new(|body| crate::validation::admission::review(body).ok()),
        });
    }

    /// Create our three CRDs (uncounted, as an installer would have done).
    pub fn install_crds(&self) -> Result<(), ApiError> {
        for crd in [MCPServer::crd(), MCPPolicy::crd(), MCPPromptVersion::crd()] {
            let value =
                serde_json::to_value(crd).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            self.create(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "",
                value,
            )?;
        }
        Ok(())
    }

    fn resource_type(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Arc<registry::ResourceType>, ApiError> {
        self.shared
            .store()
            .registry
            .by_kind(api_version, kind)
            .ok_or_else(|| ApiError::NotFound(format!("{api_version} {kind} is not served")))
    }

    /// Create an object directly (uncounted).
    pub fn create(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        let rt = self.resource_type(api_version, kind)?;
        self.shared.store().create(&rt, namespace, object)
    }

    /// Store an object without validating it (uncounted): one stored before a schema change.
    pub fn insert_unchecked(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        let rt = self.resource_type(api_version, kind)?;
        self.shared
            .store()
            .create_unvalidated(&rt, namespace, object)
    }

    /// Read an object directly (uncounted).
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let rt = self.resource_type(api_version, kind).ok()?;
        self.shared.store().get(&rt, namespace, name).ok()
    }

    /// Merge-patch an object directly (uncounted), as another client would.
    pub fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, ApiError> {
        let rt = self.resource_type(api_version, kind)?;
        self.shared.store().patch(
            &rt,
            namespace,
            name,
            PatchKind::Merge,
            patch,
            "test",
            store::Part::Main,
        )
    }

    /// Delete an object directly (uncounted).
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let rt = self.resource_type(api_version, kind)?;
        self.shared.store().delete(&rt, namespace, name, None)
    }

    /// Number of stored objects of a kind.
    pub fn count_of(&self, api_version: &str, kind: &str) -> usize {
        self.resource_type(api_version, kind)
            .map(|rt| self.shared.store().count(&rt))
            .unwrap_or(0)
    }

    /// Every stored object of a kind.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Ok(rt) = self.resource_type(api_version, kind) else {
            return Vec::new();
        };
        let all = |_: &Value| true;
        self.shared.store().list(&rt, None, &all, None, None).0
    }

    /// Every change from now on, as watches see them (for benchmarks tracking progress).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Arc<Event>> {
        self.shared.store().subscribe_all()
    }

    /// Wait until `condition` holds, re-checking after every change; never polls on a timer.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&ApiServer) -> bool,
    ) -> Result<(), WaitTimeout> {
        let mut changes = self.shared.store().subscribe_all();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(self) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Err(_) => return Err(WaitTimeout(timeout, what.to_string())),
                Ok(Err(RecvError::Lagged(_))) | Ok(Ok(_)) => {}
                Ok(Err(RecvError::Closed)) => {
                    return Err(WaitTimeout(timeout, format!("{what} (server stopped)")));
                }
            }
        }
    }

    /// Play the Deployment controller: every Deployment whose status lags its generation is
    /// marked rolled out with all replicas ready. Writes are uncounted.
    pub fn spawn_deployment_controller(&self) {
        let shared = self.shared.clone();
        let Ok(rt) = self.resource_type("apps/v1", "Deployment") else {
            return;
        };
        let task = tokio::spawn(async move {
            let mut changes = shared.store().subscribe_all();
            // Deployments that existed before we started.
            let existing = {
                let all = |_: &Value| true;
                shared.store().list(&rt, None, &all, None, None).0
            };
            for d in existing {
                mark_rolled_out(&shared, &rt, &d);
            }
            loop {
                match changes.recv().await {
                    Ok(event) if event.resource == rt.id() && event.kind != EventKind::Deleted => {
                        mark_rolled_out(&shared, &rt, &event.object)
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
        self.helpers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }
}

fn mark_rolled_out(shared: &Shared, rt: &Arc<registry::ResourceType>, deployment: &Value) {
    let generation = deployment
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let observed = deployment
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if observed == Some(generation) {
        return;
    }
    let replicas = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let namespace = deployment
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = deployment
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let status = json!({"status": {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "ReplicaSet has successfully progressed."}
        ]
    }});
    // The Deployment may be gone or changed meanwhile; the next event retries.
    let _ = shared.store().patch(
        rt,
        &namespace,
        &name,
        PatchKind::Merge,
        status,
        "deployment-controller",
        store::Part::Status,
    );
}
