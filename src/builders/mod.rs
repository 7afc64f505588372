//! Desired-state builders: from an MCPServer, the MCPPolicies that select it and the
//! MCPPromptVersions of its namespace, build every object the operator manages for it.
//! Plain functions over data: no client, no I/O.

pub mod effective;
pub mod gateway;
pub mod labels;
pub mod network;
pub mod pod;
pub mod prompts;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use crate::api::gateway_config::{GATEWAY_CONFIG_FILE, GatewayConfig};
use crate::api::server::{DEFAULT_ADMIN_PORT, DEFAULT_GATEWAY_PORT, DEFAULT_SERVER_PORT};
use crate::api::{MCPPolicy, MCPPromptVersion, MCPServer};

use self::effective::EffectiveSettings;
use self::labels::{
    COMPONENT_GATEWAY_CONFIG, COMPONENT_SERVER, child_labels, gateway_config_name, selector_labels,
};
use self::prompts::Resolution;

/// Cluster facts the builders need that no MCPServer states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildContext {
    /// Image of `mcp-operator` used for the gateway sidecar and the stdio wrapper.
    pub gateway_image: String,
    /// Namespace the operator runs in (allowed to reach the gateways' admin port).
    pub operator_namespace: String,
    /// Namespace of the cluster DNS pods.
    pub dns_namespace: String,
    /// Labels of the cluster DNS pods.
    pub dns_pod_labels: BTreeMap<String, String>,
    /// Cluster-wide defaults of the gateway container's resources: requests and limits of cpu,
    /// memory and ephemeral storage, for whatever a server's `spec.gateway.resources` leaves out.
    pub gateway_resources: GatewayResourceDefaults,
}

/// Requests and limits (cpu, memory, ephemeral-storage) of the gateway container by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayResourceDefaults {
    pub requests: [String; 3],
    pub limits: [String; 3],
}

impl Default for GatewayResourceDefaults {
    fn default() -> Self {
        GatewayResourceDefaults {
            requests: ["50m".into(), "64Mi".into(), "16Mi".into()],
            limits: ["500m".into(), "256Mi".into(), "64Mi".into()],
        }
    }
}

/// Default image of the gateway: this build's release.
pub const DEFAULT_GATEWAY_IMAGE: &str = concat!(
    "ghcr.io/mcp-operator/mcp-operator:",
    env!("CARGO_PKG_VERSION")
);
/// Default namespace of the operator.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "mcp-operator";

impl Default for BuildContext {
    fn default() -> Self {
        BuildContext {
            gateway_image: DEFAULT_GATEWAY_IMAGE.into(),
            operator_namespace: DEFAULT_OPERATOR_NAMESPACE.into(),
            dns_namespace: "kube-system".into(),
            dns_pod_labels: BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())]),
            gateway_resources: GatewayResourceDefaults::default(),
        }
    }
}

/// The ports of one server's pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// The MCP server's own port (HTTP transports).
    pub server: i32,
    /// The gateway's client port.
    pub gateway: i32,
    /// The gateway's admin port.
    pub admin: i32,
}

/// What a builder needs to know about one server.
#[derive(Clone, Copy, Debug)]
pub struct ServerInputs<'a> {
    /// The server.
    pub server: &'a MCPServer,
    /// The policies that select it.
    pub policies: &'a [&'a MCPPolicy],
    /// The prompt versions of its namespace.
    pub prompt_versions: &'a [MCPPromptVersion],
}

/// How one prompt reference resolved, for status and events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptOutcome {
    /// Prompt name.
    pub name: String,
    /// Requested semver requirement.
    pub requested: String,
    /// Resolved version, if any.
    pub resolved_version: Option<String>,
    /// Name of the MCPPromptVersion object resolved to.
    pub resolved_object: Option<String>,
    /// The resolved version is Deprecated.
    pub deprecated: bool,
    /// Why nothing resolved, when nothing did.
    pub problem: Option<String>,
    /// Versions in range that were not served because their content changed after publication
    /// (MCP-PROMPT-001), as messages.
    pub altered: Vec<String>,
}

/// Everything the operator wants to exist for one server.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredState {
    pub service_account: ServiceAccount,
    pub gateway_config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub network_policy: NetworkPolicy,
    /// Present only when autoscaling is set.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    /// Present only when more than one replica can run.
    pub disruption_budget: Option<PodDisruptionBudget>,
    /// The document inside the gateway ConfigMap.
    pub gateway_config: GatewayConfig,
    /// The merged runtime settings the objects were rendered from.
    pub effective: EffectiveSettings,
    /// Prompt resolution results.
    pub prompts: Vec<PromptOutcome>,
    /// In-cluster URL of the gateway.
    pub endpoint: String,
}

