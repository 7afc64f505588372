//! API types: the three custom resources and the documents exchanged with the gateway.
//! Nothing here depends on any other part of the crate.

pub mod common;
pub mod gateway_config;
pub mod policy;
pub mod prompt;
pub mod quantity;
pub mod selector;
pub mod server;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use common::{Enforcement, RuleAction, SubjectMatcher, ToolAccessRule};
pub use policy::{MCPPolicy, MCPPolicySpec};
pub use prompt::{MCPPromptVersion, MCPPromptVersionSpec};
pub use server::{MCPServer, MCPServerSpec, Transport};

/// API group of the custom resources.
pub const GROUP: &str = "mcp-operator.dev";
/// Served and stored version of the custom resources.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of the custom resources.
pub const API_VERSION: &str = "mcp-operator.dev/v1alpha1";

/// The CRDs of every kind, in a stable order (server, policy, prompt version).
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![MCPServer::crd(), MCPPolicy::crd(), MCPPromptVersion::crd()]
}
