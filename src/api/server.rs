//! `MCPServer`: one MCP server to run behind the gateway.

use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Condition};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Cidr, Enforcement, LabelSelector, RateLimit, ToolAccessRule};

/// Port the gateway listens on for MCP clients when `spec.gateway.port` is not set.
pub const DEFAULT_GATEWAY_PORT: i32 = 8443;
/// Port of the gateway's admin endpoint (health, metrics, live tool inventory).
pub const DEFAULT_ADMIN_PORT: i32 = 9090;
/// Port the MCP server container listens on when `spec.port` is not set.
pub const DEFAULT_SERVER_PORT: i32 = 8080;
/// Default HTTP path of a streamable-HTTP server.
pub const DEFAULT_STREAMABLE_PATH: &str = "/mcp";
/// Default HTTP path of a legacy HTTP+SSE server.
pub const DEFAULT_SSE_PATH: &str = "/sse";
/// Default user and group id the pods run as (non-root, above the host's system ids).
pub const DEFAULT_RUN_AS_ID: i64 = 65532;

/// An MCP server the operator runs behind its gateway, governed by the MCPPolicies that select it.
// Several printer columns share a type, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mcp-operator.dev",
    version = "v1alpha1",
    kind = "MCPServer",
    plural = "mcpservers",
    singular = "mcpserver",
    namespaced,
    status = "MCPServerStatus",
    derive = "PartialEq",
    shortname = "mcps",
    category = "mcp",
    doc = "An MCP server the operator runs behind its gateway, governed by the MCPPolicies that select it.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether the server is rolled out and serving"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas", description = "Ready replicas"),
    printcolumn(name = "Compliance", type_ = "integer", json_path = ".status.compliance.score", description = "Share of governance checks passed, in percent"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint", description = "In-cluster URL of the gateway"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63")
        .message("metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at most 63 characters): the server's Service is named after it")
)]
#[x_kube(
    validation = Rule::new("self.transport != 'stdio' || (has(self.command) && size(self.command) > 0)")
        .message("spec.command is required when spec.transport is stdio: the gateway spawns that command and bridges its stdin/stdout")
        .field_path(".command"),
    validation = Rule::new("self.transport != 'stdio' || !has(self.port)")
        .message("spec.port has no meaning for a stdio server: remove it (clients reach the gateway port)")
        .field_path(".port"),
    validation = Rule::new("self.transport != 'stdio' || !has(self.path)")
        .message("spec.path has no meaning for a stdio server: remove it")
        .field_path(".path"),
    validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))")
        .message("set either spec.replicas or spec.autoscaling, not both: the autoscaler owns the replica count")
        .field_path(".replicas")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerSpec {
    /// Container image of the MCP server. Pin it by digest (`registry/repo@sha256:...`): policies can require it.
    #[schemars(length(min = 1))]
    pub image: String,

    /// When the kubelet pulls the image. Defaults to IfNotPresent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Names of Secrets in the server's namespace holding registry credentials for the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,

    /// How the server speaks MCP: `streamable-http` (default), `sse` (legacy HTTP+SSE) or `stdio`
    /// (the gateway spawns `command` and bridges its stdin/stdout to streamable HTTP).
    #[serde(default)]
    pub transport: Transport,

    /// Port the server listens on inside the pod (HTTP transports only). Defaults to 8080.
    /// Clients never reach it directly: the Service targets the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// HTTP path of the server's MCP endpoint (HTTP transports only). Defaults to `/mcp`, or `/sse` for the sse transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/[!-~]*$"), length(max = 1024))]
    pub path: Option<String>,

    /// Entrypoint of the server container (replaces the image's ENTRYPOINT). Required for stdio.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,

    /// Arguments to the entrypoint (replace the image's CMD).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// Plain environment variables for the server. Never put credentials here: use secretEnv.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<PlainEnvVar>,

    /// Environment variables read from Secrets in the server's namespace. The operator never copies secret values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<SecretEnvVar>,

    /// Compute resources of the server container. Missing requests and limits get defaults
    /// (requests cpu 100m, memory 128Mi, ephemeral-storage 64Mi; limits cpu 1, memory 512Mi, ephemeral-storage 256Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceSettings>,

    /// Fixed number of pods. Defaults to 1. Mutually exclusive with autoscaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// Scale the server with a HorizontalPodAutoscaler instead of a fixed replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// Route a client to the same pod for the life of its MCP session (Service ClientIP affinity).
    /// Session-based streamable HTTP and SSE keep per-pod session state. Defaults to true.
    #[serde(default = "default_true")]
    pub session_affinity: bool,

    /// Destinations the server (and its gateway) may reach besides cluster DNS. Everything else is denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,

    /// Clients allowed to reach the gateway port. Empty means pods in the server's own namespace only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressPeer>,

    /// OAuth 2.1 access-token validation at the gateway. Policies can require it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<ServerAuthentication>,

    /// Who may list and call which tools. Once any rule exists, tools no rule allows are hidden
    /// and their calls rejected; MCPPolicies can narrow this further, never widen it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization: Vec<ToolAccessRule>,

    /// Approved tool definitions, by name and SHA-256 (the gateway's admin /inventory lists the
    /// live hashes; docs/tool-approvals.md explains the flow). Under a policy with
    /// `tools.pinDefinitions`, a tool missing here (new) or listed with another hash (changed) is
    /// reported, and hidden by the gateway when the policy enforces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub tool_approvals: Vec<ToolApproval>,

    /// Managed prompts (MCPPromptVersion objects in this namespace) the gateway serves through `prompts/list` and `prompts/get`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<PromptReference>,

    /// Settings of the gateway sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySettings>,

    /// User and group ids the pod runs as. Defaults to 65532 for all three; 0 (root) is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodIdentity>,
}

