//! Storage and write semantics of the test API server: resource versions, generations,
//! status subresources, server-side apply, finalizers, garbage collection and the event log
//! watches read from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::registry::{Registry, ResourceType};

/// Kind of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub resource: String,
    pub namespace: String,
    pub kind: EventKind,
    pub object: Arc<Value>,
}

/// Events to replay, and a receiver of the ones after them.
pub type Subscription = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// An API error, rendered as a `Status` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    NotFound(String),
    AlreadyExists(String),
    Conflict(String),
    Invalid(String),
    BadRequest(String),
    MethodNotAllowed(String),
    Gone(String),
    UnsupportedMediaType(String),
    /// An error injected by the fault settings.
    Injected(u16),
}

impl ApiError {
    /// HTTP code, `reason` and message.
    pub fn parts(&self) -> (u16, &'static str, String) {
        match self {
            ApiError::NotFound(m) => (404, "NotFound", m.clone()),
            ApiError::AlreadyExists(m) => (409, "AlreadyExists", m.clone()),
            ApiError::Conflict(m) => (409, "Conflict", m.clone()),
            ApiError::Invalid(m) => (422, "Invalid", m.clone()),
            ApiError::BadRequest(m) => (400, "BadRequest", m.clone()),
            ApiError::MethodNotAllowed(m) => (405, "MethodNotAllowed", m.clone()),
            ApiError::Gone(m) => (410, "Expired", m.clone()),
            ApiError::UnsupportedMediaType(m) => (415, "UnsupportedMediaType", m.clone()),
            ApiError::Injected(429) => (429, "TooManyRequests", "injected: too many requests".into()),
            ApiError::Injected(409) => (409, "Conflict", "injected: the object has been modified; please apply your changes to the latest version and try again".into()),
            ApiError::Injected(code) => (*code, "InternalError", "injected: internal error".into()),
        }
    }

    /// The `Status` body.
    pub fn status(&self) -> Value {
        let (code, reason, message) = self.parts();
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
    }
}

/// Which part of an object a write targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Main,
    Status,
}

/// How a PATCH body is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// Server-side apply (`application/apply-patch+yaml`).
    Apply { force: bool },
    /// RFC 7386 (`application/merge-patch+json`; strategic merge is treated the same).
    Merge,
    /// RFC 6902 (`application/json-patch+json`).
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    resource: String,
    namespace: String,
    name: String,
}

/// The objects, their history and the watch fan-out.
pub struct Store {
    pub registry: Registry,
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// Last configuration each field manager applied, per object and part.
    applied: HashMap<Key, BTreeMap<(String, Part), Value>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Watches may start from any resource version at or after this one.
    oldest_watchable: u64,
    events: broadcast::Sender<Arc<Event>>,
    next_uid: u64,
    clock_seconds: u64,
    /// Validating admission webhooks, called after the schema with an AdmissionReview.
    webhooks: Vec<Webhook>,
}

/// How a webhook answers: the AdmissionReview body the API server would POST, to the body the
/// webhook would return (`None`: no usable answer).
pub type ReviewFn = Box<dyn Fn(&[u8]) -> Option<Value> + Send>;

/// A validating admission webhook: the kinds it reviews and how it answers.
pub struct Webhook {
    pub kinds: Vec<String>,
    pub review: ReviewFn,
}

