//! Reconcile one MCPServer, as a pipeline: read what it references from the caches, validate,
//! build the desired objects (pure), apply what differs, delete what is no longer wanted, and
//! write the status when it changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{Span, field, instrument};

use crate::api::server::{AppliedPolicy, MCPServerStatus};
use crate::api::{MCPPolicy, MCPServer};
use crate::builders::labels::selector_string;
use crate::builders::{self, DesiredState, ServerInputs};
use crate::governance;
use crate::governance::pinning::{
    STATE_APPROVED, STATE_QUARANTINED, ToolAssessment, ToolCheckSettings, assess,
};
use crate::validation::semantic;

use super::children::{self, ChildKind, DesiredChild, FIELD_MANAGER, child_identity};
use super::context::Context;
use super::index::digest;
use super::status::{self, LiveTools, RolloutState, StatusInput};
use super::{Error, GuardedServer};

/// How often every server is reconciled regardless of events: a safety net, the watches do
/// the real work.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(3600);
/// Requeue when the status was held back waiting for the rollout to show in the cache.
const ROLLOUT_STATUS_FALLBACK: Duration = Duration::from_secs(6);
/// Requeue while a rollout is in progress.
const ROLLOUT_RECHECK: Duration = Duration::from_secs(10);
/// Event reasons.
pub const EVENT_INVALID_SPEC: &str = "InvalidSpec";
pub const EVENT_APPLY_FAILED: &str = "ApplyFailed";
pub const EVENT_PROMPT_DEPRECATED: &str = "PromptDeprecated";
pub const EVENT_PROMPT_UNRESOLVED: &str = "PromptUnresolved";
pub const EVENT_NOT_READY: &str = "NotReady";
/// The server started failing governance rules (Warning; names the rules and the fix).
pub const EVENT_POLICY_VIOLATION: &str = "PolicyViolation";
/// An enforced rule fails: changes are not rolled out (Warning).
pub const EVENT_ROLLOUT_BLOCKED: &str = "RolloutBlocked";
/// The server passes every rule again (Normal).
pub const EVENT_POLICY_COMPLIANT: &str = "PolicyCompliant";

/// Live tools started being hidden by the gateway (Warning; names the tools and why).
pub const EVENT_TOOL_QUARANTINED: &str = "ToolQuarantined";
/// Live tools started failing checks while still served (Warning).
pub const EVENT_TOOL_NOT_APPROVED: &str = "ToolNotApproved";

/// Event reason for an MCPServer the controller cannot read.
pub const EVENT_MALFORMED: &str = "Malformed";

#[instrument(skip(guarded, ctx), fields(server = %guarded.name_any(), namespace = field::Empty, trace_id = field::Empty))]
pub async fn reconcile(guarded: Arc<GuardedServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let server = match &guarded.0 {
        Ok(server) => server,
        Err(invalid) => {
            // Stored before a schema change, or written around validation: say so and wait.
            let reference = guarded.object_ref(&());
            let note = format!(
                "the MCPServer cannot be read ({}); fix or re-create it",
                invalid.error
            );
            ctx.publish_about(&reference, EventType::Warning, EVENT_MALFORMED, &note)
                .await;
            ctx.metrics
                .observe_reconcile(started.elapsed(), Some(&Error::InvalidSpec(note)));
            return Ok(Action::await_change());
        }
    };
    let namespace = server
        .namespace()
        .ok_or_else(|| Error::Internal("MCPServer without namespace".into()))?;
    Span::current().record("namespace", namespace.as_str());
    if server.meta().deletion_timestamp.is_some() {
        // Children go with it through their owner references; nothing outside Kubernetes to clean.
        ctx.baselines.forget_server(&namespace, &server.name_any());
        if let Some(reader) = &ctx.inventories {
            reader.forget(&ObjectRef::from_obj(guarded.as_ref()));
        }
        return Ok(Action::await_change());
    }
    let result = reconcile_inner(server, &namespace, &ctx).await;
    ctx.metrics
        .observe_reconcile(started.elapsed(), result.as_ref().err());
    if result.is_ok() {
        ctx.backoff.reset(&ObjectRef::from_obj(guarded.as_ref()));
    }
    result
}