fn default_true() -> bool {
    true
}

/// The MCP transport the server speaks.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// MCP streamable HTTP on one path.
    #[default]
    #[serde(rename = "streamable-http")]
    StreamableHttp,
    /// The legacy HTTP+SSE transport (GET opens the event stream, POST sends messages).
    #[serde(rename = "sse")]
    Sse,
    /// JSON-RPC over the process's stdin and stdout.
    #[serde(rename = "stdio")]
    Stdio,
}

impl Transport {
    /// The value as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::StreamableHttp => "streamable-http",
            Transport::Sse => "sse",
            Transport::Stdio => "stdio",
        }
    }
}

/// When the kubelet pulls an image.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull only when the node does not have the image.
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The value as written in a Pod spec.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// A plain environment variable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PlainEnvVar {
    /// Variable name.
    #[schemars(regex(pattern = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"), length(max = 256))]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    pub value: String,
}

/// An environment variable whose value comes from a Secret key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretEnvVar {
    /// Variable name.
    #[schemars(regex(pattern = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"), length(max = 256))]
    pub name: String,
    /// The Secret key to read.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret in the server's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(max = 253))]
    pub key: String,
    /// Start the pod even when the Secret or key is missing. Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// Requests and limits of one container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ResourceSettings {
    /// What the scheduler reserves for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ComputeResources>,
    /// The most the container may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ComputeResources>,
}

/// Amounts of cpu, memory and ephemeral storage, as Kubernetes quantities (`250m`, `1`, `512Mi`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ComputeResources {
    /// CPU, in cores (`500m` is half a core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory, in bytes (`256Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Local scratch space, in bytes (`1Gi`).
    #[serde(
        default,
        rename = "ephemeral-storage",
        skip_serializing_if = "Option::is_none"
    )]
    pub ephemeral_storage: Option<Quantity>,
}

/// HorizontalPodAutoscaler settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
    .field_path(".minReplicas"))]
pub struct Autoscaling {
    /// Fewest pods. Defaults to 1.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU use, in percent of requests, the autoscaler aims for. Defaults to 70.
    #[serde(default = "default_cpu_target", rename = "targetCPUUtilization")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: i32,
    /// Average memory use, in percent of requests, the autoscaler aims for. Not used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_memory_utilization: Option<i32>,
}

fn default_min_replicas() -> i32 {
    1
}

fn default_cpu_target() -> i32 {
    70
}

/// A destination the pod may open connections to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Destination network in CIDR notation (`140.82.112.0/20`, `2001:db8::/32`).
    pub cidr: Cidr,
    /// Destination ports. At least one: the operator never opens a whole network on every port.
    #[schemars(length(min = 1, max = 64))]
    pub ports: Vec<EgressPort>,
}

/// One destination port.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EgressPort {
    /// Port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// TCP (default) or UDP.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Transport protocol of a port.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum Protocol {
    /// TCP.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    /// The value as written in Kubernetes objects.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// Pods allowed to reach the gateway port: those matching both selectors that are set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.namespaceSelector) || has(self.podSelector)")
    .message("an ingress entry needs namespaceSelector, podSelector or both"))]
pub struct IngressPeer {
    /// Namespaces whose pods may connect; `{}` means every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Pods that may connect (in the selected namespaces, or the server's own when namespaceSelector is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

/// OAuth 2.1 resource-server settings of the gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServerAuthentication {
    /// Issuer (`iss`) of the access tokens the gateway accepts, an https URL.
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("must be an https URL"))]
    #[schemars(length(max = 2048))]
    pub issuer: String,
    /// Where the issuer publishes its signing keys. Defaults to the `jwks_uri` of the issuer's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("must be an https URL"))]
    pub jwks_uri: Option<String>,
    /// Canonical URI of this server as clients address it (the token audience, RFC 8707).
    /// Defaults to the in-cluster endpoint `http://NAME.NAMESPACE.svc:PORT/PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("must be an absolute http(s) URL"))]
    pub resource: Option<String>,
    /// Scopes every token must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// Token claim that lists the caller's groups. Defaults to `groups`.
    #[serde(default = "default_groups_claim")]
    #[schemars(length(min = 1, max = 256))]
    pub groups_claim: String,
}

