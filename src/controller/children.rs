//! Applying a server's children with server-side apply, skipping those already as desired, and
//! deleting the ones no longer wanted.
//!
//! Each child carries an annotation with the SHA-256 of the configuration last applied. A child
//! is applied when it is missing, when its annotation differs from the desired hash, or when it
//! changed since the controller last applied or first saw it (its `generation`, or its
//! `resourceVersion` for kinds without one, moved): so a resync or a restart with nothing to do
//! writes nothing, and an edit made out of band while the controller runs is reverted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use crate::builders::gateway::sha256_hex;

use super::Error;
use super::index::{Marker, ObservedChild, digest};

/// The single field manager of every write.
pub const FIELD_MANAGER: &str = "mcp-operator";
/// Annotation holding the hash of the configuration last applied to a child.
pub const ANNOTATION_APPLIED_HASH: &str = "mcp-operator.dev/applied-sha256";

/// The kinds of children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChildKind {
    ServiceAccount,
    ConfigMap,
    Deployment,
    Service,
    NetworkPolicy,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
}

impl ChildKind {
    pub const ALL: [ChildKind; 7] = [
        ChildKind::ServiceAccount,
        ChildKind::ConfigMap,
        ChildKind::Deployment,
        ChildKind::Service,
        ChildKind::NetworkPolicy,
        ChildKind::HorizontalPodAutoscaler,
        ChildKind::PodDisruptionBudget,
    ];

    /// Metric label and log name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::ServiceAccount => "ServiceAccount",
            ChildKind::ConfigMap => "ConfigMap",
            ChildKind::Deployment => "Deployment",
            ChildKind::Service => "Service",
            ChildKind::NetworkPolicy => "NetworkPolicy",
            ChildKind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            ChildKind::PodDisruptionBudget => "PodDisruptionBudget",
        }
    }

    pub fn from_kind(kind: &str) -> Option<ChildKind> {
        ChildKind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    pub fn api_resource(self) -> ApiResource {
        use k8s_openapi::api::{apps, autoscaling, core, networking, policy};
        match self {
            ChildKind::ServiceAccount => ApiResource::erase::<core::v1::ServiceAccount>(&()),
            ChildKind::ConfigMap => ApiResource::erase::<core::v1::ConfigMap>(&()),
            ChildKind::Deployment => ApiResource::erase::<apps::v1::Deployment>(&()),
            ChildKind::Service => ApiResource::erase::<core::v1::Service>(&()),
            ChildKind::NetworkPolicy => ApiResource::erase::<networking::v1::NetworkPolicy>(&()),
            ChildKind::HorizontalPodAutoscaler => {
                ApiResource::erase::<autoscaling::v2::HorizontalPodAutoscaler>(&())
            }
            ChildKind::PodDisruptionBudget => {
                ApiResource::erase::<policy::v1::PodDisruptionBudget>(&())
            }
        }
    }
}

/// How long a child the controller applied may stay absent from the cache before it is taken
/// for deleted (the watch event of the write normally arrives within milliseconds).
const CACHE_LAG_GRACE: Duration = Duration::from_secs(5);

/// What the controller last applied to a child, or first saw of it.
#[derive(Clone, Copy, Debug)]
struct Baseline {
    hash: u64,
    marker: Marker,
    /// The cache has shown this write.
    seen: bool,
    applied_at: Option<Instant>,
}

/// Identity of a child: a digest of its kind, namespace and name.
pub type ChildKey = u64;

/// The key of a child.
pub fn child_identity(kind: ChildKind, namespace: &str, name: &str) -> ChildKey {
    digest(&[kind.as_str(), namespace, name])
}

/// The controller's memory of its own writes to children, so that a cache that lags behind
/// them is not mistaken for drift, and edits by others are.
#[derive(Default)]
pub struct Baselines(Mutex<HashMap<ChildKey, Baseline>>);

impl Baselines {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChildKey, Baseline>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `desired_hash` must be applied over what the cache shows.
    pub fn needs_apply(
        &self,
        key: ChildKey,
        desired_hash: &str,
        observed: Option<ObservedChild>,
    ) -> bool {
        let desired = digest(&[desired_hash]);
        let mut baselines = self.lock();
        let known = baselines.get(&key).filter(|b| b.hash == desired).copied();
        match (observed, known) {
            (None, None) => true,
            // Applied but not yet in the cache: lag, unless it was seen since (deleted) or is overdue.
            (None, Some(b)) => b.seen || b.applied_at.is_none_or(|t| t.elapsed() > CACHE_LAG_GRACE),
            (Some(o), Some(b)) => {
                if o.marker.older_than(&b.marker) {
                    return false;
                }
                if let Some(entry) = baselines.get_mut(&key) {
                    entry.seen = true;
                }
                o.applied_hash != Some(desired) || o.marker != b.marker
            }
            (Some(o), None) => {
                if o.applied_hash != Some(desired) {
                    return true;
                }
                // First sight (after a restart): the annotation says it is ours and current.
                baselines.insert(
                    key,
                    Baseline {
                        hash: desired,
                        marker: o.marker,
                        seen: true,
                        applied_at: None,
                    },
                );
                false
            }
        }
    }

    /// The generation the controller last applied to a child, while it is recent: a rollout
    /// whose state the cache may not show yet.
    pub fn unobserved_generation(&self, key: ChildKey) -> Option<i64> {
        let baselines = self.lock();
        let b = baselines.get(&key)?;
        match (b.marker, b.applied_at) {
            (Marker::Generation(g), Some(at)) if at.elapsed() <= CACHE_LAG_GRACE => Some(g),
            _ => None,
        }
    }

