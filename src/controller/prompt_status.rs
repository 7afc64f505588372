//! MCPPromptVersion status: the content hash clients see in `_meta`, the servers serving this
//! version, and whether another object claims the same prompt and version (and which one wins).
//! Pure; written by the aggregate status task with the policies' statuses.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::policy_status::SelectedServer;
use super::status::make_condition;
use crate::api::prompt::{Lifecycle, MCPPromptVersion, MCPPromptVersionStatus};
use crate::builders::prompts::{content_hash, tie_break_key};
use crate::validation::semantic::check_prompt_version;

/// The version can be served: Active or Deprecated, and not shadowed by a duplicate.
pub const CONDITION_READY: &str = "Ready";
/// Another object in the namespace claims the same prompt and version.
pub const CONDITION_CONFLICT: &str = "Conflict";
pub const REASON_PUBLISHED: &str = "Published";
pub const REASON_RETIRED: &str = "Retired";
/// The content differs from what was published under this version (MCP-PROMPT-001).
pub const REASON_CONTENT_CHANGED: &str = "ContentChanged";
/// The spec passed the API server but cannot be served (what to fix is in the message).
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// A duplicate wins: this object is never served.
pub const REASON_SHADOWED: &str = "Shadowed";
pub const REASON_DUPLICATE_VERSION: &str = "DuplicateVersion";
pub const REASON_UNIQUE: &str = "Unique";

