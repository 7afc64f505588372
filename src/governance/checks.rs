//! One function per rule evaluated from the resource and the rendered objects. Each returns the
//! problems it found (empty: the rule passes), each message naming the field and the fix.

use std::sync::LazyLock;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use kube::ResourceExt as _;
use regex::Regex;

use super::catalogue::*;
use crate::api::policy::MCPPolicy;
use crate::api::server::{MCPServer, Transport};
use crate::builders::DesiredState;

type Problems = Vec<String>;

/// Every rule this module evaluates, with its problems.
pub(super) fn run(
    server: &MCPServer,
    policies: &[&MCPPolicy],
    desired: &DesiredState,
) -> Vec<(&'static str, Problems)> {
    let pod = desired
        .deployment
        .spec
        .as_ref()
        .and_then(|d| d.template.spec.as_ref());
    let empty = PodSpec::default();
    let pod = pod.unwrap_or(&empty);
    vec![
        (AUTH_REQUIRED, auth_required(desired)),
        (AUTH_METADATA, auth_metadata(server)),
        (AUTH_NO_WILDCARD_SCOPES, no_wildcard_scopes(desired)),
        (AUTH_ALLOWED_ISSUER, allowed_issuer(server, policies)),
        (AUTHZ_DEFAULT_DENY, default_deny(desired)),
        (TRANS_LEGACY_SSE, legacy_sse(server)),
        (SUPPLY_DIGEST, digest(&server.spec.image)),
        (SUPPLY_REGISTRY, registry(&server.spec.image, policies)),
        (SUPPLY_NO_FETCH_AT_START, no_fetch_at_start(pod)),
        (POD_RESTRICTED, restricted(pod)),
        (POD_NO_TOKEN, no_token(pod)),
        (POD_HARDENED, hardened(pod)),
        (POD_REPLICAS, replicas(server, policies)),
        (NET_DEFAULT_DENY, default_deny_network(desired)),
        (NET_EGRESS_ALLOWLIST, egress_allowlist(desired)),
        (SEC_NO_LITERAL_SECRETS, no_literal_secrets(server)),
        (RATE_LIMITS, rate_limits(desired)),
        (PROMPT_IMMUTABLE, prompts_immutable(desired)),
    ]
}

fn prompts_immutable(desired: &DesiredState) -> Problems {
    desired
        .prompts
        .iter()
        .flat_map(|p| p.altered.iter().cloned())
        .collect()
}

fn auth_required(desired: &DesiredState) -> Problems {
    if desired.gateway_config.authentication.is_some() {
        return Vec::new();
    }
    vec!["spec.authentication is not set: anyone who reaches the gateway can call every tool; set spec.authentication.issuer (and jwksUri if the issuer has no discovery document)".into()]
}

fn auth_metadata(server: &MCPServer) -> Problems {
    let Some(auth) = &server.spec.authentication else {
        return Vec::new();
    };
    [
        ("spec.authentication.issuer", Some(&auth.issuer)),
        ("spec.authentication.jwksUri", auth.jwks_uri.as_ref()),
        ("spec.authentication.resource", auth.resource.as_ref()),
    ]
    .into_iter()
    .filter_map(|(field, value)| {
        let value = value?;
        (!value.starts_with("https://")).then(|| {
            format!("{field} is {value:?}: it must be an https URL, or tokens and keys can be tampered with in transit")
        })
    })
    .collect()
}

fn is_wildcard_scope(scope: &str) -> bool {
    scope == "*" || scope.ends_with(":*") || scope.ends_with("/*")
}

fn no_wildcard_scopes(desired: &DesiredState) -> Problems {
    desired
        .effective
        .required_scopes
        .iter()
        .filter(|s| is_wildcard_scope(s))
        .map(|s| {
            format!("required scope {s:?} is a wildcard: name the exact scopes the server needs")
        })
        .collect()
}

fn allowed_issuer(server: &MCPServer, policies: &[&MCPPolicy]) -> Problems {
    let issuer = server
        .spec
        .authentication
        .as_ref()
        .map(|a| a.issuer.as_str());
    policies
        .iter()
        .filter_map(|p| {
            let allowed = &p.spec.authentication.as_ref()?.allowed_issuers;
            if allowed.is_empty() || issuer.is_some_and(|i| allowed.iter().any(|a| a == i)) {
                return None;
            }
            Some(format!(
                "spec.authentication.issuer is {}: MCPPolicy {} allows only {}",
                issuer.map_or_else(|| "not set".to_owned(), |i| format!("{i:?}")),
                p.name_any(),
                allowed.join(", ")
            ))
        })
        .collect()
}

fn default_deny(desired: &DesiredState) -> Problems {
    let effective = &desired.effective;
    if effective.default_deny && !effective.authorization_rules.is_empty() {
        return Vec::new();
    }
    vec!["no authorization rules: every authenticated caller may call every tool; add spec.authorization rules (subjects and tool globs) or select the server with a policy that has them".into()]
}