async fn reconcile_inner(
    server: &MCPServer,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    let name = server.name_any();
    // 1. Read what the server references, from the caches.
    let namespace_labels = ctx.namespace_labels(namespace);
    let policies: Vec<Arc<MCPPolicy>> = ctx
        .stores
        .policies
        .state()
        .into_iter()
        .filter(|p| p.selects(&namespace_labels, server.labels()))
        .collect();
    let mut policies = policies;
    policies.sort_by_key(|p| p.name_any());
    let policy_refs: Vec<&MCPPolicy> = policies.iter().map(|p| p.as_ref()).collect();
    let prompt_versions: Vec<_> = ctx
        .stores
        .prompt_versions
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace))
        .map(|p| p.as_ref().clone())
        .collect();
    let applied_policies: Vec<AppliedPolicy> = policies
        .iter()
        .map(|p| AppliedPolicy {
            name: p.name_any(),
            generation: p.meta().generation,
            enforcement: p.spec.enforcement,
        })
        .collect();

    // 2. Validate.
    let problems = semantic::check_server(&server.spec);
    if !problems.is_empty() {
        let message = problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let input = StatusInput {
            generation: server.meta().generation,
            invalid: Some(message.clone()),
            ..Default::default()
        };
        let became_invalid =
            server.status.as_ref().and_then(|s| s.phase.as_deref()) != Some(status::PHASE_INVALID);
        write_status(server, ctx, &input, &applied_policies).await?;
        if became_invalid {
            ctx.publish(server, EventType::Warning, EVENT_INVALID_SPEC, &message)
                .await;
        }
        return Err(Error::InvalidSpec(message));
    }

    // 3. Build (pure).
    let desired = builders::build(
        ServerInputs {
            server,
            policies: &policy_refs,
            prompt_versions: &prompt_versions,
        },
        &ctx.build,
    )?;

    // 4. Govern: a server failing an enforced rule is not rolled out; what runs keeps running.
    let mut evaluation = governance::evaluate(server, &policy_refs, &desired);
    let blocked = evaluation.blocked();
    // The live tools, assessed with the checks the gateway runs under this configuration.
    let server_key = ObjectRef::<GuardedServer>::new(&name).within(namespace);
    let observation = ctx
        .inventories
        .as_ref()
        .and_then(|reader| reader.observation(&server_key));
    let listed = observation.as_ref().filter(|seen| seen.problem.is_none());
    let assessments: Vec<ToolAssessment> = listed
        .map(|seen| {
            assess(
                &seen.tools,
                &ToolCheckSettings::for_gateway(&desired.gateway_config.tools),
            )
        })
        .unwrap_or_default();
    if listed.is_some() {
        evaluation.add_live(&assessments, &policy_refs);
    }

    // 5. Apply what differs; delete what is no longer wanted.
    let mut applied_deployment = None;
    let mut apply_error = None;
    let children = if blocked {
        Vec::new()
    } else {
        desired_children(&desired)?
    };
    for child in children {
        let observed = ctx.observed_child(child.kind, &child.namespace, &child.name);
        if !ctx
            .baselines
            .needs_apply(child.key(), &child.hash, observed)
        {
            continue;
        }
        tracing::debug!(kind = child.kind.as_str(), child = %child.name, cached = ?observed, desired_hash = %child.hash, "applying");
        match children::apply(&ctx.client, &ctx.baselines, &child).await {
            Ok(applied) => {
                ctx.metrics.child_written(child.kind);
                if child.kind == ChildKind::Deployment {
                    applied_deployment = Some(applied);
                }
            }
            Err(e) => {
                apply_error = Some(e);
                break;
            }
        }
    }
    if apply_error.is_none() && !blocked {
        for kind in [
            ChildKind::HorizontalPodAutoscaler,
            ChildKind::PodDisruptionBudget,
        ] {
            let wanted = match kind {
                ChildKind::HorizontalPodAutoscaler => desired.autoscaler.is_some(),
                _ => desired.disruption_budget.is_some(),
            };
            let Some(observed) = ctx.observed_child(kind, namespace, &name) else {
                continue;
            };
            let ours = observed.owner_uid.is_some()
                && observed.owner_uid == server.meta().uid.as_deref().map(|u| digest(&[u]));
            if !wanted && ours {
                if let Err(e) = children::delete(&ctx.client, kind, namespace, &name).await {
                    apply_error = Some(e);
                    break;
                }
                ctx.metrics.child_written(kind);
            }
        }
    }

    // 6. Status from what was applied and observed.
    let rollout = match &applied_deployment {
        Some(applied) => rollout_from_value(applied),
        None => ctx.rollout(namespace, &name),
    };
    let input = StatusInput {
        generation: server.meta().generation,
        endpoint: Some(desired.endpoint.clone()),
        selector: Some(selector_string(&name)),
        rollout,
        prompts: &desired.prompts,
        authenticated: server.spec.authentication.is_some(),
        invalid: None,
        apply_error: apply_error.as_ref().map(ToString::to_string),
        governance: Some(&evaluation),
        live_tools: observation.as_ref().map(|seen| LiveTools {
            assessments: &assessments,
            problem: seen.problem.as_deref(),
        }),
    };
    // A Deployment spec written moments ago whose rollout the cache does not show yet: its
    // status is written once it does (the Deployment's change wakes this server), which saves
    // a write per change. Past the grace period the status is written regardless.
    let deployment_key = child_identity(ChildKind::Deployment, namespace, &name);
    let rollout_unknown = apply_error.is_none()
        && !blocked
        && ctx
            .baselines
            .unobserved_generation(deployment_key)
            .is_some_and(|g| {
                rollout
                    .as_ref()
                    .is_none_or(|r| r.generation < g || r.observed_generation < g)
            });
    if !rollout_unknown {
        let written = write_status(server, ctx, &input, &applied_policies).await?;
        if let Some((previous, new_status)) = written {
            announce_transitions(server, ctx, &previous, &new_status, &desired).await;
        }
    }
    if let Some(error) = apply_error {
        ctx.publish(
            server,
            EventType::Warning,
            EVENT_APPLY_FAILED,
            &error.to_string(),
        )
        .await;
        return Err(error);
    }
    let complete = rollout.as_ref().is_some_and(RolloutState::complete);
    // A finished rollout may run a new gateway: read its inventory now, not at the next period.
    if let (Some(reader), Some(state)) = (&ctx.inventories, &rollout)
        && complete
        && observation
            .as_ref()
            .is_none_or(|seen| seen.deployment_generation < state.generation)
    {
        reader.request(server_key);
    }
    Ok(if rollout_unknown {
        Action::requeue(ROLLOUT_STATUS_FALLBACK)
    } else if complete {
        // The hourly safety net is one controller-wide trigger (`RESYNC_PERIOD`), not a timer
        // per server: that would hold scheduler state for every Ready server.
        Action::await_change()
    } else {
        Action::requeue(ROLLOUT_RECHECK)
    })
}