/// Capacity of the live fan-out; a watcher further behind is disconnected and re-watches.
const FANOUT_CAPACITY: usize = 1 << 16;

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(FANOUT_CAPACITY);
        Store {
            registry: Registry::with_builtins(),
            rv: 1,
            objects: BTreeMap::new(),
            applied: HashMap::new(),
            history: VecDeque::new(),
            history_limit,
            oldest_watchable: 1,
            events,
            next_uid: 1,
            clock_seconds: 1_767_225_600, // 2026-01-01T00:00:00Z: a fixed clock keeps objects deterministic.
            webhooks: Vec::new(),
        }
    }

    /// Register a validating admission webhook.
    pub fn add_webhook(&mut self, webhook: Webhook) {
        self.webhooks.push(webhook);
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Drop history so that only watches from `rv` or later can resume (older ones get 410).
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest_watchable = self.rv;
    }

    fn key(rt: &ResourceType, namespace: &str, name: &str) -> Key {
        Key {
            resource: rt.id(),
            namespace: if rt.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }

    fn now(&mut self) -> String {
        self.clock_seconds += 1;
        let ts = k8s_openapi::jiff::Timestamp::from_second(self.clock_seconds as i64)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&Self::key(rt, namespace, name))
            .cloned()
            .ok_or_else(|| not_found(rt, name))
    }

    /// Objects of `rt` (in `namespace` when given) matching `filter`, in key order, from after
    /// `after` (a continue token), at most `limit`. Returns the items and the next token.
    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        filter: &dyn Fn(&Value) -> bool,
        limit: Option<usize>,
        after: Option<&str>,
    ) -> (Vec<Value>, Option<String>) {
        let id = rt.id();
        let mut items = Vec::new();
        let mut next = None;
        for (key, object) in self.objects.range(
            Key {
                resource: id.clone(),
                namespace: String::new(),
                name: String::new(),
            }..,
        ) {
            if key.resource != id {
                break;
            }
            if namespace.is_some_and(|ns| ns != key.namespace) {
                continue;
            }
            let token = format!("{}/{}", key.namespace, key.name);
            if after.is_some_and(|a| token.as_str() <= a) {
                continue;
            }
            if !filter(object) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                next = Some(last_token(&items));
                break;
            }
            items.push(object.clone());
        }
        (items, next)
    }

    /// Events after `from_rv` for `rt` (and `namespace`), plus a receiver for later ones.
    pub fn subscribe(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        from_rv: u64,
    ) -> Result<Subscription, ApiError> {
        if from_rv < self.oldest_watchable.saturating_sub(1) {
            return Err(ApiError::Gone(format!(
                "too old resource version: {from_rv} ({})",
                self.oldest_watchable
            )));
        }
        let id = rt.id();
        let replay = self
            .history
            .iter()
            .filter(|e| {
                e.rv > from_rv && e.resource == id && namespace.is_none_or(|ns| ns == e.namespace)
            })
            .cloned()
            .collect();
        Ok((replay, self.events.subscribe()))
    }

    pub fn create(
        &mut self,
        rt: &Arc<ResourceType>,
        namespace: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        self.create_checked(rt, namespace, object, true)
    }

    /// Create without schema validation: an object stored before a schema change.
    pub fn create_unvalidated(
        &mut self,
        rt: &Arc<ResourceType>,
        namespace: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        self.create_checked(rt, namespace, object, false)
    }

    fn create_checked(
        &mut self,
        rt: &Arc<ResourceType>,
        namespace: &str,
        mut object: Value,
        validate: bool,
    ) -> Result<Value, ApiError> {
        let metadata = metadata_mut(&mut object)?;
        if metadata
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            if let Some(prefix) = metadata.get("generateName").and_then(Value::as_str) {
                let name = format!("{prefix}{:05x}", self.next_uid);
                metadata.insert("name".into(), Value::String(name));
            } else {
                return Err(ApiError::Invalid(
                    "metadata.name: Required value: name or generateName is required".into(),
                ));
            }
        }
        let name = metadata["name"].as_str().unwrap_or_default().to_string();
        let key = Self::key(rt, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::AlreadyExists(format!(
                "{} \"{name}\" already exists",
                rt.plural
            )));
        }
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.next_uid);
        self.next_uid += 1;
        let now = self.now();
        let metadata = metadata_mut(&mut object)?;
        metadata.insert("uid".into(), Value::String(uid));
        metadata.insert("creationTimestamp".into(), Value::String(now));
        metadata.insert("generation".into(), json!(1));
        metadata.remove("deletionTimestamp");
        metadata.remove("resourceVersion");
        if rt.namespaced {
            metadata.insert("namespace".into(), Value::String(namespace.to_string()));
        } else {
            metadata.remove("namespace");
        }
        set_type_meta(&mut object, rt);
        if rt.status_subresource && rt.schema.is_some() {
            // Custom resources with a status subresource start without status.
            if let Value::Object(map) = &mut object {
                map.remove("status");
            }
        }
        if let Some(schema) = &rt.schema {
            schema.apply_defaults(&mut object);
        }
        canonicalize_quantities(&mut object);
        if validate {
            self.validate(rt, &object, None)?;
        }
        if rt.kind == "CustomResourceDefinition" {
            self.establish_crd(&mut object)?;
        }
        self.commit(key, Some(object), EventKind::Added)
            .ok_or_else(|| ApiError::Invalid("create produced no object".into()))
    }

    /// Replace an object (PUT), honouring a `metadata.resourceVersion` precondition.
    pub fn update(
        &mut self,
        rt: &Arc<ResourceType>,
        namespace: &str,
        name: &str,
        object: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        let key = Self::key(rt, namespace, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found(rt, name))?;
        check_resource_version(rt, name, &object, &old)?;
        self.write(rt, key, old, object, part)
    }

    /// Patch an object; server-side apply creates it when absent.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &Arc<ResourceType>,
        namespace: &str,
        name: &str,
        kind: PatchKind,
        body: Value,
        manager: &str,
        part: Part,
    ) -> Result<Value, ApiError> {
        let key = Self::key(rt, namespace, name);
        let Some(old) = self.objects.get(&key).cloned() else {
            return match kind {
                PatchKind::Apply { .. } if part == Part::Main => {
                    let created = self.create(rt, namespace, with_name(body.clone(), name))?;
                    self.applied
                        .entry(key)
                        .or_default()
                        .insert((manager.to_string(), part), body);
                    Ok(created)
                }
                _ => Err(not_found(rt, name)),
            };
        };
        let new = match kind {
            PatchKind::Merge => {
                let mut new = old.clone();
                json_patch::merge(&mut new, &body);
                new
            }
            PatchKind::Json => {
                let patch: json_patch::Patch = serde_json::from_value(body)
                    .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
                let mut new = old.clone();
                json_patch::patch(&mut new, &patch).map_err(|e| {
                    ApiError::Invalid(format!("the JSON patch could not be applied: {e}"))
                })?;
                new
            }
            PatchKind::Apply { force } => {
                let previous = self
                    .applied
                    .get(&key)
                    .and_then(|m| m.get(&(manager.to_string(), part)))
                    .cloned();
                if !force {
                    self.check_apply_conflicts(&key, manager, part, &body)?;
                }
                let mut new = old.clone();
                if let Some(previous) = &previous {
                    remove_dropped_fields(&mut new, previous, &body);
                }
                merge_applied(&mut new, &body);
                self.applied
                    .entry(key.clone())
                    .or_default()
                    .insert((manager.to_string(), part), body);
                new
            }
        };
        // An apply carries no precondition; other patches may name a resourceVersion.
        if !matches!(kind, PatchKind::Apply { .. }) {
            check_resource_version(rt, name, &new, &old)?;
        }
        self.write(rt, key, old, new, part)
    }

    /// Another manager applied a different value at a field this apply sets: a conflict.
    fn check_apply_conflicts(
        &self,
        key: &Key,
        manager: &str,
        part: Part,
        body: &Value,
    ) -> Result<(), ApiError> {
        for ((other, p), applied) in self.applied.get(key).into_iter().flatten() {
            if other != manager
                && *p == part
                && let Some(path) = conflicting_path(applied, body, "")
            {
                return Err(ApiError::Conflict(format!(
                    "Apply failed with 1 conflict: conflict with \"{other}\": {path}"
                )));
            }
        }
        Ok(())
    }

    /// The common path of update and patch: keep what clients may not change, bump generation
    /// on spec changes, validate, and store unless nothing changed.
    fn write(
        &mut self,
        rt: &Arc<ResourceType>,
        key: Key,
        old: Value,
        requested: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        let mut new = match part {
            Part::Status => {
                let mut new = old.clone();
                set_field(&mut new, "status", requested.get("status").cloned());
                new
            }
            Part::Main => {
                let mut new = requested;
                if rt.status_subresource {
                    set_field(&mut new, "status", old.get("status").cloned());
                }
                new
            }
        };
        let old_meta = old.get("metadata").cloned().unwrap_or_default();
        {
            let metadata = metadata_mut(&mut new)?;
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "namespace",
                "name",
                "generation",
            ] {
                match old_meta.get(field) {
                    Some(v) => metadata.insert(field.into(), v.clone()),
                    None => metadata.remove(field),
                };
            }
            metadata.remove("resourceVersion");
            metadata.remove("managedFields");
        }
        set_type_meta(&mut new, rt);
        if let Some(schema) = &rt.schema {
            schema.apply_defaults(&mut new);
        }
        canonicalize_quantities(&mut new);
        if part == Part::Main && spec_changed(&old, &new) {
            let generation = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                + 1;
            metadata_mut(&mut new)?.insert("generation".into(), json!(generation));
        }
        // Finalizers removed from an object being deleted: it goes now.
        let deleting = old_meta.get("deletionTimestamp").is_some();
        let finalizers_left = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if deleting && !finalizers_left {
            self.remove(key);
            return Ok(new);
        }
        self.validate(rt, &new, Some(&old))?;
        let mut comparable_old = old.clone();
        if let Some(m) = comparable_old
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
        {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        if comparable_old == new {
            return Ok(old);
        }
        if rt.kind == "CustomResourceDefinition" {
            self.establish_crd(&mut new)?;
        }
        self.commit(key, Some(new), EventKind::Modified)
            .ok_or_else(|| ApiError::Invalid("update produced no object".into()))
    }

    /// Delete an object: with finalizers it is only marked; without, it goes, and so do the
    /// objects it owns (a synchronous background cascade).
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        precondition_uid: Option<&str>,
    ) -> Result<Value, ApiError> {
        let key = Self::key(rt, namespace, name);
        let mut object = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found(rt, name))?;
        if let Some(uid) = precondition_uid
            && object.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
        {
            return Err(ApiError::Conflict(format!(
                "Precondition failed: UID in precondition: {uid}"
            )));
        }
        let has_finalizers = object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if object.pointer("/metadata/deletionTimestamp").is_none() {
                let now = self.now();
                metadata_mut(&mut object)?.insert("deletionTimestamp".into(), Value::String(now));
                if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                return self
                    .commit(key, Some(object), EventKind::Modified)
                    .ok_or_else(|| ApiError::Invalid("no object".into()));
            }
            return Ok(object);
        }
        Ok(self.remove(key).unwrap_or(object))
    }

    fn remove(&mut self, key: Key) -> Option<Value> {
        let removed = self.objects.get(&key).cloned()?;
        self.applied.remove(&key);
        let id = key.resource.clone();
        self.commit(key, None, EventKind::Deleted);
        if id == "apiextensions.k8s.io/customresourcedefinitions" {
            self.unregister_crd(&removed);
        }
        // Garbage collection: dependents of the removed object go too.
        if let Some(uid) = removed.pointer("/metadata/uid").and_then(Value::as_str) {
            let dependents: Vec<Key> = self
                .objects
                .iter()
                .filter(|(_, o)| {
                    o.pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|refs| {
                            refs.iter()
                                .any(|r| r["uid"] == Value::String(uid.to_string()))
                        })
                })
                .map(|(k, _)| k.clone())
                .collect();
            for dependent in dependents {
                let finalized = self
                    .objects
                    .get(&dependent)
                    .and_then(|o| o.pointer("/metadata/finalizers"))
                    .and_then(Value::as_array)
                    .is_some_and(|f| !f.is_empty());
                if finalized {
                    continue;
                }
                self.remove(dependent);
            }
        }
        Some(removed)
    }

    /// Store (or remove) an object under a new resource version and tell the watchers.
    fn commit(&mut self, key: Key, object: Option<Value>, kind: EventKind) -> Option<Value> {
        self.rv += 1;
        let rv = self.rv;
        let (namespace, resource) = (key.namespace.clone(), key.resource.clone());
        let stored = match object {
            Some(mut object) => {
                if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.insert("resourceVersion".into(), Value::String(rv.to_string()));
                    let managers: Vec<Value> = self
                        .applied
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .map(|((manager, part), applied)| {
                            managed_fields_entry(manager, *part, applied)
                        })
                        .collect();
                    if !managers.is_empty() {
                        m.insert("managedFields".into(), Value::Array(managers));
                    }
                }
                self.objects.insert(key, object.clone());
                object
            }
            None => {
                let mut removed = self.objects.remove(&key)?;
                if let Some(m) = removed.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.insert("resourceVersion".into(), Value::String(rv.to_string()));
                }
                removed
            }
        };
        let event = Arc::new(Event {
            rv,
            resource,
            namespace,
            kind,
            object: Arc::new(stored.clone()),
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_watchable = dropped.rv + 1;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
        Some(stored)
    }

    fn validate(
        &self,
        rt: &ResourceType,
        object: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        if let Some(schema) = &rt.schema {
            let errors = schema.check(object, old);
            if !errors.is_empty() {
                let name = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let causes: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                return Err(ApiError::Invalid(format!(
                    "{}.{} \"{name}\" is invalid: {}",
                    rt.kind,
                    rt.group,
                    causes.join(", ")
                )));
            }
        }
        self.admit(rt, object, old)
    }

    /// Ask every webhook for `rt`'s kind, as the API server does after the schema checks: a
    /// refusal, or no usable answer (failurePolicy Fail), rejects the write.
    fn admit(
        &self,
        rt: &ResourceType,
        object: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        // The webhook reviews specs: writes that leave the spec alone (status, metadata) pass.
        if old.is_some_and(|old| old.get("spec") == object.get("spec")) {
            return Ok(());
        }
        for webhook in self.webhooks.iter().filter(|w| w.kinds.contains(&rt.kind)) {
            let review = json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": format!("{:032x}", self.rv),
                    "kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                    "operation": if old.is_some() { "UPDATE" } else { "CREATE" },
                    "name": object.pointer("/metadata/name"),
                    "namespace": object.pointer("/metadata/namespace"),
                    "object": object,
                    "oldObject": old,
                }
            });
            let body = serde_json::to_vec(&review).unwrap_or_default();
            let answer = (webhook.review)(&body);
            let response = answer.as_ref().and_then(|a| a.get("response"));
            match response
                .and_then(|r| r.get("allowed"))
                .and_then(Value::as_bool)
            {
                Some(true) => {}
                Some(false) => {
                    let message = response
                        .and_then(|r| r.pointer("/status/message"))
                        .and_then(Value::as_str)
                        .unwrap_or("denied");
                    return Err(ApiError::Invalid(format!(
                        "admission webhook denied the request: {message}"
                    )));
                }
                None => {
                    return Err(ApiError::Invalid(
                        "admission webhook gave no answer (failurePolicy: Fail)".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn establish_crd(&mut self, crd: &mut Value) -> Result<(), ApiError> {
        let rt = Registry::type_from_crd(crd).ok_or_else(|| {
            ApiError::Invalid("CustomResourceDefinition.spec is incomplete".into())
        })?;
        let names = crd.pointer("/spec/names").cloned().unwrap_or_default();
        set_field(
            crd,
            "status",
            Some(json!({
                "acceptedNames": names,
                "storedVersions": [rt.version.clone()],
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": "2026-01-01T00:00:00Z"}
                ]
            })),
        );
        self.registry.insert(rt);
        Ok(())
    }

    fn unregister_crd(&mut self, crd: &Value) {
        let Some(rt) = Registry::type_from_crd(crd) else {
            return;
        };
        let id = rt.id();
        let keys: Vec<Key> = self
            .objects
            .keys()
            .filter(|k| k.resource == id)
            .cloned()
            .collect();
        for key in keys {
            self.remove(key);
        }
        self.registry.remove(&id);
    }

    /// A receiver of every change, for waiting on conditions.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Number of stored objects of `rt`.
    pub fn count(&self, rt: &ResourceType) -> usize {
        let id = rt.id();
        self.objects.keys().filter(|k| k.resource == id).count()
    }
}

/// A `metadata.resourceVersion` in a write must be the stored one (optimistic concurrency).
fn check_resource_version(
    rt: &ResourceType,
    name: &str,
    requested: &Value,
    stored: &Value,
) -> Result<(), ApiError> {
    let version = |o: &Value| {
        o.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match version(requested) {
        Some(expected) if Some(&expected) != version(stored).as_ref() => {
            Err(ApiError::Conflict(format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                rt.plural
            )))
        }
        _ => Ok(()),
    }
}

fn last_token(items: &[Value]) -> String {
    items
        .last()
        .map(|o| {
            format!(
                "{}/{}",
                o.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                o.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default()
}

fn not_found(rt: &ResourceType, name: &str) -> ApiError {
    let group = if rt.group.is_empty() {
        String::new()
    } else {
        format!(".{}", rt.group)
    };
    ApiError::NotFound(format!("{}{group} \"{name}\" not found", rt.plural))
}

fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = object
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the body is not a JSON object".into()))?;
    let metadata = map.entry("metadata").or_insert_with(|| json!({}));
    if metadata.is_null() {
        *metadata = json!({});
    }
    metadata
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("metadata is not an object".into()))
}

fn with_name(mut object: Value, name: &str) -> Value {
    if let Ok(metadata) = metadata_mut(&mut object) {
        metadata.insert("name".into(), Value::String(name.into()));
    }
    object
}

fn set_type_meta(object: &mut Value, rt: &ResourceType) {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(rt.api_version()));
        map.insert("kind".into(), Value::String(rt.kind.clone()));
    }
}

fn set_field(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(v) => map.insert(field.into(), v),
            None => map.remove(field),
        };
    }
}

