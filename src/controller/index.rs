//! A compact cache of the controller's children. The apply decision needs, per child, only the
//! hash the controller applied, what moves when others edit it, and who owns it; a Deployment
//! adds its rollout counters. Keeping that (about a hundred bytes) instead of whole objects is
//! what keeps memory per managed server small at tens of thousands of servers.
//!
//! It follows kube's reflector semantics: a (re)list is buffered and swapped in when complete,
//! so a lookup never sees a half-loaded list.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::RwLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::watch;

use super::children::ANNOTATION_APPLIED_HASH;
use super::status::RolloutState;

/// A 64-bit digest used for identities and hashes in the compact caches. Collisions among a
/// few hundred thousand children are vanishingly unlikely, and cost at most one extra apply.
pub fn digest(parts: &[&str]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for part in parts {
        part.hash(&mut hasher);
    }
    hasher.finish()
}

/// What moves when someone else changes an object: its generation where it has one, else its
/// resourceVersion (numeric when etcd's, otherwise digested and not ordered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    Generation(i64),
    Version(u64),
    OpaqueVersion(u64),
}

impl Marker {
    pub fn of(generation: Option<i64>, resource_version: Option<&str>) -> Marker {
        match generation.filter(|g| *g > 0) {
            Some(g) => Marker::Generation(g),
            None => {
                let rv = resource_version.unwrap_or_default();
                match rv.parse() {
                    Ok(v) => Marker::Version(v),
                    Err(_) => Marker::OpaqueVersion(digest(&[rv])),
                }
            }
        }
    }

    /// Whether a cached copy with this marker predates `other`.
    pub fn older_than(&self, other: &Marker) -> bool {
        match (self, other) {
            (Marker::Generation(a), Marker::Generation(b)) => a < b,
            (Marker::Version(a), Marker::Version(b)) => a < b,
            _ => false,
        }
    }
}

/// What the controller knows of an existing child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObservedChild {
    /// Digest of the applied-hash annotation, if present.
    pub applied_hash: Option<u64>,
    pub marker: Marker,
    /// Digest of the controlling owner's uid.
    pub owner_uid: Option<u64>,
    /// For Deployments: the rollout counters.
    pub rollout: Option<RolloutState>,
}

impl ObservedChild {
    pub fn from_meta(meta: &ObjectMeta, rollout: Option<RolloutState>) -> Self {
        ObservedChild {
            applied_hash: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_APPLIED_HASH))
                .map(|h| digest(&[h])),
            marker: Marker::of(meta.generation, meta.resource_version.as_deref()),
            owner_uid: meta
                .owner_references
                .as_ref()
                .and_then(|refs| refs.iter().find(|r| r.controller == Some(true)))
                .map(|r| digest(&[&r.uid])),
            rollout,
        }
    }
}

#[derive(Default)]
struct State {
    live: HashMap<u64, ObservedChild>,
    relist: Option<HashMap<u64, ObservedChild>>,
}

/// The compact cache of one child kind.
pub struct ChildIndex {
    state: RwLock<State>,
    ready: watch::Sender<bool>,
}

impl Default for ChildIndex {
    fn default() -> Self {
        ChildIndex {
            state: RwLock::default(),
            ready: watch::channel(false).0,
        }
    }
}

/// Key of a child in an index.
pub fn child_key(namespace: &str, name: &str) -> u64 {
    digest(&[namespace, name])
}

impl ChildIndex {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<ObservedChild> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .get(&child_key(namespace, name))
            .copied()
    }

    /// A (re)list starts.
    pub fn begin_relist(&self) {
        self.write().relist = Some(HashMap::new());
    }

    /// One object of a (re)list; returns whether it differs from what was cached.
    pub fn relisted(&self, key: u64, child: ObservedChild) -> bool {
        let mut state = self.write();
        let changed = state.live.get(&key) != Some(&child);
        state
            .relist
            .get_or_insert_with(HashMap::new)
            .insert(key, child);
        changed
    }

    /// The (re)list is complete: it replaces what was cached.
    pub fn finish_relist(&self) {
        let mut state = self.write();
        if let Some(list) = state.relist.take() {
            state.live = list;
        }
        drop(state);
        self.ready.send_replace(true);
    }

    pub fn upsert(&self, key: u64, child: ObservedChild) {
        self.write().live.insert(key, child);
    }

    pub fn remove(&self, key: u64) {
        self.write().live.remove(&key);
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Resolves once the first list is complete.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.subscribe();
        // An error means the index is gone: nothing to wait for.
        let _ = ready.wait_for(|r| *r).await;
    }

    pub fn len(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(generation: i64) -> ObservedChild {
        ObservedChild {
            applied_hash: Some(1),
            marker: Marker::Generation(generation),
            owner_uid: None,
            rollout: None,
        }
    }

    #[test]
    fn relists_swap_in_whole() {
        let index = ChildIndex::default();
        assert!(!index.is_ready());
        index.begin_relist();
        assert!(index.relisted(1, child(1)));
        assert!(
            index.get("", "").is_none(),
            "nothing visible before the list completes"
        );
        index.finish_relist();
        assert!(index.is_ready());
        assert_eq!(index.len(), 1);

        index.upsert(2, child(1));
        index.begin_relist();
        assert!(!index.relisted(1, child(1)), "unchanged");
        index.finish_relist();
        assert_eq!(index.len(), 1, "what the relist did not return is gone");
    }

    #[test]
    fn markers_order_only_what_can_be_ordered() {
        assert!(Marker::of(Some(2), None).older_than(&Marker::of(Some(3), None)));
        assert!(Marker::of(None, Some("9")).older_than(&Marker::of(None, Some("10"))));
        assert!(!Marker::of(None, Some("a")).older_than(&Marker::of(None, Some("b"))));
    }
}
