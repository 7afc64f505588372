//! The gateway configuration document and the ConfigMap that carries it.

use sha2::{Digest, Sha256};

use crate::api::common::Enforcement;
use crate::api::gateway_config::{
    DEFAULT_MAX_REQUEST_BYTES, GATEWAY_CONFIG_API_VERSION, GATEWAY_CONFIG_KIND,
    GatewayAuthentication, GatewayAuthorization, GatewayConfig, GatewayLimits, GatewayTools,
    ManagedPrompt, ServerIdentity, Upstream,
};
use crate::api::server::{DEFAULT_SSE_PATH, DEFAULT_STREAMABLE_PATH, MCPServerSpec, Transport};

use super::Ports;
use super::effective::EffectiveSettings;

/// Path MCP clients use on the gateway, whatever the upstream's path.
pub const GATEWAY_PATH: &str = "/mcp";

/// The in-cluster URL clients use: the Service's gateway port.
pub fn endpoint(name: &str, namespace: &str, ports: &Ports) -> String {
    format!(
        "http://{name}.{namespace}.svc:{}{GATEWAY_PATH}",
        ports.gateway
    )
}

/// Build the configuration of `namespace/name`'s gateway.
pub fn gateway_config(
    name: &str,
    namespace: &str,
    spec: &MCPServerSpec,
    effective: &EffectiveSettings,
    ports: &Ports,
    prompts: Vec<ManagedPrompt>,
) -> GatewayConfig {
    let endpoint = endpoint(name, namespace, ports);
    let resource = spec
        .authentication
        .as_ref()
        .and_then(|a| a.resource.clone())
        .unwrap_or(endpoint);
    let upstream = match spec.transport {
        Transport::StreamableHttp => Upstream::StreamableHttp {
            url: upstream_url(spec, ports.server, DEFAULT_STREAMABLE_PATH),
        },
        Transport::Sse => Upstream::Sse {
            url: upstream_url(spec, ports.server, DEFAULT_SSE_PATH),
        },
        Transport::Stdio => Upstream::Stdio {
            command: spec.command.iter().chain(&spec.args).cloned().collect(),
        },
    };
    let authentication = spec.authentication.as_ref().map(|a| GatewayAuthentication {
        issuer: a.issuer.clone(),
        jwks_uri: a.jwks_uri.clone(),
        audiences: vec![resource.clone()],
        required_scopes: effective.required_scopes.clone(),
        groups_claim: a.groups_claim.clone(),
        max_token_lifetime_seconds: effective.max_token_lifetime_seconds,
    });
    let gateway = spec.gateway.clone().unwrap_or_default();
    GatewayConfig {
        api_version: GATEWAY_CONFIG_API_VERSION.into(),
        kind: GATEWAY_CONFIG_KIND.into(),
        server: ServerIdentity {
            namespace: namespace.into(),
            name: name.into(),
        },
        listen: format!("0.0.0.0:{}", ports.gateway),
        admin_listen: format!("0.0.0.0:{}", ports.admin),
        path: GATEWAY_PATH.into(),
        resource,
        upstream,
        authentication,
        authorization: GatewayAuthorization {
            default_deny: effective.default_deny,
            rules: effective.authorization_rules.clone(),
        },
        tools: GatewayTools {
            allow: effective.tool_allow.clone(),
            deny: effective.tool_deny.clone(),
            pin_definitions: effective.pin_definitions,
            scan_descriptions: effective.scan_descriptions,
            approved: spec
                .tool_approvals
                .iter()
                .map(|a| (a.name.clone(), a.sha256.clone()))
                .collect(),
            quarantine: effective.enforcement == Enforcement::Enforce,
            rule_overrides: effective.tool_rule_overrides.clone(),
            refresh_seconds: None,
        },
        limits: GatewayLimits {
            max_request_bytes: gateway
                .max_request_bytes
                .unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
            rate_limit: effective.rate_limit.clone(),
        },
        allowed_origins: gateway.allowed_origins,
        enforcement: effective.enforcement,
        prompts,
    }
}

fn upstream_url(spec: &MCPServerSpec, port: i32, default_path: &str) -> String {
    let path = spec.path.as_deref().unwrap_or(default_path);
    format!("http://127.0.0.1:{port}{path}")
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(&Sha256::digest(bytes))
}
