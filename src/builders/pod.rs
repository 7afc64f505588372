//! The pod template: server container plus gateway, hardened to the Pod Security Standards
//! `restricted` profile.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, LocalObjectReference, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, TCPSocketAction, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::gateway_config::GATEWAY_CONFIG_FILE;
use crate::api::quantity::{canonical_quantity, parse_quantity};
use crate::api::server::{
    ComputeResources, DEFAULT_RUN_AS_ID, MCPServerSpec, ResourceSettings, Transport,
};

use super::labels::{
    ANNOTATION_CONFIG_HASH, COMPONENT_SERVER, child_labels, gateway_config_name, selector_labels,
};
use super::{BuildContext, Ports};

/// Container names.
pub const CONTAINER_SERVER: &str = "server";
pub const CONTAINER_GATEWAY: &str = "gateway";
pub const CONTAINER_INSTALL_GATEWAY: &str = "install-gateway";
/// Named ports.
pub const PORT_NAME_MCP: &str = "mcp";
pub const PORT_NAME_ADMIN: &str = "admin";
pub const PORT_NAME_UPSTREAM: &str = "upstream";
/// Where the gateway configuration is mounted.
pub const CONFIG_MOUNT_PATH: &str = "/etc/mcp-operator";
/// Where the init container copies the gateway binary for stdio servers.
pub const GATEWAY_BIN_DIR: &str = "/opt/mcp-operator/bin";
/// File name of the binary in the operator image and in the shared volume.
pub const BINARY_NAME: &str = "mcp-operator";
/// Size caps of the emptyDir volumes (MCP-POD-003).
const TMP_SIZE_LIMIT: &str = "64Mi";
const GATEWAY_BIN_SIZE_LIMIT: &str = "128Mi";

const VOLUME_CONFIG: &str = "gateway-config";
const VOLUME_TMP: &str = "tmp";
const VOLUME_GATEWAY_BIN: &str = "gateway-bin";

/// Defaults for the server container: (requests, limits) as (cpu, memory, ephemeral-storage).
const SERVER_DEFAULTS: ([&str; 3], [&str; 3]) =
    (["100m", "128Mi", "64Mi"], ["1", "512Mi", "256Mi"]);
/// Defaults of the gateway container (and the install init container): the cluster's.
fn gateway_defaults(ctx: &BuildContext) -> ([&str; 3], [&str; 3]) {
    let d = &ctx.gateway_resources;
    (
        d.requests.each_ref().map(String::as_str),
        d.limits.each_ref().map(String::as_str),
    )
}