/// Whether anything but metadata and status differs.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

/// Server-side apply, as merge semantics: maps merge key by key, everything else (lists
/// included) is replaced by the applied value.
fn merge_applied(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                if k == "metadata" || t.get(k).is_some_and(Value::is_object) && v.is_object() {
                    let entry = t.entry(k.clone()).or_insert_with(|| json!({}));
                    merge_applied(entry, v);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        (t, a) => *t = a.clone(),
    }
}

/// Fields this manager applied before and no longer applies are removed (the manager owned
/// them, nobody else set them since in this model).
fn remove_dropped_fields(target: &mut Value, previous: &Value, now: &Value) {
    let (Some(t), Some(p)) = (target.as_object_mut(), previous.as_object()) else {
        return;
    };
    for (k, old_value) in p {
        match now.get(k) {
            None => {
                t.remove(k);
            }
            Some(new_value) if old_value.is_object() && new_value.is_object() => {
                if let Some(child) = t.get_mut(k) {
                    remove_dropped_fields(child, old_value, new_value);
                }
            }
            Some(_) => {}
        }
    }
}

/// The first leaf path both applies set, to different values.
fn conflicting_path(a: &Value, b: &Value, prefix: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.iter().find_map(|(k, v)| {
            if matches!(k.as_str(), "apiVersion" | "kind") {
                return None;
            }
            y.get(k)
                .and_then(|w| conflicting_path(v, w, &format!("{prefix}.{k}")))
        }),
        (x, y) if x != y => Some(prefix.to_string()),
        _ => None,
    }
}

