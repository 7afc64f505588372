//! Checks the CRD schema cannot express: quantities, semver requirements, globs, duplicate
//! names, port clashes, placeholders. Each returns every problem with its field path.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use globset::Glob;
use regex::Regex;

use crate::api::common::ToolAccessRule;
use crate::api::policy::MCPPolicySpec;
use crate::api::prompt::MCPPromptVersionSpec;
use crate::api::quantity::parse_quantity;
use crate::api::selector::selector_problem;
use crate::api::server::{
    DEFAULT_ADMIN_PORT, DEFAULT_GATEWAY_PORT, DEFAULT_SERVER_PORT, MCPServerSpec, ResourceSettings,
    Transport,
};

use super::FieldError;

/// `{{name}}` placeholders in prompt text.
static PLACEHOLDER: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\{\{\s*([^{}]*?)\s*\}\}").ok());

/// The argument names a prompt text refers to, in order of appearance.
pub fn placeholders(text: &str) -> Vec<String> {
    PLACEHOLDER
        .as_ref()
        .map(|re| {
            re.captures_iter(text)
                .filter_map(|c| Some(c.get(1)?.as_str().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Fill each `{{name}}` placeholder of `text` with its value in one pass: values are copied as
/// they are, never read as templates, so a value containing `{{other}}` stays literal. A
/// declared argument without a value (an optional one not given) becomes empty; any other
/// placeholder is left as written.
pub fn fill_placeholders(
    text: &str,
    values: &BTreeMap<String, String>,
    declared: &BTreeSet<&str>,
) -> String {
    let Some(re) = PLACEHOLDER.as_ref() else {
        return text.to_owned();
    };
    re.replace_all(text, |c: &regex::Captures<'_>| {
        let name = c.get(1).map_or("", |m| m.as_str());
        match values.get(name) {
            Some(value) => value.clone(),
            None if declared.contains(name) => String::new(),
            None => c.get(0).map_or("", |m| m.as_str()).to_owned(),
        }
    })
    .into_owned()
}

/// Checks on an MCPServer spec.
pub fn check_server(spec: &MCPServerSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_resources(spec.resources.as_ref(), "spec.resources", &mut errors);
    if let Some(gateway) = &spec.gateway {
        check_resources(
            gateway.resources.as_ref(),
            "spec.gateway.resources",
            &mut errors,
        );
        for (i, origin) in gateway.allowed_origins.iter().enumerate() {
            if !is_origin(origin) {
                errors.push(FieldError::new(
                    format!("spec.gateway.allowedOrigins[{i}]"),
                    format!("{origin:?} is not an origin: expected scheme://host[:port] with no path, such as https://app.example.com"),
                ));
            }
        }
        if let Some(limit) = &gateway.rate_limit {
            check_rate_limit_globs(limit, "spec.gateway.rateLimit", &mut errors);
        }
    }

    let gateway_port = spec
        .gateway
        .as_ref()
        .and_then(|g| g.port)
        .unwrap_or(DEFAULT_GATEWAY_PORT);
    let admin_port = spec
        .gateway
        .as_ref()
        .and_then(|g| g.admin_port)
        .unwrap_or(DEFAULT_ADMIN_PORT);
    if gateway_port == admin_port {
        errors.push(FieldError::new(
            "spec.gateway.adminPort",
            format!("port {admin_port} is also the gateway port: choose two different ports"),
        ));
    }
    if spec.transport != Transport::Stdio {
        let server_port = spec.port.unwrap_or(DEFAULT_SERVER_PORT);
        if server_port == gateway_port || server_port == admin_port {
            errors.push(FieldError::new(
                "spec.port",
                format!("port {server_port} is taken by the gateway in the same pod (ports {gateway_port} and {admin_port}): choose another port or move the gateway with spec.gateway.port/adminPort"),
            ));
        }
    }

    let mut seen = BTreeMap::new();
    let env_names = spec
        .env
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("spec.env[{i}].name"), &e.name))
        .chain(
            spec.secret_env
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("spec.secretEnv[{i}].name"), &e.name)),
        );
    for (path, name) in env_names {
        if let Some(first) = seen.insert(name.clone(), path.clone()) {
            errors.push(FieldError::new(
                path,
                format!("variable {name:?} is already set at {first}: each name once"),
            ));
        }
    }

    for (i, peer) in spec.ingress.iter().enumerate() {
        for (field, selector) in [
            ("namespaceSelector", &peer.namespace_selector),
            ("podSelector", &peer.pod_selector),
        ] {
            if let Some(problem) = selector.as_ref().and_then(selector_problem) {
                errors.push(FieldError::new(
                    format!("spec.ingress[{i}].{field}"),
                    problem,
                ));
            }
        }
    }
    check_rules(&spec.authorization, "spec.authorization", &mut errors);

    if let Some(resource) = spec
        .authentication
        .as_ref()
        .and_then(|a| a.resource.as_ref())
        && (resource.contains('#') || resource.ends_with('/'))
    {
        errors.push(FieldError::new(
            "spec.authentication.resource",
            format!("{resource:?} is not a canonical resource URI: no fragment and no trailing slash (RFC 8707)"),
        ));
    }

    let mut prompt_names = BTreeSet::new();
    for (i, prompt) in spec.prompts.iter().enumerate() {
        if let Err(e) = semver::VersionReq::parse(&prompt.version) {
            errors.push(FieldError::new(
                format!("spec.prompts[{i}].version"),
                format!("{:?} is not a semver requirement ({e}): expected e.g. ^1.2, ~1.2.3, =1.2.0 or >=1.0, <2.0", prompt.version),
            ));
        }
        if !prompt_names.insert(&prompt.name) {
            errors.push(FieldError::new(
                format!("spec.prompts[{i}].name"),
                format!(
                    "prompt {:?} is referenced twice: reference each prompt once",
                    prompt.name
                ),
            ));
        }
    }
    errors
}