/// The status of `version`, given the prompt versions and the servers of its namespace.
pub fn desired_prompt_version_status(
    version: &MCPPromptVersion,
    same_namespace: &[&MCPPromptVersion],
    servers: &[SelectedServer<'_>],
    previous: Option<&MCPPromptVersionStatus>,
    now: &Time,
) -> MCPPromptVersionStatus {
    let spec = &version.spec;
    let generation = version.metadata.generation;
    let previous_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        make_condition(
            previous_conditions,
            type_,
            ok,
            reason,
            message,
            generation,
            now,
        )
    };
    let claimants: Vec<&MCPPromptVersion> = same_namespace
        .iter()
        .copied()
        .filter(|v| v.spec.prompt == spec.prompt && v.spec.version == spec.version)
        .collect();
    let winner = claimants.iter().copied().min_by_key(|v| tie_break_key(v));
    let is_winner = winner.is_none_or(|w| w.name_any() == version.name_any());
    let others: Vec<String> = claimants
        .iter()
        .map(|v| v.name_any())
        .filter(|n| *n != version.name_any())
        .collect();
    let conflict = if others.is_empty() {
        condition(
            CONDITION_CONFLICT,
            false,
            REASON_UNIQUE,
            format!(
                "the only MCPPromptVersion publishing {} {}",
                spec.prompt, spec.version
            ),
        )
    } else {
        let served = winner.map(ResourceExt::name_any).unwrap_or_default();
        condition(
            CONDITION_CONFLICT,
            true,
            REASON_DUPLICATE_VERSION,
            format!(
                "{} also publish {} {}; {served} is served (the oldest object wins, then the smallest name): delete the others or publish a new version",
                others.join(", "),
                spec.prompt,
                spec.version
            ),
        )
    };
    let serving: Vec<String> = if is_winner {
        let mut names: Vec<String> = servers
            .iter()
            .filter(|s| {
                s.status.is_some_and(|st| {
                    st.prompts.iter().any(|p| {
                        p.name == spec.prompt
                            && p.resolved_version.as_deref() == Some(spec.version.as_str())
                    })
                })
            })
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect();
        names.sort();
        names
    } else {
        Vec::new()
    };
    let problems = check_prompt_version(spec);
    let current_hash = content_hash(version);
    // Recorded once, at first sight: what clients got under this version stays provable.
    let recorded = previous
        .and_then(|p| p.content_hash.clone())
        .unwrap_or_else(|| current_hash.clone());
    let ready = if recorded != current_hash {
        condition(
            CONDITION_READY,
            false,
            REASON_CONTENT_CHANGED,
            format!(
                "never served again: the content changed after publication (recorded {recorded}, now {current_hash}); restore it, or publish the change as a new version (MCP-PROMPT-001)"
            ),
        )
    } else if !problems.is_empty() {
        condition(
            CONDITION_READY,
            false,
            REASON_INVALID_SPEC,
            format!(
                "never served: {}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    } else if !is_winner {
        condition(
            CONDITION_READY,
            false,
            REASON_SHADOWED,
            format!(
                "never served: {} publishes the same version and wins",
                winner.map(ResourceExt::name_any).unwrap_or_default()
            ),
        )
    } else if spec.lifecycle == Lifecycle::Retired {
        condition(
            CONDITION_READY,
            false,
            REASON_RETIRED,
            "retired: no server serves it".into(),
        )
    } else {
        condition(
            CONDITION_READY,
            true,
            REASON_PUBLISHED,
            format!(
                "{:?}; served by {} server(s)",
                spec.lifecycle,
                serving.len()
            ),
        )
    };
    MCPPromptVersionStatus {
        observed_generation: generation,
        servers: serving,
        content_hash: Some(recorded),
        conditions: vec![ready, conflict],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::server::{MCPServerStatus, ResolvedPrompt};

    fn version(name: &str, v: &str, created: i64, lifecycle: &str) -> MCPPromptVersion {
        let mut p = MCPPromptVersion::new(
            name,
            serde_saphyr::from_str(&format!(
                "prompt: triage\nversion: '{v}'\nlifecycle: {lifecycle}\nmessages: [{{role: user, text: hi}}]\n"
            ))
            .unwrap(),
        );
        p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        p
    }

    fn at() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap())
    }

    fn condition<'a>(s: &'a MCPPromptVersionStatus, type_: &str) -> (&'a str, &'a str) {
        let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn lists_the_servers_serving_it_and_the_hash_clients_see() {
        let v = version("triage-1-2-0", "1.2.0", 10, "Active");
        let serving = MCPServerStatus {
            prompts: vec![ResolvedPrompt {
                name: "triage".into(),
                requested: "^1.2".into(),
                resolved_version: Some("1.2.0".into()),
                deprecated: false,
            }],
            ..MCPServerStatus::default()
        };
        let elsewhere = MCPServerStatus::default();
        let servers = [
            SelectedServer {
                namespace: "t",
                name: "b",
                status: Some(&serving),
            },
            SelectedServer {
                namespace: "t",
                name: "c",
                status: Some(&elsewhere),
            },
        ];
        let status = desired_prompt_version_status(&v, &[&v], &servers, None, &at());
        assert_eq!(status.servers, ["t/b"]);
        assert_eq!(
            status.content_hash.as_deref(),
            Some(content_hash(&v).as_str())
        );
        assert_eq!(
            condition(&status, CONDITION_READY),
            ("True", REASON_PUBLISHED)
        );
        assert_eq!(
            condition(&status, CONDITION_CONFLICT),
            ("False", REASON_UNIQUE)
        );
    }

    #[test]
    fn a_duplicate_says_which_object_wins_and_why() {
        let older = version("triage-a", "1.2.0", 10, "Active");
        let newer = version("triage-b", "1.2.0", 20, "Active");
        let all = [&older, &newer];
        let loser = desired_prompt_version_status(&newer, &all, &[], None, &at());
        assert_eq!(
            condition(&loser, CONDITION_READY),
            ("False", REASON_SHADOWED)
        );
        let (_, reason) = condition(&loser, CONDITION_CONFLICT);
        assert_eq!(reason, REASON_DUPLICATE_VERSION);
        let message = &loser.conditions[1].message;
        assert!(
            message.contains("triage-a is served") && message.contains("oldest"),
            "{message}"
        );
        let winner = desired_prompt_version_status(&older, &all, &[], None, &at());
        assert_eq!(
            condition(&winner, CONDITION_READY),
            ("True", REASON_PUBLISHED)
        );
        assert_eq!(
            condition(&winner, CONDITION_CONFLICT),
            ("True", REASON_DUPLICATE_VERSION)
        );
        let mut invalid = version("triage-d", "1.5.0", 5, "Active");
        invalid.spec.messages[0].text = Some("see {{ticket}}".into());
        let status = desired_prompt_version_status(&invalid, &[&invalid], &[], None, &at());
        assert_eq!(
            condition(&status, CONDITION_READY),
            ("False", REASON_INVALID_SPEC)
        );
        assert!(
            status.conditions[0]
                .message
                .contains("spec.messages[0].text"),
            "{}",
            status.conditions[0].message
        );
        let retired = version("triage-c", "1.3.0", 5, "Retired");
        let status = desired_prompt_version_status(&retired, &[&retired], &[], None, &at());
        assert_eq!(
            condition(&status, CONDITION_READY),
            ("False", REASON_RETIRED)
        );
    }
}