/// A managedFields entry whose field set mirrors the applied object's shape.
fn managed_fields_entry(manager: &str, part: Part, applied: &Value) -> Value {
    fn fields(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (format!("f:{k}"), fields(v)))
                    .collect(),
            ),
            _ => json!({}),
        }
    }
    let mut entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": applied.get("apiVersion").cloned().unwrap_or(Value::Null),
        "time": "2026-01-01T00:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields(applied),
    });
    if part == Part::Status {
        entry["subresource"] = json!("status");
    }
    entry
}

/// Store the quantities of a pod template (and a pod) in their canonical form, as the API server
/// does when it serializes `resource.Quantity`: `1000m` is read back as `1`.
fn canonicalize_quantities(object: &mut Value) {
    let canonical = |value: &mut Value| {
        if let Some(text) = value.as_str()
            && let Some(canonical) = crate::api::quantity::canonical_quantity(text)
        {
            *value = Value::String(canonical);
        }
    };
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let pod_spec = match kind {
        "Pod" => object.pointer_mut("/spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            object.pointer_mut("/spec/template/spec")
        }
        _ => None,
    };
    let Some(pod_spec) = pod_spec else {
        return;
    };
    for list in ["containers", "initContainers"] {
        for container in pod_spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            for part in ["requests", "limits"] {
                if let Some(Value::Object(amounts)) =
                    container.pointer_mut(&format!("/resources/{part}"))
                {
                    amounts.values_mut().for_each(canonical);
                }
            }
        }
    }
    for volume in pod_spec
        .get_mut("volumes")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(limit) = volume.pointer_mut("/emptyDir/sizeLimit") {
            canonical(limit);
        }
    }
}