/// The desired children in apply order, each annotated with its hash.
fn desired_children(desired: &DesiredState) -> Result<Vec<DesiredChild>, Error> {
    desired
        .objects()?
        .into_iter()
        .map(|object| {
            let kind = object
                .get("kind")
                .and_then(Value::as_str)
                .and_then(ChildKind::from_kind)
                .ok_or_else(|| Error::Internal("a built object has an unknown kind".into()))?;
            Ok(DesiredChild::new(kind, object))
        })
        .collect()
}

fn rollout_from_value(deployment: &Value) -> Option<RolloutState> {
    let d: Deployment = serde_json::from_value(deployment.clone()).ok()?;
    Some(rollout_from_deployment(&d))
}

/// The rollout state of a Deployment.
pub fn rollout_from_deployment(d: &Deployment) -> RolloutState {
    let status = d.status.clone().unwrap_or_default();
    RolloutState {
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: status.observed_generation.unwrap_or(0),
        desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        replicas: status.replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
        ready: status.ready_replicas.unwrap_or(0),
    }
}

/// Write the status when it differs from the current one (ignoring timestamps). Returns the
/// status it replaced and the status written, if any.
async fn write_status(
    server: &MCPServer,
    ctx: &Context,
    input: &StatusInput<'_>,
    policies: &[AppliedPolicy],
) -> Result<Option<(MCPServerStatus, MCPServerStatus)>, Error> {
    // The cache may not show the controller's own last status write yet: compare with that.
    let key = ObjectRef::<GuardedServer>::new(&server.name_any())
        .within(&server.namespace().unwrap_or_default());
    // The reconcile's copy may predate the cache's: take the newest the cache has.
    let latest = ctx.stores.servers.get(&key);
    let newest = match latest.as_ref().and_then(|g| g.0.as_ref().ok()) {
        Some(cached) if version_of(cached) >= version_of(server) => cached,
        _ => server,
    };
    let written = ctx
        .status_memory
        .newer_than(&key, newest.meta().resource_version.as_deref());
    let previous = written.as_ref().or(newest.status.as_ref());
    let mut desired = status::desired_status(input, previous, &ctx.now());
    desired.policies = policies.to_vec();
    if previous.is_some_and(|p| !status::differs_ignoring_timestamps(p, &desired)) {
        return Ok(None);
    }
    let api: Api<MCPServer> =
        Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": MCPServer::api_version(&()),
        "kind": MCPServer::kind(&()),
        "status": desired,
    });
    api.patch_status(
        &server.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: "MCPServer/status",
        name: server.name_any(),
        source,
    })
    .map(|written| {
        ctx.status_memory.remember(
            key,
            written.meta().resource_version.as_deref(),
            desired.clone(),
        )
    })?;
    ctx.metrics.status_written();
    ctx.policy_status_wake.notify_one();
    Ok(Some((previous.cloned().unwrap_or_default(), desired)))
}