fn legacy_sse(server: &MCPServer) -> Problems {
    if server.spec.transport != Transport::Sse {
        return Vec::new();
    }
    vec!["spec.transport is sse, the legacy HTTP+SSE transport: move to streamable-http when the server supports it".into()]
}

static DIGEST: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"@sha256:[0-9a-f]{64}$").ok());

fn digest(image: &str) -> Problems {
    if DIGEST.as_ref().is_some_and(|r| r.is_match(image)) {
        return Vec::new();
    }
    vec![format!(
        "spec.image {image:?} is not pinned by digest: write it as IMAGE@sha256:<64 hex> (a tag can be moved to other code)"
    )]
}

/// Whether `image` lies under `allowed` (a registry, or a registry and repository prefix),
/// matched on path boundaries so `ghcr.io/acme` does not admit `ghcr.io/acme-evil/x`.
pub(crate) fn image_under(image: &str, allowed: &str) -> bool {
    let allowed = allowed.trim_end_matches('/');
    image
        .strip_prefix(allowed)
        .is_some_and(|rest| rest.starts_with('/') || rest.starts_with(':') || rest.starts_with('@'))
}

fn registry(image: &str, policies: &[&MCPPolicy]) -> Problems {
    policies
        .iter()
        .filter_map(|p| {
            let allowed = &p.spec.workload.as_ref()?.allowed_registries;
            if allowed.is_empty() || allowed.iter().any(|a| image_under(image, a)) {
                return None;
            }
            Some(format!(
                "spec.image {image:?} is not from a registry MCPPolicy {} allows ({})",
                p.name_any(),
                allowed.join(", ")
            ))
        })
        .collect()
}

static FETCH_AT_START: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(^|[\s;&|/])(npx|bunx|uvx|pipx\s+run|pip3?\s+install|npm\s+(install|i)\b|go\s+run|(curl|wget)\b[^|]*\|\s*(ba|z)?sh)\b",
    )
    .ok()
});

/// Every container of the pod, init containers included.
fn containers(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
}

fn no_fetch_at_start(pod: &PodSpec) -> Problems {
    let Some(pattern) = FETCH_AT_START.as_ref() else {
        return Vec::new();
    };
    containers(pod)
        .filter_map(|c| {
            let line = c
                .command
                .iter()
                .flatten()
                .chain(c.args.iter().flatten())
                .cloned()
                .collect::<Vec<_>>()
                .join(" ");
            let found = pattern.find(&line)?;
            Some(format!(
                "container {} downloads code at start ({:?} in {line:?}): build it into the image and run it directly",
                c.name,
                found.as_str().trim()
            ))
        })
        .collect()
}

fn restricted(pod: &PodSpec) -> Problems {
    let mut problems = Vec::new();
    let pod_context = pod.security_context.as_ref();
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        problems.push("the pod shares a host namespace (hostNetwork, hostPID or hostIPC)".into());
    }
    for volume in pod.volumes.iter().flatten() {
        if volume.host_path.is_some() {
            problems.push(format!("volume {} mounts a host path", volume.name));
        }
    }
    let pod_seccomp = pod_context
        .and_then(|c| c.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str());
    for c in containers(pod) {
        let ctx = c.security_context.as_ref();
        let run_as_user = ctx
            .and_then(|s| s.run_as_user)
            .or_else(|| pod_context.and_then(|p| p.run_as_user));
        let non_root = ctx
            .and_then(|s| s.run_as_non_root)
            .or_else(|| pod_context.and_then(|p| p.run_as_non_root));
        if run_as_user == Some(0) {
            problems.push(format!(
                "container {} runs as UID 0: set spec.securityContext.runAsUser to a non-root UID",
                c.name
            ));
        } else if non_root != Some(true) {
            problems.push(format!(
                "container {} may run as root (runAsNonRoot is not true)",
                c.name
            ));
        }
        if ctx.and_then(|s| s.allow_privilege_escalation) != Some(false) {
            problems.push(format!("container {} allows privilege escalation", c.name));
        }
        if ctx.and_then(|s| s.privileged) == Some(true) {
            problems.push(format!("container {} is privileged", c.name));
        }
        let caps = ctx.and_then(|s| s.capabilities.as_ref());
        if !caps
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|c| c == "ALL"))
        {
            problems.push(format!(
                "container {} does not drop ALL capabilities",
                c.name
            ));
        }
        for added in caps.and_then(|c| c.add.as_ref()).into_iter().flatten() {
            if added != "NET_BIND_SERVICE" {
                problems.push(format!("container {} adds capability {added}", c.name));
            }
        }
        let seccomp = ctx
            .and_then(|s| s.seccomp_profile.as_ref())
            .map(|p| p.type_.as_str())
            .or(pod_seccomp);
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            problems.push(format!(
                "container {} has no RuntimeDefault or Localhost seccomp profile",
                c.name
            ));
        }
        for port in c.ports.iter().flatten() {
            if port.host_port.is_some() {
                problems.push(format!("container {} binds a host port", c.name));
            }
        }
    }
    problems
}

