//! The resource types the test API server serves: built-in ones, and custom resources once
//! their CustomResourceDefinition is created.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::validation::schema::CrdSchema;

/// One served resource type.
pub struct ResourceType {
    /// API group ("" for the core group).
    pub group: String,
    pub version: String,
    /// Plural name used in paths.
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// Whether `/status` is a subresource (status is then ignored on main-resource writes).
    pub status_subresource: bool,
    /// `.spec.replicas`-style path of the scale subresource, when there is one.
    pub scale: Option<ScalePaths>,
    /// CRD schema and CEL rules checked on every write (custom resources only).
    pub schema: Option<CrdSchema>,
}

/// JSON paths (as key lists) of a scale subresource.
#[derive(Clone, Debug)]
pub struct ScalePaths {
    pub spec_replicas: Vec<String>,
    pub status_replicas: Vec<String>,
    pub label_selector: Option<Vec<String>>,
}

impl ResourceType {
    /// `apiVersion` of objects of this type.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Key used in counters and the store: `group/plural` (`/configmaps` for the core group).
    pub fn id(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }
}

/// All served types, by `group/plural`.
#[derive(Default)]
pub struct Registry {
    types: BTreeMap<String, Arc<ResourceType>>,
}

impl Registry {
    /// The built-in types the operator and its tests use.
    pub fn with_builtins() -> Self {
        let mut registry = Registry::default();
        let builtin = |group: &str,
                       version: &str,
                       plural: &str,
                       kind: &str,
                       namespaced: bool,
                       status: bool| ResourceType {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            status_subresource: status,
            scale: None,
            schema: None,
        };
        let mut deployments = builtin("apps", "v1", "deployments", "Deployment", true, true);
        deployments.scale = Some(ScalePaths {
            spec_replicas: path(".spec.replicas"),
            status_replicas: path(".status.replicas"),
            label_selector: None,
        });
        for t in [
            builtin("", "v1", "namespaces", "Namespace", false, true),
            builtin("", "v1", "configmaps", "ConfigMap", true, false),
            builtin("", "v1", "secrets", "Secret", true, false),
            builtin("", "v1", "services", "Service", true, true),
            builtin("", "v1", "serviceaccounts", "ServiceAccount", true, false),
            builtin("", "v1", "events", "Event", true, false),
            builtin("", "v1", "pods", "Pod", true, true),
            deployments,
            builtin(
                "networking.k8s.io",
                "v1",
                "networkpolicies",
                "NetworkPolicy",
                true,
                false,
            ),
            builtin(
                "autoscaling",
                "v2",
                "horizontalpodautoscalers",
                "HorizontalPodAutoscaler",
                true,
                true,
            ),
            builtin(
                "policy",
                "v1",
                "poddisruptionbudgets",
                "PodDisruptionBudget",
                true,
                true,
            ),
            builtin("coordination.k8s.io", "v1", "leases", "Lease", true, false),
            builtin("events.k8s.io", "v1", "events", "Event", true, false),
            builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                true,
            ),
        ] {
            registry.insert(t);
        }
        registry
    }

    pub fn insert(&mut self, t: ResourceType) {
        self.types.insert(t.id(), Arc::new(t));
    }

    pub fn remove(&mut self, id: &str) {
        self.types.remove(id);
    }

    /// The type served at `group`/`version`/`plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&format!("{group}/{plural}"))
            .filter(|t| t.version == version)
            .cloned()
    }

    /// The type of `kind` in `api_version`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types
            .values()
            .find(|t| t.kind == kind && t.api_version() == api_version)
            .cloned()
    }

    /// The custom resource type a CRD object defines (its first served version).
    pub fn type_from_crd(crd: &Value) -> Option<ResourceType> {
        let spec = crd.get("spec")?;
        let version = spec
            .get("versions")?
            .as_array()?
            .iter()
            .find(|v| v["served"] == Value::Bool(true))?;
        let subresources = version.get("subresources");
        let scale = subresources
            .and_then(|s| s.get("scale"))
            .map(|s| ScalePaths {
                spec_replicas: path(s["specReplicasPath"].as_str().unwrap_or(".spec.replicas")),
                status_replicas: path(
                    s["statusReplicasPath"]
                        .as_str()
                        .unwrap_or(".status.replicas"),
                ),
                label_selector: s["labelSelectorPath"].as_str().map(path),
            });
        let kind = spec["names"]["kind"].as_str()?.to_string();
        let schema = version
            .get("schema")
            .and_then(|s| s.get("openAPIV3Schema"))
            .and_then(|s| CrdSchema::compile(&kind, s).ok());
        Some(ResourceType {
            group: spec["group"].as_str()?.to_string(),
            version: version["name"].as_str()?.to_string(),
            plural: spec["names"]["plural"].as_str()?.to_string(),
            kind,
            namespaced: spec["scope"] == Value::String("Namespaced".into()),
            status_subresource: subresources.and_then(|s| s.get("status")).is_some(),
            scale,
            schema,
        })
    }
}

/// `.spec.replicas` → `["spec", "replicas"]`.
fn path(json_path: &str) -> Vec<String> {
    json_path
        .trim_start_matches('.')
        .split('.')
        .map(str::to_string)
        .collect()
}