    fn record(&self, key: ChildKey, hash: &str, applied: &Value) {
        let marker = Marker::of(
            applied
                .pointer("/metadata/generation")
                .and_then(Value::as_i64),
            applied
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str),
        );
        let baseline = Baseline {
            hash: digest(&[hash]),
            marker,
            seen: false,
            applied_at: Some(Instant::now()),
        };
        self.lock().insert(key, baseline);
    }

    /// Forget a deleted server's children.
    pub fn forget_server(&self, namespace: &str, name: &str) {
        let config_map = crate::builders::labels::gateway_config_name(name);
        let mut baselines = self.lock();
        for kind in ChildKind::ALL {
            baselines.remove(&child_identity(kind, namespace, name));
            baselines.remove(&child_identity(kind, namespace, &config_map));
        }
    }
}

/// A desired child with its hash annotation set.
pub struct DesiredChild {
    pub kind: ChildKind,
    pub namespace: String,
    pub name: String,
    pub object: Value,
    pub hash: String,
}

impl DesiredChild {
    /// Annotate `object` with the hash of its own content.
    pub fn new(kind: ChildKind, mut object: Value) -> Self {
        let hash = sha256_hex(object.to_string().as_bytes());
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            let annotations = metadata
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(map) = annotations.as_object_mut() {
                map.insert(ANNOTATION_APPLIED_HASH.into(), Value::String(hash.clone()));
            }
        }
        DesiredChild {
            kind,
            namespace,
            name,
            object,
            hash,
        }
    }

    pub fn key(&self) -> ChildKey {
        child_identity(self.kind, &self.namespace, &self.name)
    }
}

/// Server-side apply `child`, record its marker, and return what the API server stored.
pub async fn apply(
    client: &Client,
    baselines: &Baselines,
    child: &DesiredChild,
) -> Result<Value, Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &child.namespace, &child.kind.api_resource());
    let applied = api
        .patch(
            &child.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&child.object),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: child.kind.as_str(),
            name: child.name.clone(),
            source,
        })?;
    let applied = serde_json::to_value(applied).map_err(|e| {
        Error::Internal(format!(
            "applied {} does not serialise: {e}",
            child.kind.as_str()
        ))
    })?;
    baselines.record(child.key(), &child.hash, &applied);
    Ok(applied)
}

/// Delete a child that is no longer wanted (a 404 means someone already did).
pub async fn delete(
    client: &Client,
    kind: ChildKind,
    namespace: &str,
    name: &str,
) -> Result<(), Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &kind.api_resource());
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Apply {
            kind: kind.as_str(),
            name: name.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(hash: &str, generation: Option<i64>, rv: &str) -> ObservedChild {
        ObservedChild {
            applied_hash: Some(digest(&[hash])),
            marker: Marker::of(generation, Some(rv)),
            owner_uid: None,
            rollout: None,
        }
    }

    #[test]
    fn apply_only_when_missing_changed_or_edited() {
        let baselines = Baselines::default();
        let key = child_identity(ChildKind::Deployment, "ns", "s");
        assert!(baselines.needs_apply(key, "h", None), "missing");
        assert!(
            baselines.needs_apply(key, "new", Some(observed("h", Some(1), "10"))),
            "desired changed"
        );
        assert!(
            !baselines.needs_apply(key, "h", Some(observed("h", Some(1), "10"))),
            "first sight of a current child"
        );
        assert!(
            !baselines.needs_apply(key, "h", Some(observed("h", Some(1), "11"))),
            "status-only change"
        );
        assert!(
            baselines.needs_apply(key, "h", Some(observed("h", Some(2), "12"))),
            "spec edited by someone else"
        );

        let cm = child_identity(ChildKind::ConfigMap, "ns", "s-gateway");
        assert!(!baselines.needs_apply(cm, "h", Some(observed("h", None, "5"))));
        assert!(
            baselines.needs_apply(cm, "h", Some(observed("h", None, "6"))),
            "no generation: any write is an edit"
        );
    }

    #[test]
    fn a_lagging_cache_is_not_drift_but_a_deletion_is() {
        let baselines = Baselines::default();
        let key = child_identity(ChildKind::Deployment, "ns", "s");
        let applied = serde_json::json!({"metadata": {"generation": 3, "resourceVersion": "40"}});
        baselines.record(key, "h", &applied);
        assert_eq!(baselines.unobserved_generation(key), Some(3));
        assert!(
            !baselines.needs_apply(key, "h", None),
            "our write is not in the cache yet"
        );
        assert!(
            !baselines.needs_apply(key, "h", Some(observed("old", Some(2), "30"))),
            "the cache still shows the previous version"
        );
        assert!(
            !baselines.needs_apply(key, "h", Some(observed("h", Some(3), "40"))),
            "the cache caught up"
        );
        assert!(
            baselines.needs_apply(key, "h", None),
            "seen, then gone: deleted by someone"
        );
    }

    #[test]
    fn hash_annotation_is_set_and_stable() {
        let object = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n"}, "data": {"k": "v"}});
        let a = DesiredChild::new(ChildKind::ConfigMap, object.clone());
        let b = DesiredChild::new(ChildKind::ConfigMap, object);
        assert_eq!(a.hash, b.hash);
        assert_eq!(
            a.object["metadata"]["annotations"][ANNOTATION_APPLIED_HASH],
            a.hash.as_str()
        );
    }
}