/// The resourceVersion of an object as a number (etcd's are), 0 when it is not one.
fn version_of(server: &MCPServer) -> u64 {
    server
        .meta()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Events for changes a human should hear of.
async fn announce_transitions(
    server: &MCPServer,
    ctx: &Context,
    previous: &MCPServerStatus,
    new: &MCPServerStatus,
    desired: &DesiredState,
) {
    let was_ready = status::condition_status(previous, status::CONDITION_READY) == Some("True");
    let is_ready = status::condition_status(new, status::CONDITION_READY) == Some("True");
    if was_ready && !is_ready {
        let message = new
            .conditions
            .iter()
            .find(|c| c.type_ == status::CONDITION_READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.publish(server, EventType::Warning, EVENT_NOT_READY, &message)
            .await;
    }
    let compliance = |status: &MCPServerStatus| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == status::CONDITION_POLICY_COMPLIANT)
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let (was, is) = (compliance(previous), compliance(new));
    // Only servers a policy selects: without one, the findings are advice in status, not news.
    if !new.policies.is_empty()
        && was.as_ref().map(|w| &w.0) != is.as_ref().map(|i| &i.0)
        && let Some((reason, message)) = is
    {
        let (type_, event_reason) = match reason.as_str() {
            status::REASON_BLOCKED_BY_POLICY => (EventType::Warning, EVENT_ROLLOUT_BLOCKED),
            status::REASON_VIOLATIONS_REPORTED => (EventType::Warning, EVENT_POLICY_VIOLATION),
            _ => (EventType::Normal, EVENT_POLICY_COMPLIANT),
        };
        // A first evaluation that passes is not news.
        if type_ == EventType::Warning || was.is_some() {
            ctx.publish(server, type_, event_reason, &message).await;
        }
    }
    announce_tool_changes(server, ctx, previous, new).await;
    let before: BTreeMap<&str, (Option<&str>, bool)> = previous
        .prompts
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                (p.resolved_version.as_deref(), p.deprecated),
            )
        })
        .collect();
    for outcome in &desired.prompts {
        let now = (outcome.resolved_version.as_deref(), outcome.deprecated);
        if before.get(outcome.name.as_str()) == Some(&now) {
            continue;
        }
        if outcome.deprecated {
            let message = format!(
                "prompt {:?} resolved to Deprecated version {} ({}): publish an Active version matching {:?}",
                outcome.name,
                outcome.resolved_version.as_deref().unwrap_or_default(),
                outcome.resolved_object.as_deref().unwrap_or_default(),
                outcome.requested
            );
            ctx.publish(
                server,
                EventType::Warning,
                EVENT_PROMPT_DEPRECATED,
                &message,
            )
            .await;
        } else if let Some(problem) = &outcome.problem {
            ctx.publish(server, EventType::Warning, EVENT_PROMPT_UNRESOLVED, problem)
                .await;
        }
    }
}

/// One Warning Event for the tools newly hidden by the gateway, one for those newly failing
/// checks while still served; a tool whose state did not change is not news.
async fn announce_tool_changes(
    server: &MCPServer,
    ctx: &Context,
    previous: &MCPServerStatus,
    new: &MCPServerStatus,
) {
    let before: BTreeMap<&str, &str> = previous
        .tools
        .iter()
        .map(|t| (t.name.as_str(), t.state.as_str()))
        .collect();
    let (mut hidden, mut unapproved) = (Vec::new(), Vec::new());
    for tool in &new.tools {
        if before.get(tool.name.as_str()) == Some(&tool.state.as_str())
            || tool.state == STATE_APPROVED
        {
            continue;
        }
        let line = format!(
            "{} ({}: {})",
            tool.name,
            tool.state,
            tool.reasons.join("; ")
        );
        if tool.state == STATE_QUARANTINED {
            hidden.push(line);
        } else {
            unapproved.push(line);
        }
    }
    if !hidden.is_empty() {
        let note = format!(
            "the gateway hides these tools until they are approved (spec.toolApprovals) or fixed: {}",
            hidden.join(" | ")
        );
        ctx.publish(server, EventType::Warning, EVENT_TOOL_QUARANTINED, &note)
            .await;
    }
    if !unapproved.is_empty() {
        let note = format!(
            "these tools fail the tool checks and are still served: {}",
            unapproved.join(" | ")
        );
        ctx.publish(server, EventType::Warning, EVENT_TOOL_NOT_APPROVED, &note)
            .await;
    }
}
