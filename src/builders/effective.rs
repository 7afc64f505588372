//! The runtime settings of one server after merging the MCPPolicies that select it: what the
//! gateway configuration and the NetworkPolicy are rendered from. All matching policies apply
//! and the strictest setting wins. Whether the server *complies* is the governance engine's
//! question; this module only decides what is rendered.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::api::MCPPolicy;
use crate::api::common::{Enforcement, RateLimit, ToolAccessRule, ToolRateLimit};
use crate::api::policy::OverrideEnforcement;
use crate::api::server::{EgressRule, MCPServerSpec};

/// Merged runtime settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EffectiveSettings {
    /// Strictest enforcement of the selecting policies (Audit when none).
    pub enforcement: Enforcement,
    /// Server rules followed by every policy's rules.
    pub authorization_rules: Vec<ToolAccessRule>,
    /// Whether tools no rule allows are hidden.
    pub default_deny: bool,
    /// Scopes every token must carry (server's and policies', deduplicated, sorted).
    pub required_scopes: Vec<String>,
    /// Shortest maximum token lifetime of the policies.
    pub max_token_lifetime_seconds: Option<i64>,
    /// Tool globs allowed by every policy that restricts them (empty: no restriction).
    pub tool_allow: Vec<String>,
    /// Tool globs any policy denies.
    pub tool_deny: Vec<String>,
    /// Any policy pins tool definitions.
    pub pin_definitions: bool,
    /// Any policy (or the default) scans tool descriptions.
    pub scan_descriptions: bool,
    /// Tool rules (MCP-TOOL-*, MCP-PIN-*) whose handling a policy override changed.
    pub tool_rule_overrides: BTreeMap<String, OverrideEnforcement>,
    /// Tightest rate limit of the server and the policies.
    pub rate_limit: Option<RateLimit>,
    /// Declared egress the policies permit.
    pub egress: Vec<EgressRule>,
    /// Declared egress some policy does not permit (left out of the NetworkPolicy).
    pub egress_refused: Vec<EgressRule>,
}

/// Merge `server` with the policies that select it (already filtered by selection).
pub fn merge(server: &MCPServerSpec, policies: &[&MCPPolicy]) -> EffectiveSettings {
    let enforcement = policies
        .iter()
        .map(|p| p.spec.enforcement)
        .max()
        .unwrap_or_default();

    let mut authorization_rules = server.authorization.clone();
    let mut default_deny = !server.authorization.is_empty();
    let mut required_scopes: Vec<String> = server
        .authentication
        .as_ref()
        .map(|a| a.required_scopes.clone())
        .unwrap_or_default();
    let mut max_token_lifetime_seconds = None;
    let mut tool_allow_sets: Vec<&Vec<String>> = Vec::new();
    let mut tool_deny = Vec::new();
    let mut pin_definitions = false;
    let mut scan_descriptions = true;
    let mut rate_limit = server.gateway.as_ref().and_then(|g| g.rate_limit.clone());

    for policy in policies {
        let spec = &policy.spec;
        if let Some(authz) = &spec.authorization {
            authorization_rules.extend(authz.rules.iter().cloned());
            default_deny |= authz.default_deny || !authz.rules.is_empty();
        }
        if let Some(authn) = &spec.authentication {
            required_scopes.extend(authn.required_scopes.iter().cloned());
            max_token_lifetime_seconds =
                min_option(max_token_lifetime_seconds, authn.max_token_lifetime_seconds);
        }
        if let Some(tools) = &spec.tools {
            if !tools.allow.is_empty() {
                tool_allow_sets.push(&tools.allow);
            }
            tool_deny.extend(tools.deny.iter().cloned());
            pin_definitions |= tools.pin_definitions;
        }
        if let Some(limit) = &spec.rate_limit {
            rate_limit = Some(match rate_limit {
                Some(current) => tighter_rate_limit(current, limit),
                None => limit.clone(),
            });
        }
    }
    // Scanning is on unless every policy that says something about tools turns it off.
    let tool_policies: Vec<_> = policies
        .iter()
        .filter_map(|p| p.spec.tools.as_ref())
        .collect();
    if !tool_policies.is_empty() {
        scan_descriptions = tool_policies.iter().any(|t| t.scan_descriptions);
    }

    required_scopes.sort();
    required_scopes.dedup();
    tool_deny.sort();
    tool_deny.dedup();

    let (egress, egress_refused) = split_egress(&server.egress, policies);

    EffectiveSettings {
        enforcement,
        authorization_rules,
        default_deny,
        required_scopes,
        max_token_lifetime_seconds,
        tool_allow: intersect_allow_lists(&tool_allow_sets),
        tool_deny,
        pin_definitions,
        scan_descriptions,
        tool_rule_overrides: crate::governance::tool_rule_overrides(policies),
        rate_limit,
        egress,
        egress_refused,
    }
}