fn no_token(pod: &PodSpec) -> Problems {
    let mut problems = Vec::new();
    if pod.automount_service_account_token != Some(false) {
        problems.push(
            "the pod mounts a Kubernetes API token (automountServiceAccountToken is not false)"
                .into(),
        );
    }
    if pod
        .service_account_name
        .as_deref()
        .is_none_or(|n| n.is_empty() || n == "default")
    {
        problems.push("the pod runs as the namespace's default ServiceAccount".into());
    }
    problems
}

fn hardened(pod: &PodSpec) -> Problems {
    let mut problems = Vec::new();
    if pod.enable_service_links != Some(false) {
        problems.push("service links are enabled (enableServiceLinks is not false)".into());
    }
    for c in containers(pod) {
        if c.security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem)
            != Some(true)
        {
            problems.push(format!(
                "container {} has a writable root filesystem",
                c.name
            ));
        }
        let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        let missing: Vec<&str> = ["cpu", "memory", "ephemeral-storage"]
            .into_iter()
            .filter(|k| !limits.is_some_and(|l| l.contains_key(*k)))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "container {} has no {} limit: set spec.resources.limits (the gateway's under spec.gateway.resources)",
                c.name,
                missing.join(", ")
            ));
        }
    }
    problems
}

fn replicas(server: &MCPServer, policies: &[&MCPPolicy]) -> Problems {
    let spec = &server.spec;
    let (low, high) = match &spec.autoscaling {
        Some(a) => (a.min_replicas, a.max_replicas),
        None => {
            let n = spec.replicas.unwrap_or(1);
            (n, n)
        }
    };
    policies
        .iter()
        .filter_map(|p| {
            let workload = p.spec.workload.as_ref()?;
            let name = p.name_any();
            if let Some(min) = workload.min_replicas
                && low < min
            {
                return Some(format!(
                    "the server may run {low} replica(s): MCPPolicy {name} requires at least {min}"
                ));
            }
            if let Some(max) = workload.max_replicas
                && high > max
            {
                return Some(format!(
                    "the server may run {high} replicas: MCPPolicy {name} allows at most {max}"
                ));
            }
            None
        })
        .collect()
}

fn default_deny_network(desired: &DesiredState) -> Problems {
    let mut problems = Vec::new();
    let types = desired
        .network_policy
        .spec
        .as_ref()
        .and_then(|s| s.policy_types.clone())
        .unwrap_or_default();
    for kind in ["Ingress", "Egress"] {
        if !types.iter().any(|t| t == kind) {
            problems.push(format!("the NetworkPolicy does not restrict {kind}"));
        }
    }
    let service_type = desired
        .service
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP");
    if service_type != "ClusterIP" {
        problems.push(format!(
            "the Service is of type {service_type}, not ClusterIP"
        ));
    }
    problems
}

fn egress_allowlist(desired: &DesiredState) -> Problems {
    desired
        .effective
        .egress_refused
        .iter()
        .map(|e| {
            format!(
                "spec.egress to {} is outside the selecting policies' allowedEgress (left out of the NetworkPolicy)",
                e.cidr
            )
        })
        .collect()
}

static SECRET_VALUE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}|xox[abprs]-|sk-[A-Za-z0-9_-]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY-----|eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+",
    )
    .ok()
});

/// Whether `value` looks like a credential (GOVERNANCE.md's secret patterns).
pub(crate) fn looks_like_secret(value: &str) -> bool {
    SECRET_VALUE.as_ref().is_some_and(|r| r.is_match(value))
}

fn secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
    ]
    .iter()
    .any(|marker| upper.contains(marker))
}

fn no_literal_secrets(server: &MCPServer) -> Problems {
    let spec = &server.spec;
    let mut problems: Problems = spec
        .env
        .iter()
        .enumerate()
        .filter(|(_, e)| looks_like_secret(&e.value) || (secret_name(&e.name) && !e.value.is_empty()))
        .map(|(i, e)| {
            format!(
                "spec.env[{i}] ({}) holds a literal secret: put it in a Secret and reference it from spec.secretEnv",
                e.name
            )
        })
        .collect();
    for (field, values) in [("spec.command", &spec.command), ("spec.args", &spec.args)] {
        for (i, value) in values.iter().enumerate() {
            if looks_like_secret(value) {
                problems.push(format!(
                    "{field}[{i}] holds what looks like a credential: pass it through spec.secretEnv instead"
                ));
            }
        }
    }
    problems
}

fn rate_limits(desired: &DesiredState) -> Problems {
    if desired.effective.rate_limit.is_some() {
        return Vec::new();
    }
    vec!["no rate limit: one caller can exhaust the server; set spec.gateway.rateLimit or a policy rateLimit".into()]
}