/// Why a server's objects cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("metadata.name is missing: every MCPServer needs a name")]
    MissingName,
    #[error("metadata.namespace of MCPServer {name:?} is missing: MCPServer is namespaced")]
    MissingNamespace { name: String },
    #[error("the gateway configuration of {name:?} could not be serialised: {source}")]
    SerializeConfig {
        name: String,
        #[source]
        source: serde_saphyr::SerializeError,
    },
    #[error("object {kind} {name:?} could not be converted to JSON: {source}")]
    ToJson {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Build the desired state of one server.
pub fn build(inputs: ServerInputs<'_>, ctx: &BuildContext) -> Result<DesiredState, BuildError> {
    let server = inputs.server;
    let name = server
        .metadata
        .name
        .clone()
        .ok_or(BuildError::MissingName)?;
    let namespace = server
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| BuildError::MissingNamespace { name: name.clone() })?;
    let spec = &server.spec;
    let gateway_settings = spec.gateway.clone().unwrap_or_default();
    let ports = Ports {
        server: spec.port.unwrap_or(DEFAULT_SERVER_PORT),
        gateway: gateway_settings.port.unwrap_or(DEFAULT_GATEWAY_PORT),
        admin: gateway_settings.admin_port.unwrap_or(DEFAULT_ADMIN_PORT),
    };
    let owner = owner_reference(server, &name);
    let meta = |object_name: String, component: &str| ObjectMeta {
        name: Some(object_name),
        namespace: Some(namespace.clone()),
        labels: Some(child_labels(&name, component)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };

    let effective = effective::merge(spec, inputs.policies);
    let (managed_prompts, prompt_outcomes) = resolve_prompts(inputs);
    let gateway_config =
        gateway::gateway_config(&name, &namespace, spec, &effective, &ports, managed_prompts);
    let config_text =
        serde_saphyr::to_string(&gateway_config).map_err(|source| BuildError::SerializeConfig {
            name: name.clone(),
            source,
        })?;
    // The pods roll when the configuration changes, except for the prompt bundle: the gateway
    // reloads that from the mounted file and tells open sessions (prompts/list_changed).
    let without_prompts = GatewayConfig {
        prompts: Vec::new(),
        ..gateway_config.clone()
    };
    let config_hash = gateway::sha256_hex(
        serde_saphyr::to_string(&without_prompts)
            .map_err(|source| BuildError::SerializeConfig {
                name: name.clone(),
                source,
            })?
            .as_bytes(),
    );
    let gateway_config_map = ConfigMap {
        metadata: meta(gateway_config_name(&name), COMPONENT_GATEWAY_CONFIG),
        data: Some(BTreeMap::from([(
            GATEWAY_CONFIG_FILE.to_string(),
            config_text,
        )])),
        ..Default::default()
    };

    let max_replicas = match &spec.autoscaling {
        Some(a) => a.max_replicas,
        None => spec.replicas.unwrap_or(1),
    };
    let template = pod::pod_template(&name, spec, &ports, ctx, &config_hash, max_replicas > 1);
    let selector = LabelSelector {
        match_labels: Some(selector_labels(&name)),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta(name.clone(), COMPONENT_SERVER),
        spec: Some(DeploymentSpec {
            // With autoscaling the HPA owns the count: leaving it out keeps server-side apply
            // from fighting the autoscaler.
            replicas: if spec.autoscaling.is_some() {
                None
            } else {
                Some(spec.replicas.unwrap_or(1))
            },
            selector: selector.clone(),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template,
            ..Default::default()
        }),
        ..Default::default()
    };

    let service = Service {
        metadata: meta(name.clone(), COMPONENT_SERVER),
        spec: Some(network::service_spec(&name, spec, &ports)),
        ..Default::default()
    };
    let network_policy = NetworkPolicy {
        metadata: meta(name.clone(), COMPONENT_SERVER),
        spec: Some(network::network_policy_spec(
            &name,
            spec,
            &effective.egress,
            &ports,
            ctx,
        )),
    };
    let service_account = ServiceAccount {
        metadata: meta(name.clone(), COMPONENT_SERVER),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let autoscaler = spec.autoscaling.as_ref().map(|a| {
        let mut metrics = vec![utilization_metric("cpu", a.target_cpu_utilization)];
        if let Some(memory) = a.target_memory_utilization {
            metrics.push(utilization_metric("memory", memory));
        }
        HorizontalPodAutoscaler {
            metadata: meta(name.clone(), COMPONENT_SERVER),
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: name.clone(),
                },
                min_replicas: Some(a.min_replicas),
                max_replicas: a.max_replicas,
                metrics: Some(metrics),
                ..Default::default()
            }),
            ..Default::default()
        }
    });
    let disruption_budget = (max_replicas > 1).then(|| PodDisruptionBudget {
        metadata: meta(name.clone(), COMPONENT_SERVER),
        spec: Some(PodDisruptionBudgetSpec {
            // One pod at a time: drains proceed even while only one replica runs.
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector),
            ..Default::default()
        }),
        ..Default::default()
    });

    Ok(DesiredState {
        service_account,
        gateway_config_map,
        deployment,
        service,
        network_policy,
        autoscaler,
        disruption_budget,
        endpoint: gateway::endpoint(&name, &namespace, &ports),
        gateway_config,
        effective,
        prompts: prompt_outcomes,
    })
}