/// Checks on an MCPPolicy spec.
pub fn check_policy(spec: &MCPPolicySpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (field, selector) in [
        ("spec.namespaceSelector", &spec.namespace_selector),
        ("spec.serverSelector", &spec.server_selector),
    ] {
        if let Some(problem) = selector.as_ref().and_then(selector_problem) {
            errors.push(FieldError::new(field, problem));
        }
    }
    if let Some(authz) = &spec.authorization {
        check_rules(&authz.rules, "spec.authorization.rules", &mut errors);
    }
    if let Some(tools) = &spec.tools {
        check_globs(&tools.allow, "spec.tools.allow", &mut errors);
        check_globs(&tools.deny, "spec.tools.deny", &mut errors);
    }
    if let Some(authn) = &spec.authentication {
        for (i, issuer) in authn.allowed_issuers.iter().enumerate() {
            if !issuer.starts_with("https://") {
                errors.push(FieldError::new(
                    format!("spec.authentication.allowedIssuers[{i}]"),
                    format!("{issuer:?} must be an https URL"),
                ));
            }
        }
    }
    if let Some(workload) = &spec.workload {
        for (i, prefix) in workload.allowed_registries.iter().enumerate() {
            if prefix.trim().is_empty() || prefix.contains(char::is_whitespace) {
                errors.push(FieldError::new(
                    format!("spec.workload.allowedRegistries[{i}]"),
                    format!("{prefix:?} is not an image prefix: expected e.g. ghcr.io/acme/"),
                ));
            }
        }
    }
    if let Some(limit) = &spec.rate_limit {
        check_rate_limit_globs(limit, "spec.rateLimit", &mut errors);
    }
    let mut overridden = BTreeSet::new();
    for (i, o) in spec.overrides.iter().enumerate() {
        if !overridden.insert(&o.rule) {
            errors.push(FieldError::new(
                format!("spec.overrides[{i}].rule"),
                format!(
                    "rule {} is overridden twice: keep one entry per rule",
                    o.rule
                ),
            ));
        }
    }
    errors
}