/// Build the pod template of `name`'s Deployment.
pub fn pod_template(
    name: &str,
    spec: &MCPServerSpec,
    ports: &Ports,
    ctx: &BuildContext,
    config_hash: &str,
    spread: bool,
) -> PodTemplateSpec {
    let config_path = format!("{CONFIG_MOUNT_PATH}/{GATEWAY_CONFIG_FILE}");
    let mut volumes = vec![
        Volume {
            name: VOLUME_CONFIG.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: gateway_config_name(name),
                default_mode: Some(0o444),
                ..Default::default()
            }),
            ..Default::default()
        },
        empty_dir(VOLUME_TMP, TMP_SIZE_LIMIT),
    ];
    let config_mount = VolumeMount {
        name: VOLUME_CONFIG.into(),
        mount_path: CONFIG_MOUNT_PATH.into(),
        read_only: Some(true),
        ..Default::default()
    };
    let tmp_mount = VolumeMount {
        name: VOLUME_TMP.into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    };
    let gateway_ports = vec![
        container_port(PORT_NAME_MCP, ports.gateway),
        container_port(PORT_NAME_ADMIN, ports.admin),
    ];

    let mut init_containers = Vec::new();
    let containers = match spec.transport {
        Transport::StreamableHttp | Transport::Sse => {
            let server = Container {
                name: CONTAINER_SERVER.into(),
                image: Some(spec.image.clone()),
                image_pull_policy: Some(pull_policy(spec).into()),
                command: non_empty(&spec.command),
                args: non_empty(&spec.args),
                env: env_vars(spec),
                ports: Some(vec![container_port(PORT_NAME_UPSTREAM, ports.server)]),
                // A TCP check: the server's own HTTP paths may require auth or be POST-only.
                readiness_probe: Some(tcp_probe(ports.server, 5)),
                liveness_probe: Some(tcp_probe(ports.server, 20)),
                resources: Some(resources(spec.resources.as_ref(), SERVER_DEFAULTS)),
                security_context: Some(container_security()),
                volume_mounts: Some(vec![tmp_mount]),
                ..Default::default()
            };
            let gateway = Container {
                name: CONTAINER_GATEWAY.into(),
                image: Some(ctx.gateway_image.clone()),
                image_pull_policy: Some("IfNotPresent".into()),
                args: Some(gateway_args(spec, config_path)),
                ports: Some(gateway_ports),
                readiness_probe: Some(http_probe("/readyz", 5)),
                liveness_probe: Some(http_probe("/healthz", 20)),
                resources: Some(resources(gateway_resources(spec), gateway_defaults(ctx))),
                security_context: Some(container_security()),
                volume_mounts: Some(vec![config_mount]),
                ..Default::default()
            };
            vec![server, gateway]
        }
        Transport::Stdio => {
            volumes.push(empty_dir(VOLUME_GATEWAY_BIN, GATEWAY_BIN_SIZE_LIMIT));
            let bin_mount = |read_only: bool| VolumeMount {
                name: VOLUME_GATEWAY_BIN.into(),
                mount_path: GATEWAY_BIN_DIR.into(),
                read_only: Some(read_only),
                ..Default::default()
            };
            init_containers.push(Container {
                name: CONTAINER_INSTALL_GATEWAY.into(),
                image: Some(ctx.gateway_image.clone()),
                image_pull_policy: Some("IfNotPresent".into()),
                args: Some(vec![
                    "install-gateway".into(),
                    "--to".into(),
                    GATEWAY_BIN_DIR.into(),
                ]),
                resources: Some(resources(None, gateway_defaults(ctx))),
                security_context: Some(container_security()),
                volume_mounts: Some(vec![bin_mount(false)]),
                ..Default::default()
            });
            // The wrapper replaces the image's entrypoint: it spawns the declared command.
            let mut args = gateway_args(spec, config_path);
            args.extend(["--stdio".into(), "--".into()]);
            args.extend(spec.command.iter().cloned());
            args.extend(spec.args.iter().cloned());
            vec![Container {
                name: CONTAINER_SERVER.into(),
                image: Some(spec.image.clone()),
                image_pull_policy: Some(pull_policy(spec).into()),
                command: Some(vec![format!("{GATEWAY_BIN_DIR}/{BINARY_NAME}")]),
                args: Some(args),
                env: env_vars(spec),
                ports: Some(gateway_ports),
                readiness_probe: Some(http_probe("/readyz", 5)),
                liveness_probe: Some(http_probe("/healthz", 20)),
                resources: Some(resources(spec.resources.as_ref(), SERVER_DEFAULTS)),
                security_context: Some(container_security()),
                volume_mounts: Some(vec![config_mount, tmp_mount, bin_mount(true)]),
                ..Default::default()
            }]
        }
    };

    let identity = spec.security_context.clone().unwrap_or_default();
    let topology_spread_constraints = spread.then(|| {
        vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(child_labels(name, COMPONENT_SERVER)),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_CONFIG_HASH.to_string(),
                config_hash.to_string(),
            )])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(name.to_string()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(identity.run_as_user.unwrap_or(DEFAULT_RUN_AS_ID)),
                run_as_group: Some(identity.run_as_group.unwrap_or(DEFAULT_RUN_AS_ID)),
                fs_group: Some(identity.fs_group.unwrap_or(DEFAULT_RUN_AS_ID)),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..Default::default()
            }),
            image_pull_secrets: (!spec.image_pull_secrets.is_empty()).then(|| {
                spec.image_pull_secrets
                    .iter()
                    .map(|n| LocalObjectReference { name: n.clone() })
                    .collect()
            }),
            init_containers: (!init_containers.is_empty()).then_some(init_containers),
            containers,
            volumes: Some(volumes),
            topology_spread_constraints,
            ..Default::default()
        }),
    }
}

fn pull_policy(spec: &MCPServerSpec) -> &'static str {
    spec.image_pull_policy
        .map_or("IfNotPresent", |p| p.as_str())
}

