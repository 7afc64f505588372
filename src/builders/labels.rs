//! Names, labels and annotations every child object carries.

use std::collections::BTreeMap;

/// `app.kubernetes.io/name` of every server workload.
pub const APP_NAME: &str = "mcp-server";
/// `app.kubernetes.io/managed-by` and `app.kubernetes.io/part-of` of every child.
pub const MANAGER: &str = "mcp-operator";
/// Recommended label keys.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Component of the workload objects (Deployment, pods, Service, ...).
pub const COMPONENT_SERVER: &str = "mcp-server";
/// Component of the gateway configuration ConfigMap.
pub const COMPONENT_GATEWAY_CONFIG: &str = "gateway-config";
/// Pod-template annotation holding the SHA-256 of the gateway ConfigMap's data, so a
/// configuration change rolls the pods.
pub const ANNOTATION_CONFIG_HASH: &str = "mcp-operator.dev/gateway-config-sha256";

/// The recommended labels of one child of server `server`.
pub fn child_labels(server: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), server.to_string()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
        (LABEL_PART_OF.to_string(), MANAGER.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
    ])
}

/// The labels that select the pods of server `server` (a stable subset: never change these,
/// a Deployment's selector is immutable).
pub fn selector_labels(server: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), server.to_string()),
    ])
}

/// The selector labels as a label-selector string (`k=v,k=v`), for the scale subresource.
pub fn selector_string(server: &str) -> String {
    selector_labels(server)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Name of the gateway configuration ConfigMap of server `server`.
pub fn gateway_config_name(server: &str) -> String {
    format!("{server}-gateway")
}
