//! Resolving a server's prompt references against the MCPPromptVersion objects of its namespace.

use semver::{Version, VersionReq};

use crate::api::gateway_config::ManagedPrompt;
use crate::api::prompt::{Lifecycle, MCPPromptVersion};
use crate::api::server::PromptReference;
use crate::validation::semantic::check_prompt_version;

/// How one prompt reference resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution<'a> {
    /// The highest Active version in range.
    Active(&'a MCPPromptVersion),
    /// No Active version matched; the highest Deprecated one did.
    Deprecated(&'a MCPPromptVersion),
    /// Nothing servable matched.
    NoMatch,
    /// The requirement is not a valid semver requirement.
    InvalidRequirement(String),
}

/// Resolve `reference` among `candidates` (the prompt versions of the server's namespace).
/// Ties on the same version (two objects claiming it) go to the oldest object, then the
/// smallest name, so every reconcile picks the same one.
pub fn resolve<'a>(
    reference: &PromptReference,
    candidates: &'a [MCPPromptVersion],
) -> Resolution<'a> {
    let requirement = match VersionReq::parse(&reference.version) {
        Ok(r) => r,
        Err(e) => return Resolution::InvalidRequirement(e.to_string()),
    };
    let best = |lifecycle: Lifecycle| {
        candidates
            .iter()
            .filter(|c| c.spec.prompt == reference.name && c.spec.lifecycle == lifecycle)
            // A version the API server let through but that is not servable (a placeholder
            // naming no argument) is never served; its status says why.
            .filter(|c| check_prompt_version(&c.spec).is_empty() && !altered(c))
            .filter_map(|c| Some((Version::parse(&c.spec.version).ok()?, c)))
            .filter(|(v, _)| requirement.matches(v))
            .max_by(|(va, a), (vb, b)| {
                va.cmp(vb)
                    .then_with(|| tie_break_key(b).cmp(&tie_break_key(a)))
            })
            .map(|(_, c)| c)
    };
    if let Some(found) = best(Lifecycle::Active) {
        Resolution::Active(found)
    } else if let Some(found) = best(Lifecycle::Deprecated) {
        Resolution::Deprecated(found)
    } else {
        Resolution::NoMatch
    }
}

/// Older objects first, then by name: the smaller key wins a tie.
pub fn tie_break_key(p: &MCPPromptVersion) -> (Option<String>, Option<String>) {
    (
        p.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        p.metadata.name.clone(),
    )
}

/// The SHA-256 (RFC 8785 canonical JSON) of what clients receive of a version: the value the
/// gateway puts in `_meta` as `mcp-operator.dev/contentSha256`.
pub fn content_hash(version: &MCPPromptVersion) -> String {
    crate::gateway::inventory::definition_hash(
        &serde_json::to_value(managed_prompt(version)).unwrap_or_default(),
    )
}

/// Whether the content differs from the hash recorded in status when it was first seen
/// (only possible around the CRD's immutability rules): such a version is never served.
pub fn altered(version: &MCPPromptVersion) -> bool {
    version
        .status
        .as_ref()
        .and_then(|s| s.content_hash.as_deref())
        .is_some_and(|recorded| recorded != content_hash(version))
}

/// The prompt as the gateway serves it.
pub fn managed_prompt(version: &MCPPromptVersion) -> ManagedPrompt {
    let spec = &version.spec;
    ManagedPrompt {
        name: spec.prompt.clone(),
        version: spec.version.clone(),
        title: spec.title.clone(),
        description: spec.description.clone(),
        arguments: spec.arguments.clone(),
        messages: spec.messages.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::prompt::MCPPromptVersionSpec;

    fn version(name: &str, v: &str, lifecycle: &str) -> MCPPromptVersion {
        let spec: MCPPromptVersionSpec = serde_saphyr::from_str(&format!(
            "prompt: triage\nversion: '{v}'\nlifecycle: {lifecycle}\nmessages: [{{role: user, text: hi}}]\n"
        ))
        .unwrap();
        MCPPromptVersion::new(name, spec)
    }

    fn reference(req: &str) -> PromptReference {
        PromptReference {
            name: "triage".into(),
            version: req.into(),
        }
    }

    #[test]
    fn a_version_with_a_placeholder_naming_no_argument_is_never_served() {
        let mut broken = version("b", "1.3.0", "Active");
        broken.spec.messages[0].text = Some("see {{ticket}}".into());
        let all = vec![version("a", "1.2.0", "Active"), broken];
        assert_eq!(
            resolve(&reference("^1.2"), &all),
            Resolution::Active(&all[0])
        );
    }

    #[test]
    fn highest_active_in_range_wins() {
        let all = vec![
            version("a", "1.2.0", "Active"),
            version("b", "1.3.1", "Active"),
            version("c", "2.0.0", "Active"),
            version("d", "1.4.0", "Retired"),
        ];
        assert_eq!(
            resolve(&reference("^1.2"), &all),
            Resolution::Active(&all[1])
        );
    }

    #[test]
    fn deprecated_only_when_no_active_matches() {
        let all = vec![
            version("a", "1.2.0", "Deprecated"),
            version("b", "2.0.0", "Active"),
        ];
        assert_eq!(
            resolve(&reference("^1"), &all),
            Resolution::Deprecated(&all[0])
        );
        let all = vec![version("a", "1.2.0", "Retired")];
        assert_eq!(resolve(&reference("^1"), &all), Resolution::NoMatch);
    }

    #[test]
    fn bad_requirement_is_reported() {
        assert!(matches!(
            resolve(&reference("one point two"), &[]),
            Resolution::InvalidRequirement(_)
        ));
    }

    #[test]
    fn duplicate_version_resolves_to_smallest_name() {
        let all = vec![
            version("z", "1.0.0", "Active"),
            version("a", "1.0.0", "Active"),
        ];
        assert_eq!(resolve(&reference("^1"), &all), Resolution::Active(&all[1]));
    }
}
