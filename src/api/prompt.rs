//! `MCPPromptVersion`: one immutable version of one prompt.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of a semantic version (semver.org 2.0.0), as written in `spec.version`. Written
/// without backslashes so it embeds unchanged in a CEL string literal.
pub const SEMVER_PATTERN: &str = r"^(0|[1-9][0-9]*)[.](0|[1-9][0-9]*)[.](0|[1-9][0-9]*)(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)([.](0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?([+]([0-9a-zA-Z-]+([.][0-9a-zA-Z-]+)*))?$";

/// One immutable version of one prompt, served by the gateways of the MCPServers that reference it.
// Several printer columns share a type, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mcp-operator.dev",
    version = "v1alpha1",
    kind = "MCPPromptVersion",
    plural = "mcppromptversions",
    singular = "mcppromptversion",
    namespaced,
    status = "MCPPromptVersionStatus",
    derive = "PartialEq",
    shortname = "mcppv",
    category = "mcp",
    doc = "One immutable version of one prompt, served by the gateways of the MCPServers that reference it.",
    printcolumn(
        name = "Prompt",
        type_ = "string",
        json_path = ".spec.prompt",
        description = "Prompt name"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".spec.version",
        description = "Semantic version"
    ),
    printcolumn(
        name = "Lifecycle",
        type_ = "string",
        json_path = ".spec.lifecycle",
        description = "Active, Deprecated or Retired"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("has(self.title) == has(oldSelf.title) && has(self.description) == has(oldSelf.description) && has(self.arguments) == has(oldSelf.arguments)")
        .message("a published prompt version is immutable: only spec.lifecycle may change; publish a new version instead")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPPromptVersionSpec {
    /// Prompt name, as MCP clients see it in `prompts/list`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,128}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.prompt is immutable: publish a new version instead"))]
    pub prompt: String,

    /// Semantic version of this content (`1.2.0`).
    #[schemars(length(max = 128))]
    #[x_kube(
        validation = Rule::new(format!("self.matches('{SEMVER_PATTERN}')")).message("must be a semantic version such as 1.2.0 (MAJOR.MINOR.PATCH, optional -prerelease and +build)"),
        validation = Rule::new("self == oldSelf").message("spec.version is immutable: publish a new MCPPromptVersion instead")
    )]
    pub version: String,

    /// Human-readable title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.title is immutable: publish a new version instead"))]
    pub title: Option<String>,

    /// What the prompt is for, shown to users choosing a prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.description is immutable: publish a new version instead"))]
    pub description: Option<String>,

    /// Arguments clients pass to `prompts/get`; messages refer to them as `{{name}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.arguments is immutable: publish a new version instead"))]
    pub arguments: Vec<PromptArgument>,

    /// The messages `prompts/get` returns, in order.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.messages is immutable: publish a new version instead"))]
    pub messages: Vec<PromptMessage>,

    /// Active versions are served; Deprecated ones only when no Active version matches; Retired
    /// ones never. The only field that may change, and only forward.
    #[serde(default)]
    #[x_kube(validation = Rule::new("oldSelf == 'Active' || self == oldSelf || (oldSelf == 'Deprecated' && self == 'Retired')")
        .message("spec.lifecycle only moves forward: Active, then Deprecated, then Retired"))]
    pub lifecycle: Lifecycle,
}

/// An argument of a prompt.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PromptArgument {
    /// Argument name.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"))]
    pub name: String,
    /// What the argument means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Whether `prompts/get` must supply it. Defaults to false.
    #[serde(default)]
    pub required: bool,
}

/// One message of a prompt.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.text) != has(self.resource)")
    .message("a message has either text or resource, not both and not neither"))]
pub struct PromptMessage {
    /// Who speaks: user or assistant.
    pub role: Role,
    /// Text with `{{argument}}` placeholders, filled in literally (argument values are never interpreted as templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub text: Option<String>,
    /// An embedded resource instead of text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<EmbeddedResource>,
}

/// Speaker of a prompt message.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The user.
    #[serde(rename = "user")]
    User,
    /// The assistant.
    #[serde(rename = "assistant")]
    Assistant,
}

/// A text resource embedded in a prompt message.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedResource {
    /// URI identifying the resource.
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,
    /// Media type of the text. Defaults to text/plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub mime_type: Option<String>,
    /// Resource content.
    #[schemars(length(max = 65536))]
    pub text: String,
}

/// Lifecycle of a prompt version.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum Lifecycle {
    /// Served to every server whose requirement it satisfies.
    #[default]
    Active,
    /// Served only where no Active version matches; servers that resolve it get a Warning Event.
    Deprecated,
    /// Never served.
    Retired,
}

/// Observed state of an MCPPromptVersion.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MCPPromptVersionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Servers currently serving this version, as `namespace/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// SHA-256 of the canonical JSON of the content clients receive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// Conditions (Ready; Conflict when another object claims the same prompt and version).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
