//! MCPPolicy status: how many servers a policy selects, how many comply, and which rules fail
//! where. Computed (pure) from the statuses the server reconciles wrote, and written by one
//! task after bursts of server status writes, on policy and prompt version changes, and every
//! minute; the same task writes the MCPPromptVersion statuses ([`super::prompt_status`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use super::GuardedServer;
use super::children::FIELD_MANAGER;
use super::context::namespace_labels;
use super::prompt_status::desired_prompt_version_status;
use super::status::make_condition;
use crate::api::policy::{MCPPolicyStatus, OverrideEnforcement, RuleViolations};
use crate::api::prompt::{MCPPromptVersion, MCPPromptVersionStatus};
use crate::api::server::MCPServerStatus;
use crate::api::{MCPPolicy, MCPServer};

/// Most rules listed in `status.violations`.
pub const MAX_VIOLATIONS: usize = 50;
/// Most example servers per rule.
pub const MAX_EXAMPLES: usize = 10;
/// The policy's condition: every selected server was evaluated with its current generation.
pub const CONDITION_READY: &str = "Ready";
pub const REASON_APPLIED: &str = "Applied";
pub const REASON_APPLYING: &str = "Applying";
/// Time to let a burst of server status writes settle before counting.
const SETTLE: Duration = Duration::from_millis(500);
/// Recount regardless of changes (a safety net).
const RECOUNT_PERIOD: Duration = Duration::from_secs(60);

/// One server a policy selects, as its status describes it.
#[derive(Clone, Copy, Debug)]
pub struct SelectedServer<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub status: Option<&'a MCPServerStatus>,
}

/// The status of `policy` over the servers it selects.
pub fn desired_policy_status(
    policy: &MCPPolicy,
    selected: &[SelectedServer<'_>],
    previous: Option<&MCPPolicyStatus>,
    now: &Time,
) -> MCPPolicyStatus {
    let name = policy.name_any();
    let generation = policy.meta().generation;
    let disabled: BTreeSet<&str> = policy
        .spec
        .overrides
        .iter()
        .filter(|o| o.enforcement == OverrideEnforcement::Disabled)
        .map(|o| o.rule.as_str())
        .collect();
    let mut evaluated = 0;
    let mut compliant = 0;
    let mut failing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for server in selected {
        let Some(status) = server.status else {
            continue;
        };
        let current = status
            .policies
            .iter()
            .any(|p| p.name == name && p.generation == generation);
        if !current {
            continue;
        }
        evaluated += 1;
        let rules: BTreeSet<&str> = status
            .findings
            .iter()
            .map(|f| f.rule.as_str())
            .filter(|rule| !disabled.contains(rule))
            .collect();
        if rules.is_empty() {
            compliant += 1;
        }
        for rule in rules {
            failing
                .entry(rule)
                .or_default()
                .push(format!("{}/{}", server.namespace, server.name));
        }
    }
    let mut violations: Vec<RuleViolations> = failing
        .into_iter()
        .map(|(rule, mut servers)| {
            servers.sort();
            let count = i32::try_from(servers.len()).unwrap_or(i32::MAX);
            servers.truncate(MAX_EXAMPLES);
            RuleViolations {
                rule: rule.to_owned(),
                servers: count,
                examples: servers,
            }
        })
        .collect();
    // Most servers first; the rule id breaks ties so the order is stable.
    violations.sort_by(|a, b| b.servers.cmp(&a.servers).then(a.rule.cmp(&b.rule)));
    violations.truncate(MAX_VIOLATIONS);

    let matched = selected.len();
    let previous_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let ready = evaluated == matched;
    let message = if ready {
        format!("evaluated on all {matched} selected servers")
    } else {
        format!(
            "{evaluated} of {matched} selected servers evaluated with generation {}",
            generation.unwrap_or_default()
        )
    };
    MCPPolicyStatus {
        observed_generation: generation,
        matched_servers: i32::try_from(matched).unwrap_or(i32::MAX),
        compliant_servers: compliant,
        violations,
        conditions: vec![make_condition(
            previous_conditions,
            CONDITION_READY,
            ready,
            if ready {
                REASON_APPLIED
            } else {
                REASON_APPLYING
            },
            message,
            generation,
            now,
        )],
    }
}

/// Whether two statuses differ in anything but their conditions' transition times.
fn differs<S: Clone + PartialEq>(
    a: &S,
    b: &S,
    conditions: fn(&mut S) -> &mut Vec<Condition>,
) -> bool {
    let strip = |s: &S| {
        let mut s = s.clone();
        for c in conditions(&mut s) {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) != strip(b)
}

/// Server-side apply `status` as the status of `name`; true when written. A failure is logged
/// and retried at the next wake or recount.
async fn apply_status<K>(api: &Api<K>, name: &str, status: &impl serde::Serialize) -> bool
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    match api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(kind = %K::kind(&()), name, error = %e, "writing the status failed");
            false
        }
    }
}