fn non_empty(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn gateway_resources(spec: &MCPServerSpec) -> Option<&ResourceSettings> {
    spec.gateway.as_ref()?.resources.as_ref()
}

fn env_vars(spec: &MCPServerSpec) -> Option<Vec<EnvVar>> {
    let plain = spec.env.iter().map(|e| EnvVar {
        name: e.name.clone(),
        value: Some(e.value.clone()),
        ..Default::default()
    });
    let secret = spec.secret_env.iter().map(|e| EnvVar {
        name: e.name.clone(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: e.secret_key_ref.name.clone(),
                key: e.secret_key_ref.key.clone(),
                optional: e.secret_key_ref.optional,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let all: Vec<EnvVar> = plain.chain(secret).collect();
    (!all.is_empty()).then_some(all)
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn tcp_probe(port: i32, period_seconds: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        ..Default::default()
    }
}

fn http_probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(PORT_NAME_ADMIN.into()),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        ..Default::default()
    }
}

/// The gateway's command line. A server that declares no `authentication` is served without
/// tokens on the pod network because its manifest says so (and MCP-AUTH-001 reports it, or
/// blocks it under an enforcing policy); the gateway refuses that unless told.
fn gateway_args(spec: &MCPServerSpec, config_path: String) -> Vec<String> {
    let mut args = vec!["gateway".into(), "--config".into(), config_path];
    if spec.authentication.is_none() {
        args.push("--allow-unauthenticated".into());
    }
    if let Some(window) = spec
        .gateway
        .as_ref()
        .and_then(|g| g.busy_poll_microseconds)
        .filter(|&window| window >= 0)
    {
        args.extend(["--busy-poll-microseconds".into(), window.to_string()]);
    }
    args
}

fn canonical(quantity: Quantity) -> Quantity {
    match canonical_quantity(&quantity.0) {
        Some(canonical) => Quantity(canonical),
        None => quantity,
    }
}

fn empty_dir(name: &str, size_limit: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(size_limit.into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..Default::default()
    }
}

/// The restricted-profile container security context (MCP-POD-001, MCP-POD-003).
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..Default::default()
    }
}

/// Requests and limits: the user's values where given, defaults elsewhere. A defaulted value is
/// moved to the user's value on the other side when the default would make request > limit.
fn resources(
    user: Option<&ResourceSettings>,
    defaults: ([&str; 3], [&str; 3]),
) -> ResourceRequirements {
    let empty = ComputeResources::default();
    let user_requests = user.and_then(|u| u.requests.as_ref()).unwrap_or(&empty);
    let user_limits = user.and_then(|u| u.limits.as_ref()).unwrap_or(&empty);
    let pick =
        |c: &ComputeResources| [c.cpu.clone(), c.memory.clone(), c.ephemeral_storage.clone()];
    let names = ["cpu", "memory", "ephemeral-storage"];
    let (default_requests, default_limits) = defaults;
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    for (i, ((req, lim), name)) in pick(user_requests)
        .into_iter()
        .zip(pick(user_limits))
        .zip(names)
        .enumerate()
    {
        let larger = |a: &Quantity, b: &Quantity| match (parse_quantity(&a.0), parse_quantity(&b.0))
        {
            (Some(x), Some(y)) => x > y,
            _ => false,
        };
        let (request, limit) = match (req, lim) {
            (Some(r), Some(l)) => (r, l),
            (Some(r), None) => {
                let default = Quantity(default_limits[i].into());
                let limit = if larger(&r, &default) {
                    r.clone()
                } else {
                    default
                };
                (r, limit)
            }
            (None, Some(l)) => {
                let default = Quantity(default_requests[i].into());
                let request = if larger(&default, &l) {
                    l.clone()
                } else {
                    default
                };
                (request, l)
            }
            (None, None) => (
                Quantity(default_requests[i].into()),
                Quantity(default_limits[i].into()),
            ),
        };
        // In the API server's canonical form, so what is applied is what is read back.
        requests.insert(name.to_string(), canonical(request));
        limits.insert(name.to_string(), canonical(limit));
    }
    ResourceRequirements {
        requests: Some(requests),
        limits: Some(limits),
        ..Default::default()
    }
}
