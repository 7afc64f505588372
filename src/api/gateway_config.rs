//! The gateway configuration document: what the builders render into the gateway ConfigMap and
//! what `mcp-operator gateway --config` reads. Secrets are never part of it: anything secret
//! reaches the pods through `secretKeyRef` environment variables.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{Enforcement, RateLimit, ToolAccessRule};
use super::policy::OverrideEnforcement;
use super::prompt::{PromptArgument, PromptMessage};

/// `apiVersion` of the gateway configuration document.
pub const GATEWAY_CONFIG_API_VERSION: &str = "mcp-operator.dev/v1alpha1";
/// `kind` of the gateway configuration document.
pub const GATEWAY_CONFIG_KIND: &str = "GatewayConfig";
/// File name of the document inside the gateway ConfigMap and its mount.
pub const GATEWAY_CONFIG_FILE: &str = "gateway.yaml";
/// Default largest request body, in bytes (4 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: i64 = 4 * 1024 * 1024;

/// Everything one gateway enforces for one server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    /// Always `mcp-operator.dev/v1alpha1`.
    pub api_version: String,
    /// Always `GatewayConfig`.
    pub kind: String,
    /// The MCPServer this gateway fronts.
    pub server: ServerIdentity,
    /// Address MCP clients connect to.
    pub listen: String,
    /// Address of the admin endpoint (health, metrics, inventory).
    pub admin_listen: String,
    /// HTTP path clients use for MCP.
    pub path: String,
    /// Canonical URI of the server (token audience and protected-resource metadata `resource`).
    pub resource: String,
    /// Where requests go.
    pub upstream: Upstream,
    /// Token validation; absent means the server accepts unauthenticated callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<GatewayAuthentication>,
    /// Per-tool access.
    pub authorization: GatewayAuthorization,
    /// Tool exposure and definition checks.
    pub tools: GatewayTools,
    /// Request limits.
    pub limits: GatewayLimits,
    /// Browser origins allowed to call; other `Origin` headers get 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Enforcement of runtime rules (the strictest of the selecting policies).
    pub enforcement: Enforcement,
    /// Managed prompts served by the gateway itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<ManagedPrompt>,
}

/// Namespace and name of an MCPServer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerIdentity {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Where the gateway sends requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "transport", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Upstream {
    /// An MCP streamable-HTTP server.
    StreamableHttp {
        /// URL of the server's MCP endpoint.
        url: String,
    },
    /// A legacy HTTP+SSE server.
    Sse {
        /// URL of the server's SSE endpoint.
        url: String,
    },
    /// A server the gateway spawns and talks to over stdin/stdout.
    Stdio {
        /// Program and arguments.
        command: Vec<String>,
    },
}

/// Token validation settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayAuthentication {
    /// Accepted token issuer.
    pub issuer: String,
    /// JWKS location; absent means discovered from the issuer's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Accepted audiences (the canonical resource URI).
    pub audiences: Vec<String>,
    /// Scopes every token must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// Claim holding the caller's groups.
    pub groups_claim: String,
    /// Longest accepted token lifetime, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_lifetime_seconds: Option<i64>,
}

/// Per-tool access settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayAuthorization {
    /// Hide and reject tools no rule allows.
    pub default_deny: bool,
    /// Rules from the server and its policies; a Deny wins over any Allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ToolAccessRule>,
}

/// Tool exposure and definition checks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayTools {
    /// Tool globs that may be exposed; empty means all not denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Tool globs never exposed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Hide tools whose definition hash is not approved.
    pub pin_definitions: bool,
    /// Check tools with the poisoning heuristics and hygiene rules (MCP-TOOL-001..005).
    pub scan_descriptions: bool,
    /// Approved definitions: tool name to hex SHA-256 of its canonical JSON (MCP-PIN-001/002).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub approved: BTreeMap<String, String>,
    /// Hide flagged, new and changed tools (an Enforce policy); otherwise they are only reported.
    #[serde(default)]
    pub quarantine: bool,
    /// Tool rules whose handling a policy override changed, by rule id: `Disabled` drops the
    /// rule's findings, `Audit` reports without hiding, `Enforce` hides without `quarantine`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rule_overrides: BTreeMap<String, OverrideEnforcement>,
    /// Seconds between two reads of the server's tool list besides `list_changed` notifications
    /// (default 60; at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_seconds: Option<u32>,
}

/// Request limits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayLimits {
    /// Largest request body, in bytes.
    pub max_request_bytes: i64,
    /// Per-caller rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// A prompt version resolved for this server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedPrompt {
    /// Prompt name.
    pub name: String,
    /// Resolved version.
    pub version: String,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<PromptArgument>,
    /// Messages with `{{argument}}` placeholders.
    pub messages: Vec<PromptMessage>,
}
