//! Who may see and call which tool: the configuration's exposure globs and access rules compiled
//! once, then evaluated per caller and tool as a pure function.

use globset::{Candidate, Glob, GlobSet, GlobSetBuilder};

use crate::api::common::{RuleAction, SubjectMatcher};
use crate::api::gateway_config::{GatewayAuthorization, GatewayTools};

/// The authenticated caller, as far as access decisions go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    /// Token subject (`sub`); empty for an unauthenticated gateway.
    pub subject: String,
    /// OAuth client (`client_id` or `azp`), when the token names one.
    pub client_id: Option<String>,
    /// Groups from the configured groups claim.
    pub groups: Vec<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Whether a token was validated.
    pub authenticated: bool,
}

impl Principal {
    /// The caller of a gateway without authentication.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Key that sessions and rate limits are bound to.
    pub fn key(&self) -> &str {
        if self.authenticated {
            &self.subject
        } else {
            ""
        }
    }
}

/// Decision ids that are not a rule index.
pub mod deciders {
    /// No rule matched and rules exist (or `defaultDeny` is set).
    pub const DEFAULT_DENY: &str = "defaultDeny";
    /// No rule matched and nothing asks for default deny.
    pub const DEFAULT_ALLOW: &str = "defaultAllow";
    /// The tool matches `tools.deny` or misses `tools.allow`.
    pub const HIDDEN: &str = "hidden";
}

/// Why a tool is or is not available to a caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the caller may see and call the tool.
    pub allowed: bool,
    /// What decided: `authorization.rules[N]`, or one of [`deciders`].
    pub decided_by: String,
    /// The tool is not exposed to anyone (treated as absent, not as denied).
    pub hidden: bool,
}

/// Errors compiling the configuration's globs.
#[derive(Debug, thiserror::Error)]
#[error("{field}: invalid tool glob {glob:?}: {message}")]
pub struct GlobError {
    field: String,
    glob: String,
    message: String,
}

struct CompiledRule {
    tools: GlobSet,
    subjects: SubjectMatcher,
    action: RuleAction,
    /// `authorization.rules[N]`, what a decision by this rule names.
    label: String,
}

/// The compiled access policy of one gateway.
pub struct AccessPolicy {
    expose: Option<GlobSet>,
    hide: GlobSet,
    rules: Vec<CompiledRule>,
    default_deny: bool,
}

pub(crate) fn compile_globs(field: &str, globs: &[String]) -> Result<GlobSet, GlobError> {
    let mut builder = GlobSetBuilder::new();
    for (index, glob) in globs.iter().enumerate() {
        let compiled = Glob::new(glob).map_err(|e| GlobError {
            field: format!("{field}[{index}]"),
            glob: glob.clone(),
            message: e.kind().to_string(),
        })?;
        builder.add(compiled);
    }
    builder.build().map_err(|e| GlobError {
        field: field.to_owned(),
        glob: String::new(),
        message: e.to_string(),
    })
}

impl AccessPolicy {
    /// Compile the exposure globs and access rules.
    pub fn new(
        tools: &GatewayTools,
        authorization: &GatewayAuthorization,
    ) -> Result<Self, GlobError> {
        let expose = if tools.allow.is_empty() {
            None
        } else {
            Some(compile_globs("tools.allow", &tools.allow)?)
        };
        let hide = compile_globs("tools.deny", &tools.deny)?;
        let rules = authorization
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                Ok(CompiledRule {
                    tools: compile_globs(
                        &format!("authorization.rules[{index}].tools"),
                        &rule.tools,
                    )?,
                    subjects: rule.subjects.clone(),
                    action: rule.action,
                    label: format!("authorization.rules[{index}]"),
                })
            })
            .collect::<Result<_, GlobError>>()?;
        Ok(Self {
            expose,
            hide,
            rules,
            default_deny: authorization.default_deny,
        })
    }

    /// Whether a tool is exposed at all.
    pub fn is_hidden(&self, tool: &str) -> bool {
        self.is_hidden_candidate(&Candidate::new(tool))
    }

    fn is_hidden_candidate(&self, tool: &Candidate<'_>) -> bool {
        self.hide.is_match_candidate(tool)
            || self
                .expose
                .as_ref()
                .is_some_and(|set| !set.is_match_candidate(tool))
    }

    /// May `principal` see and call `tool`? A matching Deny wins over any Allow; with no match,
    /// the call is denied when rules exist or `defaultDeny` is set.
    pub fn decide(&self, principal: &Principal, tool: &str) -> Decision {
        // Prepared once for every glob set (preparing copies and splits the name).
        let candidate = Candidate::new(tool);
        if self.is_hidden_candidate(&candidate) {
            return Decision {
                allowed: false,
                decided_by: deciders::HIDDEN.to_owned(),
                hidden: true,
            };
        }
        let mut allowed_by = None;
        for rule in &self.rules {
            if !rule.tools.is_match_candidate(&candidate)
                || !subject_matches(&rule.subjects, principal)
            {
                continue;
            }
            match rule.action {
                RuleAction::Deny => {
                    return Decision {
                        allowed: false,
                        decided_by: rule.label.clone(),
                        hidden: false,
                    };
                }
                RuleAction::Allow => {
                    allowed_by.get_or_insert(rule);
                }
            }
        }
        match allowed_by {
            Some(rule) => Decision {
                allowed: true,
                decided_by: rule.label.clone(),
                hidden: false,
            },
            None if self.default_deny || !self.rules.is_empty() => Decision {
                allowed: false,
                decided_by: deciders::DEFAULT_DENY.to_owned(),
                hidden: false,
            },
            None => Decision {
                allowed: true,
                decided_by: deciders::DEFAULT_ALLOW.to_owned(),
                hidden: false,
            },
        }
    }
}

