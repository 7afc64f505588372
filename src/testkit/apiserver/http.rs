//! The Kubernetes REST API over HTTP: paths, verbs, lists, watches, subresources, faults and
//! request counting.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use futures::channel::mpsc;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::faults::Faults;
use super::registry::ResourceType;
use super::selector::{FieldFilter, LabelFilter};
use super::store::{ApiError, EventKind, Part, PatchKind, Store};

/// A request counter key: who, which verb, which resource (with `/subresource`), in which API
/// group and namespace (`None`: across namespaces, or a cluster-scoped resource), which is what
/// an RBAC rule needs to grant it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    pub client: String,
    pub verb: &'static str,
    pub resource: String,
    pub group: String,
    pub namespace: Option<String>,
}

/// One permission an RBAC authorizer checks: who, which verb, which resource (with
/// `/subresource`) in which API group, in which namespace (`None`: across namespaces or
/// cluster-scoped), on which object (`None`: a collection).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    pub client: String,
    pub verb: &'static str,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// State shared by every request.
pub struct Shared {
    pub store: Mutex<Store>,
    pub counts: Mutex<BTreeMap<RequestKey, u64>>,
    /// Every (client, verb, resource) an RBAC authorizer would have checked: each request's own,
    /// plus `create` for a patch that created its object.
    pub authorized: Mutex<BTreeSet<Permission>>,
    pub faults: Mutex<Faults>,
    pub bookmark_interval: Duration,
}

impl Shared {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn authorize(&self, key: Permission) {
        self.authorized
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
    }

    fn count(&self, key: RequestKey) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(key).or_default() += 1;
    }
}