fn min_option(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// With several policies restricting tools, a tool must be allowed by each. Globs cannot be
/// intersected in general, so the first policy's list is kept when the lists differ and the
/// others are applied by the governance engine; identical lists collapse to one.
fn intersect_allow_lists(sets: &[&Vec<String>]) -> Vec<String> {
    let mut lists: Vec<Vec<String>> = sets
        .iter()
        .map(|s| {
            let mut v = (*s).clone();
            v.sort();
            v.dedup();
            v
        })
        .collect();
    lists.dedup();
    match lists.len() {
        0 => Vec::new(),
        1 => lists.remove(0),
        _ => {
            // Keep only globs present in every list: a conservative intersection.
            let first = lists.remove(0);
            first
                .into_iter()
                .filter(|g| lists.iter().all(|l| l.contains(g)))
                .collect()
        }
    }
}

fn tighter_rate_limit(a: RateLimit, b: &RateLimit) -> RateLimit {
    let requests_per_minute = a.requests_per_minute.min(b.requests_per_minute);
    let burst = match (a.burst, b.burst) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    let mut per_tool: Vec<ToolRateLimit> = a.per_tool;
    per_tool.extend(b.per_tool.iter().cloned());
    RateLimit {
        requests_per_minute,
        burst,
        per_tool,
    }
}

/// Split declared egress into what every policy with an allowlist permits and the rest.
fn split_egress(
    declared: &[EgressRule],
    policies: &[&MCPPolicy],
) -> (Vec<EgressRule>, Vec<EgressRule>) {
    let allowlists: Vec<Vec<IpNet>> = policies
        .iter()
        .filter_map(|p| p.spec.network.as_ref()?.allowed_egress.as_ref())
        .map(|list| list.iter().filter_map(|c| c.0.parse().ok()).collect())
        .collect();
    declared.iter().cloned().partition(|rule| {
        let Ok(net) = rule.cidr.0.parse::<IpNet>() else {
            return false;
        };
        allowlists
            .iter()
            .all(|allowed| allowed.iter().any(|a| a.contains(&net)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy::{MCPPolicySpec, NetworkRules};
    use crate::api::server::EgressPort;

    fn policy(spec_yaml: &str) -> MCPPolicy {
        let spec: MCPPolicySpec = serde_saphyr::from_str(spec_yaml).unwrap();
        MCPPolicy::new("p", spec)
    }

    fn server(spec_yaml: &str) -> MCPServerSpec {
        serde_saphyr::from_str(spec_yaml).unwrap()
    }

    #[test]
    fn no_policies_keeps_server_settings_and_audit() {
        let s = server("image: a\nauthorization: [{tools: ['get_*']}]\n");
        let e = merge(&s, &[]);
        assert_eq!(e.enforcement, Enforcement::Audit);
        assert!(
            e.default_deny,
            "a server with rules denies the tools no rule allows"
        );
        assert_eq!(e.authorization_rules.len(), 1);
        assert!(e.scan_descriptions);
    }

    #[test]
    fn enforce_beats_audit_and_rules_accumulate() {
        let s = server("image: a\n");
        let a =
            policy("enforcement: Audit\nauthorization: {rules: [{tools: ['x'], action: Deny}]}\n");
        let b =
            policy("enforcement: Enforce\ntools: {deny: ['delete_*'], scanDescriptions: false}\n");
        let e = merge(&s, &[&a, &b]);
        assert_eq!(e.enforcement, Enforcement::Enforce);
        assert!(e.default_deny);
        assert_eq!(e.tool_deny, vec!["delete_*".to_string()]);
        assert!(
            !e.scan_descriptions,
            "the only tool policy turned scanning off"
        );
    }

    #[test]
    fn tightest_rate_limit_and_token_lifetime_win() {
        let s = server("image: a\ngateway: {rateLimit: {requestsPerMinute: 600, burst: 100}}\n");
        let a = policy(
            "rateLimit: {requestsPerMinute: 120}\nauthentication: {maxTokenLifetimeSeconds: 3600}\n",
        );
        let b = policy(
            "rateLimit: {requestsPerMinute: 300, burst: 20}\nauthentication: {maxTokenLifetimeSeconds: 600}\n",
        );
        let e = merge(&s, &[&a, &b]);
        let limit = e.rate_limit.unwrap();
        assert_eq!(limit.requests_per_minute, 120);
        assert_eq!(limit.burst, Some(20));
        assert_eq!(e.max_token_lifetime_seconds, Some(600));
    }

    #[test]
    fn egress_outside_a_policy_allowlist_is_refused() {
        let s = MCPServerSpec {
            egress: vec![
                EgressRule {
                    cidr: "10.1.2.0/24".into(),
                    ports: vec![EgressPort {
                        port: 443,
                        protocol: Default::default(),
                    }],
                },
                EgressRule {
                    cidr: "0.0.0.0/0".into(),
                    ports: vec![EgressPort {
                        port: 443,
                        protocol: Default::default(),
                    }],
                },
            ],
            ..server("image: a\n")
        };
        let mut p = policy("{}");
        p.spec.network = Some(NetworkRules {
            allowed_egress: Some(vec!["10.0.0.0/8".into()]),
        });
        let e = merge(&s, &[&p]);
        assert_eq!(e.egress.len(), 1);
        assert_eq!(e.egress[0].cidr.0, "10.1.2.0/24");
        assert_eq!(e.egress_refused[0].cidr.0, "0.0.0.0/0");
    }

    #[test]
    fn allow_lists_of_two_policies_intersect() {
        let s = server("image: a\n");
        let a = policy("tools: {allow: ['get_*', 'search_*']}\n");
        let b = policy("tools: {allow: ['search_*']}\n");
        let e = merge(&s, &[&a, &b]);
        assert_eq!(e.tool_allow, vec!["search_*".to_string()]);
    }
}