impl DesiredState {
    /// Every object, in apply order (what pods mount and run as comes before the pods), as JSON.
    pub fn objects(&self) -> Result<Vec<serde_json::Value>, BuildError> {
        let mut objects = vec![
            to_json("ServiceAccount", &self.service_account)?,
            to_json("ConfigMap", &self.gateway_config_map)?,
            to_json("Deployment", &self.deployment)?,
            to_json("Service", &self.service)?,
            to_json("NetworkPolicy", &self.network_policy)?,
        ];
        if let Some(hpa) = &self.autoscaler {
            objects.push(to_json("HorizontalPodAutoscaler", hpa)?);
        }
        if let Some(pdb) = &self.disruption_budget {
            objects.push(to_json("PodDisruptionBudget", pdb)?);
        }
        Ok(objects)
    }
}

fn to_json<K: Resource<DynamicType = ()> + serde::Serialize>(
    kind: &'static str,
    object: &K,
) -> Result<serde_json::Value, BuildError> {
    serde_json::to_value(object).map_err(|source| BuildError::ToJson {
        kind,
        name: object.meta().name.clone().unwrap_or_default(),
        source,
    })
}

/// The controller owner reference to the server. Without a uid (a manifest that was never
/// applied, as in `render`) the uid is empty: the API server refuses such an object rather than
/// garbage-collecting it.
fn owner_reference(server: &MCPServer, name: &str) -> OwnerReference {
    OwnerReference {
        api_version: MCPServer::api_version(&()).into_owned(),
        kind: MCPServer::kind(&()).into_owned(),
        name: name.to_string(),
        uid: server.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn utilization_metric(resource: &str, average_utilization: i32) -> MetricSpec {
    MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: resource.into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(average_utilization),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

fn resolve_prompts(
    inputs: ServerInputs<'_>,
) -> (
    Vec<crate::api::gateway_config::ManagedPrompt>,
    Vec<PromptOutcome>,
) {
    let mut managed = Vec::new();
    let mut outcomes = Vec::new();
    for reference in &inputs.server.spec.prompts {
        let mut outcome = PromptOutcome {
            name: reference.name.clone(),
            requested: reference.version.clone(),
            resolved_version: None,
            resolved_object: None,
            deprecated: false,
            problem: None,
            altered: Vec::new(),
        };
        if let Ok(requirement) = semver::VersionReq::parse(&reference.version) {
            outcome.altered = inputs
                .prompt_versions
                .iter()
                .filter(|v| v.spec.prompt == reference.name)
                .filter(|v| {
                    semver::Version::parse(&v.spec.version).is_ok_and(|n| requirement.matches(&n))
                })
                .filter(|v| prompts::altered(v))
                .map(|v| {
                    format!(
                        "MCPPromptVersion {} ({} {}) changed content after publication (recorded {}, now {}): restore it, or publish the change as a new version",
                        v.metadata.name.as_deref().unwrap_or_default(),
                        v.spec.prompt,
                        v.spec.version,
                        v.status.as_ref().and_then(|s| s.content_hash.as_deref()).unwrap_or_default(),
                        prompts::content_hash(v)
                    )
                })
                .collect();
        }
        match prompts::resolve(reference, inputs.prompt_versions) {
            Resolution::Active(found) | Resolution::Deprecated(found) => {
                outcome.deprecated =
                    found.spec.lifecycle == crate::api::prompt::Lifecycle::Deprecated;
                outcome.resolved_version = Some(found.spec.version.clone());
                outcome.resolved_object = found.metadata.name.clone();
                managed.push(prompts::managed_prompt(found));
            }
            Resolution::NoMatch => {
                outcome.problem = Some(format!(
                    "no Active or Deprecated MCPPromptVersion of prompt {:?} matches {:?}",
                    reference.name, reference.version
                ));
            }
            Resolution::InvalidRequirement(e) => {
                outcome.problem = Some(format!(
                    "version requirement {:?} is invalid: {e}",
                    reference.version
                ));
            }
        }
        outcomes.push(outcome);
    }
    (managed, outcomes)
}