/// Checks on an MCPPromptVersion spec.
pub fn check_prompt_version(spec: &MCPPromptVersionSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Err(e) = semver::Version::parse(&spec.version) {
        errors.push(FieldError::new(
            "spec.version",
            format!(
                "{:?} is not a semantic version ({e}): expected MAJOR.MINOR.PATCH such as 1.2.0",
                spec.version
            ),
        ));
    }
    let mut declared = BTreeSet::new();
    for (i, argument) in spec.arguments.iter().enumerate() {
        if !declared.insert(argument.name.as_str()) {
            errors.push(FieldError::new(
                format!("spec.arguments[{i}].name"),
                format!(
                    "argument {:?} is declared twice: argument names are unique",
                    argument.name
                ),
            ));
        }
    }
    for (i, message) in spec.messages.iter().enumerate() {
        let (field, text) = match (&message.text, &message.resource) {
            (Some(text), _) => ("text", text.as_str()),
            (None, Some(resource)) => ("resource.text", resource.text.as_str()),
            (None, None) => continue,
        };
        if text.trim().is_empty() {
            errors.push(FieldError::new(
                format!("spec.messages[{i}].{field}"),
                "is empty: a message needs content",
            ));
        }
        for name in placeholders(text) {
            if !declared.contains(name.as_str()) {
                errors.push(FieldError::new(
                    format!("spec.messages[{i}].{field}"),
                    format!("placeholder {{{{{name}}}}} names no declared argument: declare it in spec.arguments or remove it"),
                ));
            }
        }
    }
    errors
}

fn check_rules(rules: &[ToolAccessRule], path: &str, errors: &mut Vec<FieldError>) {
    for (i, rule) in rules.iter().enumerate() {
        check_globs(&rule.tools, &format!("{path}[{i}].tools"), errors);
    }
}

fn check_rate_limit_globs(
    limit: &crate::api::common::RateLimit,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    for (i, per_tool) in limit.per_tool.iter().enumerate() {
        check_globs(
            &per_tool.tools,
            &format!("{path}.perTool[{i}].tools"),
            errors,
        );
    }
}

fn check_globs(globs: &[String], path: &str, errors: &mut Vec<FieldError>) {
    for (i, glob) in globs.iter().enumerate() {
        if glob.is_empty() {
            errors.push(FieldError::new(
                format!("{path}[{i}]"),
                "empty glob: expected a tool name or pattern such as get_*",
            ));
        } else if let Err(e) = Glob::new(glob) {
            errors.push(FieldError::new(
                format!("{path}[{i}]"),
                format!("{glob:?} is not a valid glob: {}", e.kind()),
            ));
        }
    }
}

fn check_resources(resources: Option<&ResourceSettings>, path: &str, errors: &mut Vec<FieldError>) {
    let Some(resources) = resources else { return };
    let mut values: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for (side, amounts) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let Some(amounts) = amounts else { continue };
        for (name, quantity) in [
            ("cpu", &amounts.cpu),
            ("memory", &amounts.memory),
            ("ephemeral-storage", &amounts.ephemeral_storage),
        ] {
            let Some(quantity) = quantity else { continue };
            match parse_quantity(&quantity.0) {
                Some(v) if v >= 0.0 => {
                    values.insert((side, name), v);
                }
                _ => errors.push(FieldError::new(
                    format!("{path}.{side}.{name}"),
                    format!(
                        "{:?} is not a Kubernetes quantity: expected e.g. 250m, 1, 512Mi, 2Gi",
                        quantity.0
                    ),
                )),
            }
        }
    }
    for name in ["cpu", "memory", "ephemeral-storage"] {
        if let (Some(request), Some(limit)) = (
            values.get(&("requests", name)),
            values.get(&("limits", name)),
        ) && request > limit
        {
            errors.push(FieldError::new(
                format!("{path}.requests.{name}"),
                format!("the request is larger than the limit {path}.limits.{name}: a request must not exceed its limit"),
            ));
        }
    }
}

fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains('/')
        && !rest.contains('?')
        && !rest.contains('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(yaml: &str) -> MCPServerSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn placeholders_are_found() {
        assert_eq!(
            placeholders("Hi {{ name }}, see {{topic}}."),
            vec!["name", "topic"]
        );
    }

    #[test]
    fn request_above_limit_is_refused() {
        let errors = check_server(&server(
            "image: a\nresources: {requests: {memory: 1Gi}, limits: {memory: 512Mi}}\n",
        ));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "spec.resources.requests.memory");
    }

    #[test]
    fn server_port_clashing_with_gateway_is_refused() {
        let errors = check_server(&server("image: a\nport: 8443\n"));
        assert_eq!(errors[0].path, "spec.port");
    }

    #[test]
    fn clean_server_passes() {
        assert!(
            check_server(&server("image: a\nprompts: [{name: t, version: '^1.2'}]\n")).is_empty()
        );
    }
}
