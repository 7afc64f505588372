//! `MCPPolicy`: what the servers it selects must satisfy, and who may call which tool.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Cidr, Enforcement, LabelSelector, RateLimit, ToolAccessRule};
use super::selector::selector_matches;

/// Cluster-wide rules for the MCPServers it selects. All matching policies apply; the strictest setting wins.
// Several printer columns share a type, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mcp-operator.dev",
    version = "v1alpha1",
    kind = "MCPPolicy",
    plural = "mcppolicies",
    singular = "mcppolicy",
    status = "MCPPolicyStatus",
    derive = "PartialEq",
    shortname = "mcppol",
    category = "mcp",
    doc = "Cluster-wide rules for the MCPServers it selects. All matching policies apply; the strictest setting wins.",
    printcolumn(
        name = "Enforcement",
        type_ = "string",
        json_path = ".spec.enforcement",
        description = "Enforce blocks violations; Audit reports them"
    ),
    printcolumn(
        name = "Matched",
        type_ = "integer",
        json_path = ".status.matchedServers",
        description = "Servers the policy selects"
    ),
    printcolumn(
        name = "Compliant",
        type_ = "integer",
        json_path = ".status.compliantServers",
        description = "Selected servers that pass every rule of the policy"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MCPPolicySpec {
    /// Enforce: violating servers are not rolled out and the gateway blocks violating requests.
    /// Audit (default): everything is rolled out and violations are reported.
    #[serde(default)]
    pub enforcement: Enforcement,

    /// Namespaces whose servers the policy applies to. Absent means every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Servers (by their labels) the policy applies to. Absent means every server in the selected namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_selector: Option<LabelSelector>,

    /// Token requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationPolicy>,

    /// Tool access rules added to every selected server's own rules. Denies here always win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationPolicy>,

    /// Which tools may be exposed, and how their definitions are checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolPolicy>,

    /// Requirements on the rendered pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadPolicy>,

    /// Network requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkRules>,

    /// The loosest rate limit a selected server may run with; a server's own tighter limit stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,

    /// Prompt requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<PromptPolicy>,

    /// Per-rule exceptions: disable a rule or change its enforcement, with the reason reports show.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<RuleOverride>,
}

/// Token requirements.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationPolicy {
    /// Every selected server must validate OAuth access tokens at its gateway. Defaults to true.
    #[serde(default = "default_true")]
    pub required: bool,
    /// Token issuers servers may trust (https URLs). Empty means any https issuer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_issuers: Vec<String>,
    /// Scopes every token must carry, added to each server's own required scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// Longest accepted token lifetime (`exp` minus `iat`), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 2592000))]
    pub max_token_lifetime_seconds: Option<i64>,
}

fn default_true() -> bool {
    true
}

/// Tool access rules a policy adds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    /// Hide and reject every tool no rule allows, even on servers that declare no rules. Defaults to true.
    #[serde(default = "default_true")]
    pub default_deny: bool,
    /// Rules added to each selected server's own. A Deny from any source wins over every Allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ToolAccessRule>,
}

/// Which tools may be exposed, and how their definitions are checked.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ToolPolicy {
    /// Tool name globs that may be exposed. Empty means every tool not denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Tool name globs that are never exposed, to anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Require tool definitions to be approved by hash; new or changed tools stay hidden until approved.
    #[serde(default)]
    pub pin_definitions: bool,
    /// Scan tool descriptions and schemas for poisoning (hidden instructions, invisible text,
    /// exfiltration, cross-tool references) and hide flagged tools. Defaults to true.
    #[serde(default = "default_true")]
    pub scan_descriptions: bool,
}

/// Requirements on the rendered pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas")
    .message("workload.minReplicas must not exceed workload.maxReplicas")
    .field_path(".minReplicas"))]
pub struct WorkloadPolicy {
    /// Image prefixes servers may use (`ghcr.io/acme/`, `registry.example.com/mcp/`). Empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_registries: Vec<String>,
    /// Images must be pinned by digest (`@sha256:...`).
    #[serde(default)]
    pub require_digest: bool,
    /// Fewest replicas a server may run (fixed count or autoscaling minimum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: Option<i32>,
    /// Most replicas a server may run (fixed count or autoscaling maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: Option<i32>,
    /// Servers must declare their own cpu and memory limits instead of relying on the operator's defaults.
    #[serde(default)]
    pub require_resource_limits: bool,
}

/// Network requirements.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRules {
    /// Networks (CIDRs) servers may declare egress to. Declared egress outside every listed network
    /// is left out of the NetworkPolicy. Absent means any declared egress is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub allowed_egress: Option<Vec<Cidr>>,
}

/// Prompt requirements.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PromptPolicy {
    /// Prompt references must name one exact version (`=1.2.0`), not a range.
    #[serde(default)]
    pub require_exact_versions: bool,
}

/// A per-rule exception.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RuleOverride {
    /// Rule id (`MCP-SUPPLY-001`).
    #[schemars(regex(pattern = r"^MCP-[A-Z]+-[0-9]{3}$"))]
    pub rule: String,
    /// What to do with the rule for the servers this policy selects.
    pub enforcement: OverrideEnforcement,
    /// Why the exception exists; shown in every report that mentions the rule.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
}

/// What an override does with a rule.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverrideEnforcement {
    /// Block on the rule even when the policy is in Audit mode.
    Enforce,
    /// Only report the rule, even when the policy is in Enforce mode.
    Audit,
    /// Do not evaluate the rule.
    Disabled,
}

/// Observed state of an MCPPolicy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MCPPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Servers the policy selects.
    #[serde(default)]
    pub matched_servers: i32,
    /// Selected servers that pass every rule of this policy.
    #[serde(default)]
    pub compliant_servers: i32,
    /// Failing rules and how many selected servers fail each (at most 50 entries, most servers first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<RuleViolations>,
    /// Conditions (Ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// How many selected servers fail one rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RuleViolations {
    /// Rule id.
    pub rule: String,
    /// Number of failing servers.
    pub servers: i32,
    /// Up to 10 failing servers, as `namespace/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

impl MCPPolicy {
    /// Whether this policy applies to a server with `server_labels` in a namespace with `namespace_labels`.
    pub fn selects(
        &self,
        namespace_labels: &BTreeMap<String, String>,
        server_labels: &BTreeMap<String, String>,
    ) -> bool {
        let namespace_ok = self
            .spec
            .namespace_selector
            .as_ref()
            .is_none_or(|s| selector_matches(s, namespace_labels));
        let server_ok = self
            .spec
            .server_selector
            .as_ref()
            .is_none_or(|s| selector_matches(s, server_labels));
        namespace_ok && server_ok
    }
}
