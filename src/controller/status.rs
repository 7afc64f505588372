//! The MCPServer status the controller wants, computed from what it built and observed.
//! Pure: the caller supplies the clock.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::server::{MCPServerStatus, ResolvedPrompt, ToolStatus};
use crate::builders::PromptOutcome;
use crate::governance::Evaluation;
use crate::governance::pinning::{STATE_APPROVED, ToolAssessment};

/// Condition types (each documented where it is set).
pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_PROGRESSING: &str = "Progressing";
pub const CONDITION_DEGRADED: &str = "Degraded";
pub const CONDITION_PROMPTS_RESOLVED: &str = "PromptsResolved";
pub const CONDITION_AUTH_CONFIGURED: &str = "AuthConfigured";
/// Whether the gateway's live tools all pass the tool checks (pins, poisoning, hygiene).
pub const CONDITION_TOOLS_VERIFIED: &str = "ToolsVerified";
/// Whether the server passes every governance rule the selecting policies apply.
pub const CONDITION_POLICY_COMPLIANT: &str = "PolicyCompliant";

/// Condition reasons.
pub const REASON_ROLLED_OUT: &str = "RolledOut";
pub const REASON_ROLLING_OUT: &str = "RollingOut";
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
pub const REASON_APPLY_FAILED: &str = "ApplyFailed";
pub const REASON_AS_EXPECTED: &str = "AsExpected";
pub const REASON_ALL_RESOLVED: &str = "AllResolved";
pub const REASON_NOT_RESOLVED: &str = "NotResolved";
pub const REASON_NO_PROMPTS: &str = "NoPrompts";
pub const REASON_TOKENS_VALIDATED: &str = "TokensValidated";
pub const REASON_UNAUTHENTICATED: &str = "Unauthenticated";
pub const REASON_COMPLIANT: &str = "Compliant";
/// Rules fail that only report (Audit).
pub const REASON_VIOLATIONS_REPORTED: &str = "ViolationsReported";
/// An enforced rule fails: the change is not rolled out.
pub const REASON_BLOCKED_BY_POLICY: &str = "BlockedByPolicy";

/// Every live tool is approved and passes the checks.
pub const REASON_ALL_APPROVED: &str = "AllApproved";
/// The gateway hides tools until they are approved or fixed.
pub const REASON_TOOLS_QUARANTINED: &str = "ToolsQuarantined";
/// Tools fail checks and are still served (no Enforce policy).
pub const REASON_TOOLS_NOT_APPROVED: &str = "ToolsNotApproved";
/// The gateway's inventory could not be read, or it has no tool list yet.
pub const REASON_INVENTORY_UNAVAILABLE: &str = "InventoryUnavailable";

/// Phases shown in `status.phase`.
pub const PHASE_READY: &str = "Ready";
pub const PHASE_PROGRESSING: &str = "Progressing";
pub const PHASE_DEGRADED: &str = "Degraded";
pub const PHASE_INVALID: &str = "Invalid";
/// An enforced rule fails and nothing was rolled out yet.
pub const PHASE_BLOCKED: &str = "Blocked";

/// The rollout state of the server's Deployment, as last observed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RolloutState {
    pub generation: i64,
    pub observed_generation: i64,
    /// Desired pods (`spec.replicas`).
    pub desired: i32,
    pub replicas: i32,
    pub updated: i32,
    pub ready: i32,
}

impl RolloutState {
    /// The Deployment controller has seen the latest spec and every desired pod is updated and ready.
    pub fn complete(&self) -> bool {
        self.observed_generation >= self.generation
            && self.updated >= self.desired
            && self.ready >= self.desired
    }

    /// The Deployment controller has processed the latest spec (whatever the pods' state).
    pub fn observed(&self) -> bool {
        self.observed_generation >= self.generation
    }
}

/// What went into one reconcile, for its status.
#[derive(Clone, Debug, Default)]
pub struct StatusInput<'a> {
    pub generation: Option<i64>,
    pub endpoint: Option<String>,
    pub selector: Option<String>,
    pub rollout: Option<RolloutState>,
    pub prompts: &'a [PromptOutcome],
    pub authenticated: bool,
    /// The spec failed validation: what to fix.
    pub invalid: Option<String>,
    /// Applying the children failed: why.
    pub apply_error: Option<String>,
    /// The governance evaluation (absent for an invalid spec).
    pub governance: Option<&'a Evaluation>,
    /// The live tools, when the gateway's inventory was read.
    pub live_tools: Option<LiveTools<'a>>,
}

/// The gateway's live tools, as assessed, or why there are none.
#[derive(Clone, Copy, Debug)]
pub struct LiveTools<'a> {
    pub assessments: &'a [ToolAssessment],
    /// Why the inventory could not be had.
    pub problem: Option<&'a str>,
}

