//! The live tool inventories of the running servers, read from each gateway's admin endpoint
//! (`GET /inventory` through the server's Service) every period and as soon as a rollout
//! completes. A changed inventory wakes its server's reconcile, which assesses the tools with the
//! same pure checks the gateway runs and records them in status.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Notify;

use super::GuardedServer;
use super::status::RolloutState;
use crate::api::server::DEFAULT_ADMIN_PORT;
use crate::builders::gateway::sha256_hex;

/// Default time between two reads of every gateway's inventory.
pub const DEFAULT_INVENTORY_PERIOD: Duration = Duration::from_secs(60);
/// Longest wait for one gateway's answer.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Gateways read at once.
const READ_CONCURRENCY: usize = 16;
/// Largest inventory document accepted (a gateway listing many large tools stays well below).
const MAX_INVENTORY_BYTES: usize = 8 * 1024 * 1024;

/// Where the admin endpoint of a server's gateway answers: `(namespace, name, admin port)` to
/// the `/inventory` URL.
pub type Locate = Arc<dyn Fn(&str, &str, i32) -> String + Send + Sync>;

/// How the controller reads the inventories.
#[derive(Clone)]
pub struct InventorySettings {
    /// Time between two reads of every running server.
    pub period: Duration,
    /// The inventory URL of a server's gateway.
    pub locate: Locate,
}

impl Default for InventorySettings {
    fn default() -> Self {
        InventorySettings {
            period: DEFAULT_INVENTORY_PERIOD,
            locate: Arc::new(service_url),
        }
    }
}

impl fmt::Debug for InventorySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InventorySettings")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

/// The inventory URL through the server's Service (same name as the server).
pub fn service_url(namespace: &str, name: &str, admin_port: i32) -> String {
    format!("http://{name}.{namespace}.svc:{admin_port}/inventory")
}

/// What one read of a gateway's inventory found.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The tool definitions as the upstream lists them.
    pub tools: Arc<[Value]>,
    /// Why no tool list could be had (the gateway did not answer, or its upstream did not).
    pub problem: Option<String>,
    /// The server's Deployment generation when the read was made.
    pub deployment_generation: i64,
    /// Digest of the tools' hashes and the problem: equal digests, same observation.
    pub digest: String,
}

impl Observation {
    fn new(tools: Vec<Value>, hashes: &[&str], problem: Option<String>, generation: i64) -> Self {
        let mut parts: Vec<&str> = hashes.to_vec();
        parts.sort_unstable();
        let mut material = parts.join(",");
        if let Some(problem) = &problem {
            material.push('|');
            material.push_str(problem);
        }
        Observation {
            tools: tools.into(),
            problem,
            deployment_generation: generation,
            digest: sha256_hex(material.as_bytes()),
        }
    }
}

/// The part of the gateway's `/inventory` document the controller reads.
#[derive(Deserialize)]
struct AdminDocument {
    inventory: AdminInventory,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdminInventory {
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default)]
    refreshed_at: Option<String>,
    #[serde(default)]
    tools: Vec<AdminTool>,
}

#[derive(Deserialize)]
struct AdminTool {
    sha256: String,
    definition: Value,
}

/// Parse an `/inventory` answer.
fn parse(body: &[u8], generation: i64) -> Observation {
    match serde_json::from_slice::<AdminDocument>(body) {
        Ok(document) => {
            let inventory = document.inventory;
            let problem = match (&inventory.refreshed_at, inventory.last_error) {
                // The gateway has never had a tool list from its server.
                (None, error) => Some(format!(
                    "the gateway has not listed the server's tools yet{}",
                    error.map(|e| format!(": {e}")).unwrap_or_default()
                )),
                (Some(_), _) => None,
            };
            let (hashes, tools): (Vec<String>, Vec<Value>) = inventory
                .tools
                .into_iter()
                .map(|t| (t.sha256, t.definition))
                .unzip();
            let hashes: Vec<&str> = hashes.iter().map(String::as_str).collect();
            Observation::new(tools, &hashes, problem, generation)
        }
        Err(e) => Observation::new(
            Vec::new(),
            &[],
            Some(format!("the gateway's inventory is not readable: {e}")),
            generation,
        ),
    }
}

/// The observations of one controller scope, and the task that refreshes them.
pub struct InventoryReader {
    settings: InventorySettings,
    http: Option<reqwest::Client>,
    observed: Mutex<HashMap<ObjectRef<GuardedServer>, Arc<Observation>>>,
    wanted: Mutex<HashSet<ObjectRef<GuardedServer>>>,
    wake: Notify,
}