fn default_groups_claim() -> String {
    "groups".to_string()
}

/// One approved tool definition.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ToolApproval {
    /// Tool name.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,128}$"))]
    pub name: String,
    /// Hex SHA-256 of the RFC 8785 canonical JSON of the whole tool definition, as status.tools shows it.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
}

/// A managed prompt the gateway serves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PromptReference {
    /// Prompt name (`spec.prompt` of the MCPPromptVersion objects).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,128}$"))]
    pub name: String,
    /// Semver requirement the version must satisfy, Cargo style: `^1.2` (1.2.0 up to, not
    /// including, 2.0.0), `~1.2.3`, `=1.2.0`, `>=1.0, <2.0`. The highest Active match is served.
    #[schemars(length(min = 1, max = 256))]
    pub version: String,
}

/// Settings of the gateway sidecar.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySettings {
    /// Port clients reach (the Service's `mcp` port). Defaults to 8443.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: Option<i32>,
    /// Port of the admin endpoint (health, metrics, tool inventory). Defaults to 9090.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535))]
    pub admin_port: Option<i32>,
    /// Compute resources of the gateway container. Defaults: requests cpu 50m, memory 64Mi,
    /// ephemeral-storage 16Mi; limits cpu 500m, memory 256Mi, ephemeral-storage 64Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceSettings>,
    /// Browser origins allowed to call the server (`https://app.example.com`). A request with any other `Origin` header gets 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Largest request body the gateway accepts, in bytes. Defaults to 4 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 67108864))]
    pub max_request_bytes: Option<i64>,
    /// Request rate limits applied per caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Longest the gateway keeps polling for the next event after a request starts or ends,
    /// instead of sleeping, in microseconds (`--busy-poll-microseconds`; each serving thread
    /// adapts its window to the gaps it sees): lower latency for back-to-back calls, paid in CPU
    /// time that counts against the container's CPU limit. 0 turns it off. When absent the
    /// gateway decides: 100 when its CPU limit leaves a whole CPU per serving thread plus one
    /// (or there is no limit), off otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub busy_poll_microseconds: Option<i32>,
}

/// User and group ids of the pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodIdentity {
    /// User id of every container. Must not be 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub run_as_user: Option<i64>,
    /// Primary group id of every container. Must not be 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub run_as_group: Option<i64>,
    /// Group that owns mounted volumes. Must not be 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub fs_group: Option<i64>,
}

/// Observed state of an MCPServer, written by the controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One-word summary: Pending, Progressing, Ready, Degraded, Blocked or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// In-cluster URL MCP clients use (the gateway, never the raw server port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Pods of the current Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Label selector of the server's pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Ready, Progressing, Degraded, PolicyCompliant, AuthConfigured, ToolsVerified, PromptsResolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// MCPPolicies that select this server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<AppliedPolicy>,
    /// Governance rules this server fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// Governance summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance: Option<Compliance>,
    /// Tools the server advertises, as seen by its gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolStatus>,
    /// Managed prompts and the versions they resolved to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<ResolvedPrompt>,
}

/// A policy applied to the server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AppliedPolicy {
    /// Policy name.
    pub name: String,
    /// The policy's `metadata.generation` that was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The policy's enforcement.
    pub enforcement: Enforcement,
}

/// One failed governance rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Stable rule id (`MCP-SUPPLY-001`).
    pub rule: String,
    /// critical, high, medium or low.
    pub severity: String,
    /// What is wrong and what to change.
    pub message: String,
    /// Whether an Enforce policy blocks on this rule.
    pub enforced: bool,
}

/// Governance summary.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Compliance {
    /// Passed checks in percent of all evaluated checks.
    pub score: i32,
    /// Checks passed.
    pub passed: i32,
    /// Checks failed.
    pub failed: i32,
}

/// A tool the server advertises.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ToolStatus {
    /// Tool name.
    pub name: String,
    /// SHA-256 of the canonical JSON of the whole tool definition.
    pub sha256: String,
    /// Approved, New, Changed, Quarantined or Flagged.
    pub state: String,
    /// Why the tool is not Approved: the rule and what was seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// A managed prompt and the version it resolved to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedPrompt {
    /// Prompt name.
    pub name: String,
    /// The requested semver requirement.
    pub requested: String,
    /// The version served, when one matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_version: Option<String>,
    /// The served version is Deprecated (no Active version matches).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
}
