//! What every reconcile shares: the client, the caches, the event publisher, metrics, backoff state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{MCPPolicy, MCPPromptVersion, MCPServer};
use crate::builders::BuildContext;

use super::children::{Baselines, ChildKind};
use super::events::EventPublisher;
use super::index::{ChildIndex, ObservedChild};
use super::metrics::Metrics;
use super::status::RolloutState;

/// The caches a reconcile reads instead of calling the API server.
#[derive(Clone)]
pub struct Stores {
    pub servers: Store<super::GuardedServer>,
    pub policies: Store<MCPPolicy>,
    pub prompt_versions: Store<MCPPromptVersion>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Compact caches of the children, one per kind (see [`ChildKind::ALL`]).
    pub children: Arc<[ChildIndex; 7]>,
}

impl Stores {
    /// The compact cache of `kind`.
    pub fn children_of(&self, kind: ChildKind) -> &ChildIndex {
        &self.children[kind as usize]
    }

    /// Resolves once every cache but the servers' (which the controller fills itself) has been
    /// filled by its first list.
    pub async fn ready_except_servers(&self) {
        let _ = futures::join!(
            self.policies.wait_until_ready(),
            self.prompt_versions.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            futures::future::join_all(self.children.iter().map(ChildIndex::wait_ready)),
        );
    }
}

/// Per-object exponential backoff for transient failures (kube has none built in).
pub struct Backoff {
    failures: Mutex<HashMap<ObjectRef<super::GuardedServer>, u32>>,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            failures: Mutex::new(HashMap::new()),
            base,
            cap,
        }
    }

    /// The delay before retrying `key` after one more failure: base, 2×base, 4×base ... up to cap.
    pub fn next(&self, key: &ObjectRef<super::GuardedServer>) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key.clone()).or_default();
        let delay = self
            .base
            .saturating_mul(1u32 << (*count).min(16))
            .min(self.cap);
        *count = count.saturating_add(1);
        delay
    }

    pub fn reset(&self, key: &ObjectRef<super::GuardedServer>) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// The status each server was last given by this controller, with the resourceVersion of that
/// write, for as long as the cache shows an older version.
#[derive(Default)]
pub struct StatusMemory(
    Mutex<HashMap<ObjectRef<super::GuardedServer>, (u64, crate::api::server::MCPServerStatus)>>,
);

impl StatusMemory {
    pub fn remember(
        &self,
        key: ObjectRef<super::GuardedServer>,
        resource_version: Option<&str>,
        status: crate::api::server::MCPServerStatus,
    ) {
        if let Some(rv) = resource_version.and_then(|v| v.parse().ok()) {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, (rv, status));
        }
    }

    /// The cache now shows `resource_version` of `key`: forget a write it includes.
    pub fn seen(&self, key: &ObjectRef<super::GuardedServer>, resource_version: Option<&str>) {
        let Some(seen) = resource_version.and_then(|v| v.parse::<u64>().ok()) else {
            return;
        };
        let mut memory = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if memory.get(key).is_some_and(|(written, _)| *written <= seen) {
            memory.remove(key);
        }
    }

    /// The remembered status when the cached object (`cached_version`) predates its write.
    /// Resource versions are compared only when both are numbers, as etcd's are.
    pub fn newer_than(
        &self,
        key: &ObjectRef<super::GuardedServer>,
        cached_version: Option<&str>,
    ) -> Option<crate::api::server::MCPServerStatus> {
        let mut memory = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (written, status) = memory.get(key)?;
        let cached: u64 = cached_version.and_then(|v| v.parse().ok())?;
        if cached < *written {
            Some(status.clone())
        } else {
            // The cache caught up: it is the truth again.
            memory.remove(key);
            None
        }
    }
}

/// Labels of a cached namespace, plus the name label the API server sets on every namespace.
pub fn namespace_labels(
    namespaces: &Store<PartialObjectMeta<Namespace>>,
    namespace: &str,
) -> BTreeMap<String, String> {
    let mut labels = namespaces
        .get(&ObjectRef::new(namespace))
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
    labels
}

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    pub build: BuildContext,
    pub stores: Stores,
    pub events: EventPublisher,
    pub metrics: Metrics,
    pub backoff: Backoff,
    pub baselines: Baselines,
    pub status_memory: Arc<StatusMemory>,
    /// The clock conditions are stamped with.
    pub clock: fn() -> Time,
    /// The gateways' live tool inventories, when they are read.
    pub inventories: Option<Arc<super::inventory::InventoryReader>>,
    /// Wakes the policy status task (a server status was written).
    pub policy_status_wake: Arc<tokio::sync::Notify>,
}

impl Context {
    pub fn now(&self) -> Time {
        (self.clock)()
    }

    /// Labels of a namespace, plus the name label the API server sets on every namespace.
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        namespace_labels(&self.stores.namespaces, namespace)
    }

    /// What the caches know of a child.
    pub fn observed_child(
        &self,
        kind: ChildKind,
        namespace: &str,
        name: &str,
    ) -> Option<ObservedChild> {
        self.stores.children_of(kind).get(namespace, name)
    }

    /// The cached rollout state of a server's Deployment.
    pub fn rollout(&self, namespace: &str, name: &str) -> Option<RolloutState> {
        self.observed_child(ChildKind::Deployment, namespace, name)?
            .rollout
    }

    /// Publish an Event about `server`; a failure to record is logged, never fatal.
    pub async fn publish(&self, server: &MCPServer, type_: EventType, reason: &str, note: &str) {
        self.publish_about(&server.object_ref(&()), type_, reason, note)
            .await;
    }

    /// Publish an Event about the object `reference` names.
    pub async fn publish_about(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        if let Err(e) = self.events.publish(reference, type_, reason, note).await {
            tracing::warn!(error = %e, reason, "could not record an event");
        }
        self.metrics.event_published();
    }
}