/// The `ToolsVerified` condition's status, reason and message.
fn tools_verified(live: &LiveTools<'_>) -> (&'static str, &'static str, String) {
    if let Some(problem) = live.problem {
        return ("Unknown", REASON_INVENTORY_UNAVAILABLE, problem.to_owned());
    }
    let describe = |tools: Vec<&ToolAssessment>| {
        tools
            .iter()
            .map(|t| format!("{} ({})", t.name, t.state))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let hidden: Vec<&ToolAssessment> = live.assessments.iter().filter(|t| t.hidden).collect();
    let unapproved: Vec<&ToolAssessment> = live
        .assessments
        .iter()
        .filter(|t| !t.hidden && t.state != STATE_APPROVED)
        .collect();
    if !hidden.is_empty() {
        (
            "False",
            REASON_TOOLS_QUARANTINED,
            format!(
                "{} of {} tools hidden by the gateway until approved or fixed (see status.tools): {}",
                hidden.len(),
                live.assessments.len(),
                describe(hidden)
            ),
        )
    } else if !unapproved.is_empty() {
        (
            "False",
            REASON_TOOLS_NOT_APPROVED,
            format!(
                "{} of {} tools fail checks and are still served (see status.tools): {}",
                unapproved.len(),
                live.assessments.len(),
                describe(unapproved)
            ),
        )
    } else {
        (
            "True",
            REASON_ALL_APPROVED,
            format!("all {} tools pass the tool checks", live.assessments.len()),
        )
    }
}

/// Compute the desired status; conditions keep their `lastTransitionTime` unless their status flips.
pub fn desired_status(
    input: &StatusInput<'_>,
    previous: Option<&MCPServerStatus>,
    now: &Time,
) -> MCPServerStatus {
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
            input.generation,
            now,
        )
    };
    let mut conditions = Vec::new();
    let phase;
    if let Some(problem) = &input.invalid {
        phase = PHASE_INVALID;
        conditions.push(condition(
            CONDITION_READY,
            false,
            REASON_INVALID_SPEC,
            format!("the spec is invalid: {problem}"),
        ));
        conditions.push(condition(
            CONDITION_PROGRESSING,
            false,
            REASON_INVALID_SPEC,
            "waiting for a corrected spec".into(),
        ));
        conditions.push(condition(
            CONDITION_DEGRADED,
            true,
            REASON_INVALID_SPEC,
            problem.clone(),
        ));
    } else if let Some(error) = &input.apply_error {
        phase = PHASE_DEGRADED;
        let ready = input.rollout.as_ref().is_some_and(RolloutState::complete);
        conditions.push(condition(
            CONDITION_READY,
            ready,
            REASON_APPLY_FAILED,
            format!("the last change could not be applied: {error}"),
        ));
        conditions.push(condition(
            CONDITION_PROGRESSING,
            true,
            REASON_APPLY_FAILED,
            "retrying with backoff".into(),
        ));
        conditions.push(condition(
            CONDITION_DEGRADED,
            true,
            REASON_APPLY_FAILED,
            error.clone(),
        ));
    } else {
        let rollout = input.rollout.unwrap_or_default();
        let complete = input.rollout.is_some() && rollout.complete();
        phase = if complete {
            PHASE_READY
        } else {
            PHASE_PROGRESSING
        };
        let ready_message = if complete {
            format!("{}/{} replicas ready", rollout.ready, rollout.desired)
        } else {
            format!(
                "rolling out: {}/{} replicas updated, {} ready",
                rollout.updated, rollout.desired, rollout.ready
            )
        };
        conditions.push(condition(
            CONDITION_READY,
            complete,
            if complete {
                REASON_ROLLED_OUT
            } else {
                REASON_ROLLING_OUT
            },
            ready_message.clone(),
        ));
        conditions.push(condition(
            CONDITION_PROGRESSING,
            !complete,
            if complete {
                REASON_ROLLED_OUT
            } else {
                REASON_ROLLING_OUT
            },
            ready_message,
        ));
        conditions.push(condition(
            CONDITION_DEGRADED,
            false,
            REASON_AS_EXPECTED,
            "no problems found".into(),
        ));
    }

    let unresolved: Vec<String> = input
        .prompts
        .iter()
        .filter_map(|p| {
            p.problem
                .as_ref()
                .map(|problem| format!("{} {}: {problem}", p.name, p.requested))
        })
        .collect();
    conditions.push(if input.prompts.is_empty() {
        condition(
            CONDITION_PROMPTS_RESOLVED,
            true,
            REASON_NO_PROMPTS,
            "the server references no managed prompts".into(),
        )
    } else if unresolved.is_empty() {
        condition(
            CONDITION_PROMPTS_RESOLVED,
            true,
            REASON_ALL_RESOLVED,
            format!("{} prompt(s) resolved", input.prompts.len()),
        )
    } else {
        condition(
            CONDITION_PROMPTS_RESOLVED,
            false,
            REASON_NOT_RESOLVED,
            unresolved.join("; "),
        )
    });
    conditions.push(if input.authenticated {
        condition(
            CONDITION_AUTH_CONFIGURED,
            true,
            REASON_TOKENS_VALIDATED,
            "the gateway validates OAuth access tokens".into(),
        )
    } else {
        condition(
            CONDITION_AUTH_CONFIGURED,
            false,
            REASON_UNAUTHENTICATED,
            "spec.authentication is not set: the gateway accepts unauthenticated callers".into(),
        )
    });

    if let Some(live) = &input.live_tools {
        let (status, reason, message) = tools_verified(live);
        conditions.push(make_condition_status(
            previous_conditions,
            CONDITION_TOOLS_VERIFIED,
            status,
            reason,
            message,
            input.generation,
            now,
        ));
    }

    let blocked = input.governance.is_some_and(Evaluation::blocked);
    if let Some(evaluation) = input.governance {
        let failed: Vec<String> = evaluation
            .checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| {
                format!(
                    "{}{}: {}",
                    c.rule.id,
                    if c.enforced { " (enforced)" } else { "" },
                    c.problems.join("; ")
                )
            })
            .collect();
        conditions.push(if failed.is_empty() {
            condition(
                CONDITION_POLICY_COMPLIANT,
                true,
                REASON_COMPLIANT,
                format!("all {} evaluated rules pass", evaluation.checks.len()),
            )
        } else if blocked {
            condition(
                CONDITION_POLICY_COMPLIANT,
                false,
                REASON_BLOCKED_BY_POLICY,
                format!(
                    "not rolled out until the enforced rules pass (the last compliant rollout keeps serving): {}",
                    failed.join(" | ")
                ),
            )
        } else {
            condition(
                CONDITION_POLICY_COMPLIANT,
                false,
                REASON_VIOLATIONS_REPORTED,
                failed.join(" | "),
            )
        });
    }
    let phase = if blocked && input.rollout.is_none() && input.invalid.is_none() {
        PHASE_BLOCKED
    } else {
        phase
    };

    // Conditions other controllers (governance) own are kept as they are.
    for kept in previous_conditions {
        if !conditions.iter().any(|c| c.type_ == kept.type_) {
            conditions.push(kept.clone());
        }
    }

    let rollout = input.rollout.as_ref();
    MCPServerStatus {
        observed_generation: input.generation,
        phase: Some(phase.to_string()),
        endpoint: input.endpoint.clone(),
        replicas: rollout.map(|r| r.replicas),
        ready_replicas: rollout.map(|r| r.ready),
        selector: input.selector.clone(),
        conditions,
        prompts: input
            .prompts
            .iter()
            .map(|p| ResolvedPrompt {
                name: p.name.clone(),
                requested: p.requested.clone(),
                resolved_version: p.resolved_version.clone(),
                deprecated: p.deprecated,
            })
            .collect(),
        findings: input
            .governance
            .map(Evaluation::findings)
            .unwrap_or_default(),
        compliance: input.governance.map(Evaluation::compliance),
        tools: match &input.live_tools {
            Some(live) => live
                .assessments
                .iter()
                .map(|t| ToolStatus {
                    name: t.name.clone(),
                    sha256: t.sha256.clone(),
                    state: t.state.to_owned(),
                    reasons: t.reasons(),
                })
                .collect(),
            None => previous.map(|p| p.tools.clone()).unwrap_or_default(),
        },
        ..previous.cloned().unwrap_or_default()
    }
}