/// What the aggregate status task reads.
pub struct AggregateSources {
    pub client: Client,
    pub policies: Store<MCPPolicy>,
    /// The prompt version caches of every scope.
    pub prompt_versions: Vec<Store<MCPPromptVersion>>,
    /// The server caches of every scope this controller manages.
    pub servers: Vec<Store<GuardedServer>>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub clock: fn() -> Time,
    /// Two counts per scope: its caches (policies, namespaces, children) are filled, and its
    /// first list of servers is cached.
    pub caches_ready: tokio::sync::watch::Receiver<usize>,
}

/// Keep every policy's and prompt version's status current until the task is stopped.
pub async fn keep_aggregate_statuses(sources: AggregateSources, wake: Arc<Notify>) {
    // Readiness comes through `caches_ready` (each scope reports its filled caches, then its
    // first full list of servers) rather than `Store::wait_until_ready`: that wakes only the
    // last of several waiters, and the scopes and kube's Controller already wait on these.
    let _ = sources
        .caches_ready
        .clone()
        .wait_for(|ready| *ready >= 2 * sources.servers.len())
        .await;
    let mut written: HashMap<String, MCPPolicyStatus> = HashMap::new();
    let mut written_prompts: HashMap<(String, String), MCPPromptVersionStatus> = HashMap::new();
    loop {
        write_policy_statuses(&sources, &mut written).await;
        write_prompt_version_statuses(&sources, &mut written_prompts).await;
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(RECOUNT_PERIOD) => {}
        }
        tokio::time::sleep(SETTLE).await;
    }
}

/// The valid servers not being deleted, by namespace.
fn servers_by_namespace(servers: &[Arc<GuardedServer>]) -> BTreeMap<&str, Vec<&MCPServer>> {
    let mut grouped: BTreeMap<&str, Vec<&MCPServer>> = BTreeMap::new();
    for server in servers.iter().filter_map(|g| g.0.as_ref().ok()) {
        if server.meta().deletion_timestamp.is_none()
            && let Some(namespace) = server.meta().namespace.as_deref()
        {
            grouped.entry(namespace).or_default().push(server);
        }
    }
    grouped
}

/// A server as the status computations see it.
fn selected(server: &MCPServer) -> Option<SelectedServer<'_>> {
    Some(SelectedServer {
        namespace: server.meta().namespace.as_deref()?,
        name: server.meta().name.as_deref()?,
        status: server.status.as_ref(),
    })
}

async fn write_policy_statuses(
    sources: &AggregateSources,
    written: &mut HashMap<String, MCPPolicyStatus>,
) {
    let servers: Vec<Arc<GuardedServer>> = sources.servers.iter().flat_map(Store::state).collect();
    let by_namespace = servers_by_namespace(&servers);
    // Each namespace's labels once per round, not once per policy and server.
    let labels: Vec<(BTreeMap<String, String>, &Vec<&MCPServer>)> = by_namespace
        .iter()
        .map(|(ns, servers)| (namespace_labels(&sources.namespaces, ns), servers))
        .collect();
    let api: Api<MCPPolicy> = Api::all(sources.client.clone());
    let now = (sources.clock)();
    let policies = sources.policies.state();
    let names: HashSet<String> = policies.iter().map(|p| p.name_any()).collect();
    written.retain(|name, _| names.contains(name));
    for policy in policies {
        let name = policy.name_any();
        let chosen: Vec<SelectedServer<'_>> = labels
            .iter()
            .flat_map(|(namespace_labels, servers)| {
                servers
                    .iter()
                    .filter(|s| policy.selects(namespace_labels, s.labels()))
                    .filter_map(|s| selected(s))
            })
            .collect();
        let previous = written.get(&name).or(policy.status.as_ref());
        let desired = desired_policy_status(&policy, &chosen, previous, &now);
        if previous.is_some_and(|p| !differs(p, &desired, |s| &mut s.conditions)) {
            continue;
        }
        if apply_status(&api, &name, &desired).await {
            written.insert(name, desired);
        }
    }
}