/// A matcher that lists nobody matches every caller; otherwise any listed user, group or scope.
fn subject_matches(matcher: &SubjectMatcher, principal: &Principal) -> bool {
    matcher.is_anyone()
        || (principal.authenticated && matcher.users.contains(&principal.subject))
        || matcher.groups.iter().any(|g| principal.groups.contains(g))
        || matcher.scopes.iter().any(|s| principal.scopes.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::ToolAccessRule;

    fn rule(tools: &[&str], users: &[&str], groups: &[&str], action: RuleAction) -> ToolAccessRule {
        ToolAccessRule {
            tools: tools.iter().map(|s| s.to_string()).collect(),
            subjects: SubjectMatcher {
                users: users.iter().map(|s| s.to_string()).collect(),
                groups: groups.iter().map(|s| s.to_string()).collect(),
                scopes: vec![],
            },
            action,
        }
    }

    fn caller(sub: &str, groups: &[&str]) -> Principal {
        Principal {
            subject: sub.into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            authenticated: true,
            ..Principal::default()
        }
    }

    #[test]
    fn deny_wins_and_no_match_is_denied_when_rules_exist() {
        let policy = AccessPolicy::new(
            &GatewayTools::default(),
            &GatewayAuthorization {
                default_deny: false,
                rules: vec![
                    rule(&["*"], &[], &["eng"], RuleAction::Allow),
                    rule(&["delete_*"], &[], &["contractors"], RuleAction::Deny),
                ],
            },
        )
        .unwrap();
        let staff = caller("alice", &["eng"]);
        let contractor = caller("bob", &["eng", "contractors"]);
        let outsider = caller("eve", &[]);
        assert!(policy.decide(&staff, "delete_repo").allowed);
        let denied = policy.decide(&contractor, "delete_repo");
        assert!(!denied.allowed);
        assert_eq!(denied.decided_by, "authorization.rules[1]");
        assert!(policy.decide(&contractor, "get_issue").allowed);
        assert_eq!(
            policy.decide(&outsider, "get_issue").decided_by,
            deciders::DEFAULT_DENY
        );
    }

    #[test]
    fn without_rules_everything_exposed_is_allowed_unless_default_deny() {
        let open =
            AccessPolicy::new(&GatewayTools::default(), &GatewayAuthorization::default()).unwrap();
        assert!(open.decide(&Principal::anonymous(), "anything").allowed);
        let closed = AccessPolicy::new(
            &GatewayTools::default(),
            &GatewayAuthorization {
                default_deny: true,
                rules: vec![],
            },
        )
        .unwrap();
        assert!(!closed.decide(&Principal::anonymous(), "anything").allowed);
    }

    #[test]
    fn hidden_tools_are_absent_for_everyone() {
        let tools = GatewayTools {
            allow: vec!["get_*".into(), "search_*".into()],
            deny: vec!["get_secret".into()],
            ..GatewayTools::default()
        };
        let policy = AccessPolicy::new(&tools, &GatewayAuthorization::default()).unwrap();
        let anyone = Principal::anonymous();
        assert!(policy.decide(&anyone, "get_issue").allowed);
        let secret = policy.decide(&anyone, "get_secret");
        assert!(secret.hidden && !secret.allowed);
        assert!(policy.decide(&anyone, "delete_repo").hidden);
    }

    #[test]
    fn bad_globs_name_the_field() {
        let tools = GatewayTools {
            deny: vec!["ok".into(), "[".into()],
            ..GatewayTools::default()
        };
        let error = AccessPolicy::new(&tools, &GatewayAuthorization::default())
            .err()
            .unwrap();
        assert!(error.to_string().starts_with("tools.deny[1]"), "{error}");
    }
}