pub(crate) fn make_condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    make_condition_status(previous, type_, status, reason, message, generation, now)
}

fn make_condition_status(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Whether two statuses differ in anything but condition timestamps.
pub fn differs_ignoring_timestamps(a: &MCPServerStatus, b: &MCPServerStatus) -> bool {
    let epoch = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let strip = |s: &MCPServerStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = epoch.clone();
        }
        s
    };
    strip(a) != strip(b)
}

/// The status of condition `type_`, if present.
pub fn condition_status<'a>(status: &'a MCPServerStatus, type_: &str) -> Option<&'a str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn ready_rollout() -> RolloutState {
        RolloutState {
            generation: 1,
            observed_generation: 1,
            desired: 2,
            replicas: 2,
            updated: 2,
            ready: 2,
        }
    }

    #[test]
    fn transition_time_moves_only_when_a_condition_flips() {
        let input = StatusInput {
            generation: Some(1),
            rollout: Some(ready_rollout()),
            ..Default::default()
        };
        let first = desired_status(&input, None, &at(100));
        assert_eq!(first.phase.as_deref(), Some(PHASE_READY));
        let again = desired_status(&input, Some(&first), &at(200));
        assert!(!differs_ignoring_timestamps(&first, &again));
        assert_eq!(
            again.conditions[0].last_transition_time,
            at(100),
            "unchanged conditions keep their time"
        );

        let rolling = StatusInput {
            rollout: Some(RolloutState {
                ready: 1,
                ..ready_rollout()
            }),
            ..input.clone()
        };
        let flipped = desired_status(&rolling, Some(&again), &at(300));
        assert!(differs_ignoring_timestamps(&again, &flipped));
        let ready = flipped
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_READY)
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), &ready.last_transition_time),
            ("False", &at(300))
        );
        assert_eq!(ready.observed_generation, Some(1));
    }

    #[test]
    fn invalid_spec_and_prompt_problems_are_explained() {
        let prompts = vec![PromptOutcome {
            name: "triage".into(),
            requested: "^9".into(),
            resolved_version: None,
            resolved_object: None,
            deprecated: false,
            problem: Some("no Active or Deprecated MCPPromptVersion matches".into()),
            altered: Vec::new(),
        }];
        let input = StatusInput {
            generation: Some(2),
            prompts: &prompts,
            invalid: Some("spec.port: taken".into()),
            ..Default::default()
        };
        let status = desired_status(&input, None, &at(1));
        assert_eq!(status.phase.as_deref(), Some(PHASE_INVALID));
        assert_eq!(condition_status(&status, CONDITION_DEGRADED), Some("True"));
        assert_eq!(
            condition_status(&status, CONDITION_PROMPTS_RESOLVED),
            Some("False")
        );
        let prompts_condition = status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_PROMPTS_RESOLVED)
            .unwrap();
        assert!(prompts_condition.message.contains("triage ^9"));
    }

    #[test]
    fn conditions_owned_elsewhere_are_kept() {
        let mut previous = MCPServerStatus::default();
        previous.conditions.push(Condition {
            type_: "PolicyCompliant".into(),
            status: "False".into(),
            reason: "Violations".into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: at(5),
        });
        let status = desired_status(&StatusInput::default(), Some(&previous), &at(9));
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "PolicyCompliant")
        );
    }

    #[test]
    fn tools_verified_says_which_tools_are_hidden_or_unapproved_or_why_none_were_read() {
        use crate::governance::pinning::{STATE_FLAGGED, STATE_QUARANTINED};
        let tool = |name: &str, state: &'static str, hidden: bool| ToolAssessment {
            name: name.into(),
            sha256: "ab".repeat(32),
            state,
            failures: Vec::new(),
            hidden,
        };
        let verdict = |tools: &[ToolAssessment], problem: Option<&str>| {
            let input = StatusInput {
                live_tools: Some(LiveTools {
                    assessments: tools,
                    problem,
                }),
                ..Default::default()
            };
            let status = desired_status(&input, None, &at(1));
            let condition = status
                .conditions
                .iter()
                .find(|c| c.type_ == CONDITION_TOOLS_VERIFIED)
                .unwrap()
                .clone();
            (status, condition)
        };
        let (status, ok) = verdict(&[tool("echo", STATE_APPROVED, false)], None);
        assert_eq!(
            (ok.status.as_str(), ok.reason.as_str()),
            ("True", REASON_ALL_APPROVED)
        );
        assert_eq!(status.tools[0].sha256, "ab".repeat(32));

        let (_, hidden) = verdict(
            &[
                tool("echo", STATE_APPROVED, false),
                tool("add", STATE_QUARANTINED, true),
                tool("time", STATE_FLAGGED, false),
            ],
            None,
        );
        assert_eq!(hidden.reason, REASON_TOOLS_QUARANTINED);
        assert!(
            hidden.message.contains("1 of 3 tools hidden")
                && hidden.message.contains("add (Quarantined)")
        );

        let (_, served) = verdict(&[tool("time", STATE_FLAGGED, false)], None);
        assert_eq!(
            (served.status.as_str(), served.reason.as_str()),
            ("False", REASON_TOOLS_NOT_APPROVED)
        );

        let (status, unknown) = verdict(&[], Some("the gateway's admin endpoint does not answer"));
        assert_eq!(
            (unknown.status.as_str(), unknown.reason.as_str()),
            ("Unknown", REASON_INVENTORY_UNAVAILABLE)
        );
        assert!(status.tools.is_empty());
    }
}