impl InventoryReader {
    pub fn new(settings: InventorySettings) -> Self {
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(READ_TIMEOUT)
            .timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| tracing::error!(error = %e, "no HTTP client: inventories are not read"))
            .ok();
        InventoryReader {
            settings,
            http,
            observed: Mutex::default(),
            wanted: Mutex::default(),
            wake: Notify::new(),
        }
    }

    /// The last observation of a server's inventory.
    pub fn observation(&self, key: &ObjectRef<GuardedServer>) -> Option<Arc<Observation>> {
        self.observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Read a server's inventory soon (its rollout just completed).
    pub fn request(&self, key: ObjectRef<GuardedServer>) {
        self.wanted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
        self.wake.notify_one();
    }

    /// Forget a deleted server.
    pub fn forget(&self, key: &ObjectRef<GuardedServer>) {
        self.observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Read every running server's inventory each period, and requested ones at once; send the
    /// servers whose inventory changed to `changed`.
    pub async fn run(
        self: Arc<Self>,
        servers: Store<GuardedServer>,
        rollout: impl Fn(&str, &str) -> Option<RolloutState> + Send + Sync,
        changed: mpsc::UnboundedSender<ObjectRef<GuardedServer>>,
    ) {
        let mut next_round = tokio::time::Instant::now() + self.settings.period;
        loop {
            let everything = tokio::select! {
                () = tokio::time::sleep_until(next_round) => true,
                () = self.wake.notified() => false,
            };
            let keys: Vec<ObjectRef<GuardedServer>> = if everything {
                next_round = tokio::time::Instant::now() + self.settings.period;
                let present: HashSet<ObjectRef<GuardedServer>> = servers
                    .state()
                    .iter()
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect();
                self.observed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|key, _| present.contains(key));
                present.into_iter().collect()
            } else {
                self.wanted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .drain()
                    .collect()
            };
            let reads = keys.into_iter().filter_map(|key| {
                let guarded = servers.get(&key)?;
                let server = guarded.0.as_ref().ok()?;
                if server.metadata.deletion_timestamp.is_some() {
                    return None;
                }
                let namespace = server.namespace()?;
                let name = server.name_any();
                // Only a server with a ready pod has a gateway to ask.
                let state = rollout(&namespace, &name).filter(|r| r.ready > 0)?;
                let admin_port = server
                    .spec
                    .gateway
                    .as_ref()
                    .and_then(|g| g.admin_port)
                    .unwrap_or(DEFAULT_ADMIN_PORT);
                let url = (self.settings.locate)(&namespace, &name, admin_port);
                Some((key, url, state.generation))
            });
            let this = &self;
            let mut results = futures::stream::iter(reads)
                .map(|(key, url, generation)| async move {
                    let observation = this.read(&url, generation).await;
                    (key, observation)
                })
                .buffer_unordered(READ_CONCURRENCY);
            while let Some((key, observation)) = results.next().await {
                let digest = observation.digest.clone();
                // Kept even when unchanged: the Deployment generation it was read at may move.
                let previous = self
                    .observed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone(), Arc::new(observation));
                if previous.is_none_or(|o| o.digest != digest) {
                    tracing::debug!(server = %key, %digest, "inventory changed");
                    // The controller has stopped when nobody receives: nothing to do.
                    let _ = changed.unbounded_send(key);
                }
            }
        }
    }

    /// One read of one gateway.
    async fn read(&self, url: &str, generation: i64) -> Observation {
        let unreachable = |why: String| Observation::new(Vec::new(), &[], Some(why), generation);
        let Some(http) = &self.http else {
            return unreachable("the controller has no HTTP client".into());
        };
        let response = match http.get(url).send().await {
            Ok(response) => response,
            Err(e) => {
                return unreachable(format!(
                    "the gateway's admin endpoint {url} does not answer: {e}"
                ));
            }
        };
        if !response.status().is_success() {
            return unreachable(format!(
                "the gateway's admin endpoint {url} answered {}",
                response.status()
            ));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_INVENTORY_BYTES as u64)
        {
            return unreachable(format!(
                "the gateway's inventory is larger than {MAX_INVENTORY_BYTES} bytes"
            ));
        }
        match response.bytes().await {
            Ok(body) if body.len() <= MAX_INVENTORY_BYTES => parse(&body, generation),
            Ok(_) => unreachable(format!(
                "the gateway's inventory is larger than {MAX_INVENTORY_BYTES} bytes"
            )),
            Err(e) => unreachable(format!(
                "reading the gateway's inventory from {url} failed: {e}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_inventory_document_gives_the_definitions_and_a_digest_of_their_hashes() {
        let document = json!({"server": {"namespace": "a", "name": "b"}, "inventory": {
        "refreshedAt": "2026-01-01T00:00:00Z",
        "tools": [
            {"name": "echo", "sha256": "11", "state": "Approved", "reasons": [], "hidden": false,
             "definition": {"name": "echo", "inputSchema": {"type": "object"}}},
        ]}});
        let first = parse(&serde_json::to_vec(&document).unwrap(), 3);
        assert_eq!(first.problem, None);
        assert_eq!(first.tools[0]["name"], "echo");
        assert_eq!(first.deployment_generation, 3);

        let mut changed = document.clone();
        changed["inventory"]["tools"][0]["sha256"] = json!("22");
        let second = parse(&serde_json::to_vec(&changed).unwrap(), 3);
        assert_ne!(
            first.digest, second.digest,
            "a changed definition is a change"
        );
        let again = parse(&serde_json::to_vec(&document).unwrap(), 4);
        assert_eq!(
            first.digest, again.digest,
            "a new rollout with the same tools is not"
        );
    }

    #[test]
    fn a_gateway_without_a_tool_list_or_with_garbage_is_a_problem_not_an_empty_server() {
        let waiting = json!({"inventory": {"lastError": "connection refused", "tools": []}});
        let observation = parse(&serde_json::to_vec(&waiting).unwrap(), 1);
        assert!(
            observation
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("connection refused")),
            "{observation:?}"
        );
        let garbage = parse(b"<html>", 1);
        assert!(garbage.problem.is_some_and(|p| p.contains("not readable")));
    }
}