/// What a path addresses.
struct Target {
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

const MAX_BODY: usize = 16 * 1024 * 1024;

pub async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query().unwrap_or_default());
    if path == "/version" {
        return json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-mcp-operator-test", "platform": "linux/amd64"}),
        );
    }
    let target = match resolve(&shared, &path) {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let verb = match (
        &parts.method,
        target.name.is_some(),
        query.get("watch").map(String::as_str),
    ) {
        (&Method::GET, _, Some("true" | "1")) => "watch",
        (&Method::GET, true, _) => "get",
        (&Method::GET, false, _) => "list",
        (&Method::POST, false, _) => "create",
        (&Method::PUT, true, _) => "update",
        (&Method::PATCH, true, _) => "patch",
        (&Method::DELETE, true, _) => "delete",
        _ => {
            return error_response(&ApiError::MethodNotAllowed(format!(
                "{} is not supported on {path}",
                parts.method
            )));
        }
    };
    let resource = match &target.subresource {
        Some(sub) => format!("{}/{sub}", target.rt.plural),
        None => target.rt.plural.clone(),
    };
    let key = RequestKey {
        client: client_identity(&parts.headers),
        verb,
        resource,
        group: target.rt.group.clone(),
        namespace: target.namespace.clone(),
    };
    shared.count(key.clone());
    let permission = Permission {
        client: key.client.clone(),
        verb,
        group: key.group.clone(),
        resource: key.resource.clone(),
        namespace: key.namespace.clone(),
        name: target.name.clone(),
    };
    shared.authorize(permission.clone());

    let (latency, injected) = {
        let mut faults = shared.faults();
        (faults.latency, faults.inject(verb))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(code) = injected {
        return error_response(&ApiError::Injected(code));
    }

    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(&ApiError::BadRequest(format!("cannot read the body: {e}")));
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let result = match verb {
        "watch" => return watch(shared, target, &query),
        "get" => get(&shared, &target),
        "list" => list(&shared, &target, &query),
        "create" => parse_body(&body).and_then(|object| {
            let namespace = target.namespace.clone().unwrap_or_default();
            shared.store().create(&target.rt, &namespace, object)
        }),
        "update" => {
            parse_body(&body).and_then(|object| write(&shared, &target, WriteOp::Update(object)))
        }
        "patch" => patch_kind(&content_type, &query).and_then(|kind| {
            let patch = parse_body(&body)?;
            // A patch that creates its object needs the `create` verb as well (the API server
            // authorizes it as a create), so RBAC evidence counts one.
            let namespace = target.namespace.as_deref().unwrap_or_default();
            let name = target.name.as_deref().unwrap_or_default();
            if target.subresource.is_none()
                && shared.store().get(&target.rt, namespace, name).is_err()
            {
                // Authorized on the collection: the name is not known to RBAC at create.
                shared.authorize(Permission {
                    verb: "create",
                    name: None,
                    ..permission.clone()
                });
            }
            write(
                &shared,
                &target,
                WriteOp::Patch(
                    kind,
                    patch,
                    query.get("fieldManager").cloned().unwrap_or_default(),
                ),
            )
        }),
        _ => delete(&shared, &target, &body),
    };
    match result {
        Ok(object) => {
            let status = if verb == "create" {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json_response(status, &object)
        }
        Err(e) => error_response(&e),
    }
}

fn client_identity(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("anonymous")
        .to_string()
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/api/v1/...` or `/apis/GROUP/VERSION/...` to a resource type, namespace, name and subresource.
fn resolve(shared: &Shared, path: &str) -> Result<Target, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => {
            return Err(ApiError::NotFound(format!(
                "the server could not find the requested resource ({path})"
            )));
        }
    };
    let (namespace, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(*ns), tail),
        other => (None, other),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => {
            return Err(ApiError::NotFound(format!(
                "the server could not find the requested resource ({path})"
            )));
        }
    };
    let rt = shared
        .store()
        .registry
        .find(group, version, plural)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "the server could not find the requested resource ({path})"
            ))
        })?;
    if rt.namespaced && name.is_some() && namespace.is_none() {
        return Err(ApiError::NotFound(format!(
            "{} is namespaced: the path needs /namespaces/NAME",
            rt.plural
        )));
    }
    match subresource {
        None | Some("status") => {}
        Some("scale") if rt.scale.is_some() => {}
        Some(other) => {
            return Err(ApiError::NotFound(format!(
                "{}/{other} is not a subresource this server knows",
                rt.plural
            )));
        }
    }
    Ok(Target {
        rt,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
    })
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .or_else(|_| {
            std::str::from_utf8(body)
                .ok()
                .and_then(|text| serde_saphyr::from_str::<Value>(text).ok())
                .ok_or(())
        })
        .map_err(|()| ApiError::BadRequest("the body is neither JSON nor YAML".into()))
}

fn patch_kind(content_type: &str, query: &BTreeMap<String, String>) -> Result<PatchKind, ApiError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    match media {
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            if query.get("fieldManager").is_none_or(String::is_empty) {
                return Err(ApiError::BadRequest(
                    "fieldManager is required for apply requests".into(),
                ));
            }
            Ok(PatchKind::Apply {
                force: query.get("force").is_some_and(|f| f == "true"),
            })
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            Ok(PatchKind::Merge)
        }
        "application/json-patch+json" => Ok(PatchKind::Json),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format ({other:?})"
        ))),
    }
}

fn part_of(target: &Target) -> Part {
    if target.subresource.as_deref() == Some("status") {
        Part::Status
    } else {
        Part::Main
    }
}

/// The `labelSelector` and `fieldSelector` of a list or watch.
fn selectors(query: &BTreeMap<String, String>) -> Result<(LabelFilter, FieldFilter), ApiError> {
    let param = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    Ok((
        LabelFilter::parse(param("labelSelector"))?,
        FieldFilter::parse(param("fieldSelector"))?,
    ))
}

fn get(shared: &Shared, target: &Target) -> Result<Value, ApiError> {
    let name = target.name.as_deref().unwrap_or_default();
    let namespace = target.namespace.as_deref().unwrap_or_default();
    let object = shared.store().get(&target.rt, namespace, name)?;
    if target.subresource.as_deref() == Some("scale") {
        return Ok(scale_view(&target.rt, &object));
    }
    Ok(object)
}

fn list(
    shared: &Shared,
    target: &Target,
    query: &BTreeMap<String, String>,
) -> Result<Value, ApiError> {
    let (labels, fields) = selectors(query)?;
    let limit = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l: &usize| *l > 0);
    let store = shared.store();
    let filter = |o: &Value| labels.matches(o) && fields.matches(o);
    let (items, next) = store.list(
        &target.rt,
        target.namespace.as_deref(),
        &filter,
        limit,
        query
            .get("continue")
            .map(String::as_str)
            .filter(|c| !c.is_empty()),
    );
    let mut metadata = json!({"resourceVersion": store.resource_version().to_string()});
    if let Some(next) = next {
        metadata["continue"] = Value::String(next);
    }
    Ok(
        json!({"apiVersion": target.rt.api_version(), "kind": format!("{}List", target.rt.kind), "metadata": metadata, "items": items}),
    )
}

enum WriteOp {
    Update(Value),
    Patch(PatchKind, Value, String),
}

fn write(shared: &Shared, target: &Target, op: WriteOp) -> Result<Value, ApiError> {
    let name = target.name.clone().unwrap_or_default();
    let namespace = target.namespace.clone().unwrap_or_default();
    let mut store = shared.store();
    if target.subresource.as_deref() == Some("scale") {
        let current = store.get(&target.rt, &namespace, &name)?;
        let mut scale = scale_view(&target.rt, &current);
        match op {
            WriteOp::Update(body) => scale = body,
            WriteOp::Patch(PatchKind::Json, patch, _) => {
                let patch: json_patch::Patch = serde_json::from_value(patch)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                json_patch::patch(&mut scale, &patch)
                    .map_err(|e| ApiError::Invalid(e.to_string()))?;
            }
            WriteOp::Patch(_, patch, _) => json_patch::merge(&mut scale, &patch),
        }
        let replicas = scale
            .pointer("/spec/replicas")
            .cloned()
            .unwrap_or(Value::Null);
        let mut updated = current.clone();
        if let Some(paths) = &target.rt.scale {
            set_path(&mut updated, &paths.spec_replicas, replicas);
        }
        let written = store.update(&target.rt, &namespace, &name, updated, Part::Main)?;
        return Ok(scale_view(&target.rt, &written));
    }
    let part = part_of(target);
    match op {
        WriteOp::Update(object) => store.update(&target.rt, &namespace, &name, object, part),
        WriteOp::Patch(kind, patch, manager) => {
            store.patch(&target.rt, &namespace, &name, kind, patch, &manager, part)
        }
    }
}

fn delete(shared: &Shared, target: &Target, body: &Bytes) -> Result<Value, ApiError> {
    let options: Value = if body.is_empty() {
        Value::Null
    } else {
        parse_body(body)?
    };
    let uid = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str);
    let namespace = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    shared.store().delete(&target.rt, &namespace, &name, uid)
}

fn scale_view(rt: &ResourceType, object: &Value) -> Value {
    let Some(paths) = &rt.scale else {
        return Value::Null;
    };
    let get = |path: &[String]| path.iter().try_fold(object, |v, k| v.get(k)).cloned();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": object.pointer("/metadata/name"),
            "namespace": object.pointer("/metadata/namespace"),
            "uid": object.pointer("/metadata/uid"),
            "resourceVersion": object.pointer("/metadata/resourceVersion"),
        },
        "spec": {"replicas": get(&paths.spec_replicas).unwrap_or(json!(0))},
        "status": {
            "replicas": get(&paths.status_replicas).unwrap_or(json!(0)),
            "selector": paths.label_selector.as_ref().and_then(|p| get(p)).unwrap_or(json!("")),
        },
    })
}

fn set_path(object: &mut Value, path: &[String], value: Value) {
    let mut current = object;
    for (i, key) in path.iter().enumerate() {
        let Some(map) = current.as_object_mut() else {
            return;
        };
        if i + 1 == path.len() {
            map.insert(key.clone(), value);
            return;
        }
        current = map.entry(key.clone()).or_insert_with(|| json!({}));
    }
}

/// A watch: replay from the requested resource version, then live events, bookmarks, and the
/// injected stream drops. Ends at `timeoutSeconds`, on a lagging fan-out, or when the client goes.
fn watch(shared: Arc<Shared>, target: Target, query: &BTreeMap<String, String>) -> Response {
    let (labels, fields) = match selectors(query) {
        Ok(parsed) => parsed,
        Err(e) => return error_response(&e),
    };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let requested_rv: Option<u64> = query
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0);

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let subscription = {
        let store = shared.store();
        match requested_rv {
            Some(rv) => store
                .subscribe(&target.rt, target.namespace.as_deref(), rv)
                .map(|(replay, live)| {
                    let replay: Vec<(EventKind, Arc<Value>, u64)> = replay
                        .iter()
                        .map(|e| (e.kind, e.object.clone(), e.rv))
                        .collect();
                    (replay, live, rv)
                }),
            None => {
                // No resource version: the current state as ADDED events, then changes.
                let rv = store.resource_version();
                let filter = |_: &Value| true;
                let (items, _) =
                    store.list(&target.rt, target.namespace.as_deref(), &filter, None, None);
                store
                    .subscribe(&target.rt, target.namespace.as_deref(), rv)
                    .map(|(_, live)| {
                        (
                            items
                                .into_iter()
                                .map(|o| (EventKind::Added, Arc::new(o), rv))
                                .collect(),
                            live,
                            rv,
                        )
                    })
            }
        }
    };
    let (replay, mut live, start_rv) = match subscription {
        Ok(s) => s,
        Err(e) => {
            // A too-old resource version is reported inside the stream, as the API server does.
            let line = json!({"type": "ERROR", "object": e.status()});
            return streaming_response(futures::stream::iter(vec![Ok::<_, std::io::Error>(
                Bytes::from(format!("{line}\n")),
            )]));
        }
    };
    let rt = target.rt.clone();
    let namespace = target.namespace.clone();
    let id = rt.id();
    tokio::spawn(async move {
        let mut tx = tx;
        let mut seen_rv = start_rv;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(shared.bookmark_interval);
        ticker.tick().await;
        let matches = |o: &Value| labels.matches(o) && fields.matches(o);
        for (kind, object, rv) in replay {
            seen_rv = seen_rv.max(rv);
            if matches(&object) && send_event(&mut tx, kind.as_str(), &object).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = ticker.tick(), if bookmarks => {
                    let bookmark = json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"resourceVersion": seen_rv.to_string()}});
                    if send_event(&mut tx, "BOOKMARK", &bookmark).await.is_err() {
                        return;
                    }
                }
                received = live.recv() => match received {
                    Ok(event) => {
                        if event.rv <= seen_rv {
                            continue;
                        }
                        seen_rv = event.rv;
                        if event.resource != id || namespace.as_ref().is_some_and(|ns| *ns != event.namespace) || !matches(&event.object) {
                            continue;
                        }
                        if send_event(&mut tx, event.kind.as_str(), &event.object).await.is_err() {
                            return;
                        }
                        let drop_now = shared.faults().drop_watch();
                        if drop_now {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                }
            }
        }
    });
    streaming_response(rx)
}

async fn send_event(
    tx: &mut mpsc::Sender<Result<Bytes, std::io::Error>>,
    kind: &str,
    object: &Value,
) -> Result<(), mpsc::SendError> {
    let line = json!({"type": kind, "object": object});
    tx.send(Ok(Bytes::from(format!("{line}\n")))).await
}

fn streaming_response<S>(stream: S) -> Response
where
    S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(error: &ApiError) -> Response {
    let (code, _, _) = error.parts();
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &error.status())
}
