//! The Service (gateway ports only) and the default-deny NetworkPolicy.

use std::collections::BTreeMap;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::server::{EgressRule, MCPServerSpec};

use super::labels::{LABEL_NAME, MANAGER, selector_labels};
use super::pod::{PORT_NAME_ADMIN, PORT_NAME_MCP};
use super::{BuildContext, Ports};

/// Label every namespace carries with its own name (set by the API server).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Networks no declared egress may reach unless declared exactly: link-local (cloud metadata
/// endpoints) and loopback (MCP-NET-002). They become `except` entries of broader blocks.
const SENSITIVE_NETWORKS: [&str; 4] = ["169.254.0.0/16", "127.0.0.0/8", "fe80::/10", "::1/128"];

/// The Service: ClusterIP, targeting the gateway's ports by name, never the server's.
pub fn service_spec(name: &str, spec: &MCPServerSpec, ports: &Ports) -> ServiceSpec {
    ServiceSpec {
        type_: Some("ClusterIP".into()),
        selector: Some(selector_labels(name)),
        ports: Some(vec![
            ServicePort {
                name: Some(PORT_NAME_MCP.into()),
                port: ports.gateway,
                target_port: Some(IntOrString::String(PORT_NAME_MCP.into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..Default::default()
            },
            ServicePort {
                name: Some(PORT_NAME_ADMIN.into()),
                port: ports.admin,
                target_port: Some(IntOrString::String(PORT_NAME_ADMIN.into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..Default::default()
            },
        ]),
        session_affinity: Some(
            if spec.session_affinity {
                "ClientIP"
            } else {
                "None"
            }
            .into(),
        ),
        ..Default::default()
    }
}

/// Default deny in both directions; ingress only to the gateway port (from the declared peers,
/// or the server's namespace) and to the admin port from the operator; egress only to cluster
/// DNS and the permitted declared destinations.
pub fn network_policy_spec(
    name: &str,
    spec: &MCPServerSpec,
    egress: &[EgressRule],
    ports: &Ports,
    ctx: &BuildContext,
) -> NetworkPolicySpec {
    let client_peers: Vec<NetworkPolicyPeer> = if spec.ingress.is_empty() {
        vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector::default()),
            ..Default::default()
        }]
    } else {
        spec.ingress
            .iter()
            .map(|peer| NetworkPolicyPeer {
                namespace_selector: peer.namespace_selector.clone(),
                pod_selector: peer.pod_selector.clone(),
                ..Default::default()
            })
            .collect()
    };
    let operator_peer = NetworkPolicyPeer {
        namespace_selector: Some(match_labels([(
            NAMESPACE_NAME_LABEL,
            ctx.operator_namespace.as_str(),
        )])),
        pod_selector: Some(match_labels([(LABEL_NAME, MANAGER)])),
        ..Default::default()
    };
    let ingress = vec![
        NetworkPolicyIngressRule {
            from: Some(client_peers),
            ports: Some(vec![tcp_port(ports.gateway)]),
        },
        NetworkPolicyIngressRule {
            from: Some(vec![operator_peer]),
            ports: Some(vec![tcp_port(ports.admin)]),
        },
    ];

    let dns_peer = NetworkPolicyPeer {
        namespace_selector: Some(match_labels([(
            NAMESPACE_NAME_LABEL,
            ctx.dns_namespace.as_str(),
        )])),
        pod_selector: Some(LabelSelector {
            match_labels: Some(ctx.dns_pod_labels.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut egress_rules = vec![NetworkPolicyEgressRule {
        to: Some(vec![dns_peer]),
        ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
    }];
    egress_rules.extend(egress.iter().map(|rule| {
        NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: rule.cidr.0.clone(),
                    except: sensitive_exceptions(&rule.cidr.0),
                }),
                ..Default::default()
            }]),
            ports: Some(
                rule.ports
                    .iter()
                    .map(|p| port(p.port, p.protocol.as_str()))
                    .collect(),
            ),
        }
    }));

    NetworkPolicySpec {
        pod_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(name)),
            ..Default::default()
        }),
        policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
        ingress: Some(ingress),
        egress: Some(egress_rules),
    }
}

/// The sensitive networks strictly inside `cidr` (a block that *is* one of them, or lies inside
/// one, was declared on purpose and is kept).
fn sensitive_exceptions(cidr: &str) -> Option<Vec<String>> {
    let net: IpNet = cidr.parse().ok()?;
    let except: Vec<String> = SENSITIVE_NETWORKS
        .iter()
        .filter_map(|s| s.parse::<IpNet>().ok())
        .filter(|s| net.prefix_len() < s.prefix_len() && net.contains(s))
        .map(|s| s.to_string())
        .collect();
    (!except.is_empty()).then_some(except)
}

fn match_labels<const N: usize>(pairs: [(&str, &str); N]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

fn tcp_port(number: i32) -> NetworkPolicyPort {
    port(number, "TCP")
}

fn port(number: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::sensitive_exceptions;

    #[test]
    fn broad_blocks_exclude_metadata_and_loopback() {
        assert_eq!(
            sensitive_exceptions("0.0.0.0/0"),
            Some(vec![
                "169.254.0.0/16".to_string(),
                "127.0.0.0/8".to_string()
            ])
        );
        assert_eq!(
            sensitive_exceptions("::/0"),
            Some(vec!["fe80::/10".to_string(), "::1/128".to_string()])
        );
    }

    #[test]
    fn narrow_or_explicit_blocks_are_kept() {
        assert_eq!(sensitive_exceptions("10.0.0.0/8"), None);
        assert_eq!(sensitive_exceptions("169.254.169.254/32"), None);
    }
}
