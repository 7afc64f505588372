//! Types shared by more than one kind.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who a rule applies to. A caller matches when any listed user, group or scope matches;
/// an empty matcher matches every authenticated caller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SubjectMatcher {
    /// Token subjects (`sub` claim) this rule applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Groups (from the configured groups claim) this rule applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// OAuth scopes; a token carrying any of them matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

impl SubjectMatcher {
    /// True when the matcher lists nobody, i.e. it matches every authenticated caller.
    pub fn is_anyone(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.scopes.is_empty()
    }
}

/// What a matching authorization rule does.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RuleAction {
    /// The matching callers may list and call the matching tools.
    #[default]
    Allow,
    /// The matching callers may neither see nor call the matching tools; a deny always wins.
    Deny,
}

/// One per-tool access rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ToolAccessRule {
    /// Tool name globs (`get_*`, `search_issues`); `*` matches every tool.
    #[schemars(length(min = 1))]
    pub tools: Vec<String>,
    /// The callers the rule applies to; omitted means every authenticated caller.
    #[serde(default, skip_serializing_if = "SubjectMatcher::is_anyone")]
    pub subjects: SubjectMatcher,
    /// Allow (default) or Deny.
    #[serde(default)]
    pub action: RuleAction,
}

/// Enforce blocks what violates a rule; Audit only reports it.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum Enforcement {
    /// Report findings; roll out anyway.
    #[default]
    Audit,
    /// Block the rollout (workload rules) or the request (runtime rules) that violates a rule.
    Enforce,
}

/// A Kubernetes label selector: every `matchLabels` entry and every expression must hold.
pub type LabelSelector = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Request rate limits the gateway applies per caller (token subject).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained JSON-RPC requests per minute one caller may send.
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_minute: i32,
    /// Requests a caller may send at once above the sustained rate. Defaults to requestsPerMinute / 6 (ten seconds' worth), at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub burst: Option<i32>,
    /// Tighter limits for particular tools, per caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_tool: Vec<ToolRateLimit>,
}

/// A rate limit for `tools/call` of the matching tools, per caller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ToolRateLimit {
    /// Tool name globs.
    #[schemars(length(min = 1))]
    pub tools: Vec<String>,
    /// Sustained calls per minute to the matching tools.
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_minute: i32,
}

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), checked by the API server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(transparent)]
pub struct Cidr(pub String);

impl schemars::JsonSchema for Cidr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cidr".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "maxLength": 64,
            "description": "A network in CIDR notation, such as 10.0.0.0/8 or 2001:db8::/32.",
            "x-kubernetes-validations": [
                {"rule": "isCIDR(self)", "message": "must be a CIDR such as 10.0.0.0/8 or 2001:db8::/32"}
            ]
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Cidr {
    fn from(text: &str) -> Self {
        Cidr(text.to_string())
    }
}