async fn write_prompt_version_statuses(
    sources: &AggregateSources,
    written: &mut HashMap<(String, String), MCPPromptVersionStatus>,
) {
    let versions: Vec<Arc<MCPPromptVersion>> = sources
        .prompt_versions
        .iter()
        .flat_map(Store::state)
        .collect();
    let servers: Vec<Arc<GuardedServer>> = sources.servers.iter().flat_map(Store::state).collect();
    let servers_of = servers_by_namespace(&servers);
    let mut versions_of: BTreeMap<String, Vec<&MCPPromptVersion>> = BTreeMap::new();
    for version in &versions {
        versions_of
            .entry(version.namespace().unwrap_or_default())
            .or_default()
            .push(version);
    }
    let now = (sources.clock)();
    let keys: HashSet<(String, String)> = versions
        .iter()
        .map(|v| (v.namespace().unwrap_or_default(), v.name_any()))
        .collect();
    written.retain(|k, _| keys.contains(k));
    for (namespace, same_namespace) in &versions_of {
        let in_namespace: Vec<SelectedServer<'_>> = servers_of
            .get(namespace.as_str())
            .into_iter()
            .flatten()
            .filter_map(|s| selected(s))
            .collect();
        let api: Api<MCPPromptVersion> = Api::namespaced(sources.client.clone(), namespace);
        for version in same_namespace {
            let k = (namespace.clone(), version.name_any());
            let previous = written.get(&k).or(version.status.as_ref());
            let desired = desired_prompt_version_status(
                version,
                same_namespace,
                &in_namespace,
                previous,
                &now,
            );
            if previous.is_some_and(|p| !differs(p, &desired, |s| &mut s.conditions)) {
                continue;
            }
            if apply_status(&api, &k.1, &desired).await {
                written.insert(k, desired);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::Enforcement;
    use crate::api::server::{AppliedPolicy, Finding};

    fn policy(overrides: &str) -> MCPPolicy {
        let mut policy = MCPPolicy::new(
            "prod",
            serde_saphyr::from_str(&format!("enforcement: Enforce\n{overrides}")).unwrap(),
        );
        policy.metadata.generation = Some(3);
        policy
    }

    fn status(generation: i64, rules: &[&str]) -> MCPServerStatus {
        MCPServerStatus {
            policies: vec![AppliedPolicy {
                name: "prod".into(),
                generation: Some(generation),
                enforcement: Enforcement::Enforce,
            }],
            findings: rules
                .iter()
                .map(|rule| Finding {
                    rule: (*rule).into(),
                    severity: "high".into(),
                    message: "m".into(),
                    enforced: true,
                })
                .collect(),
            ..MCPServerStatus::default()
        }
    }

    /// Servers of namespace `prod`, by name, with their statuses.
    fn in_prod<'a>(
        names: &'a [impl AsRef<str>],
        statuses: &'a [MCPServerStatus],
    ) -> Vec<SelectedServer<'a>> {
        names
            .iter()
            .zip(statuses)
            .map(|(name, status)| SelectedServer {
                namespace: "prod",
                name: name.as_ref(),
                status: Some(status),
            })
            .collect()
    }

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn counts_compliant_servers_and_lists_violations_most_servers_first() {
        let statuses: Vec<MCPServerStatus> = vec![
            status(3, &[]),
            status(3, &["MCP-SUPPLY-001", "MCP-AUTH-001"]),
            status(3, &["MCP-SUPPLY-001", "MCP-SUPPLY-001"]),
            status(3, &["MCP-RATE-001"]),
        ];
        let names = ["a", "b", "c", "d"];
        let selected = in_prod(&names, &statuses);
        // The policy disabled MCP-RATE-001: d complies with it.
        let policy = policy(
            "overrides: [{rule: MCP-RATE-001, enforcement: Disabled, reason: internal only}]",
        );
        let computed = desired_policy_status(&policy, &selected, None, &at(1));
        assert_eq!(
            (computed.matched_servers, computed.compliant_servers),
            (4, 2)
        );
        let rules: Vec<(&str, i32, Vec<&str>)> = computed
            .violations
            .iter()
            .map(|v| {
                (
                    v.rule.as_str(),
                    v.servers,
                    v.examples.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            rules,
            [
                ("MCP-SUPPLY-001", 2, vec!["prod/b", "prod/c"]),
                ("MCP-AUTH-001", 1, vec!["prod/b"]),
            ]
        );
        assert_eq!(computed.conditions[0].reason, REASON_APPLIED);
        assert_eq!(computed.observed_generation, Some(3));
    }

    #[test]
    fn servers_not_yet_evaluated_with_the_current_generation_are_counted_as_pending() {
        let stale = status(2, &[]);
        let selected = [
            SelectedServer {
                namespace: "prod",
                name: "old",
                status: Some(&stale),
            },
            SelectedServer {
                namespace: "prod",
                name: "new",
                status: None,
            },
        ];
        let computed = desired_policy_status(&policy(""), &selected, None, &at(1));
        assert_eq!(
            (computed.matched_servers, computed.compliant_servers),
            (2, 0)
        );
        let ready = &computed.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", REASON_APPLYING)
        );
        assert!(ready.message.contains("0 of 2"), "{}", ready.message);
    }

    #[test]
    fn violations_and_examples_are_bounded() {
        let rules: Vec<String> = (0..60).map(|i| format!("MCP-TEST-{i:03}")).collect();
        let rule_refs: Vec<&str> = rules.iter().map(String::as_str).collect();
        let statuses: Vec<MCPServerStatus> = (0..15).map(|_| status(3, &rule_refs)).collect();
        let names: Vec<String> = (0..15).map(|i| format!("s{i:02}")).collect();
        let selected = in_prod(&names, &statuses);
        let computed = desired_policy_status(&policy(""), &selected, None, &at(1));
        assert_eq!(computed.violations.len(), MAX_VIOLATIONS);
        assert!(
            computed
                .violations
                .iter()
                .all(|v| v.servers == 15 && v.examples.len() == MAX_EXAMPLES)
        );
    }
}
