//! The desired-state builders, from YAML fixtures: each assertion is something a user or a
//! security reviewer would notice if it were dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mcp_operator::api::{MCPPolicy, MCPPromptVersion, MCPServer};
use mcp_operator::builders::labels::ANNOTATION_CONFIG_HASH;
use mcp_operator::builders::{BuildContext, DesiredState, ServerInputs, build};
use serde_json::Value;

fn server(yaml: &str) -> MCPServer {
    let mut s: MCPServer = serde_saphyr::from_str(yaml).unwrap();
    s.metadata.namespace.get_or_insert_with(|| "tools".into());
    s.metadata.uid = Some("0f6d7f0e-7d1a-4c55-9a43-1f2b3c4d5e6f".into());
    s
}

fn http_server(extra_spec: &str) -> MCPServer {
    server(&format!(
        "apiVersion: mcp-operator.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: github}}\nspec:\n  image: registry.example.com/gh@sha256:{}\n{extra_spec}",
        "a".repeat(64)
    ))
}

fn stdio_server() -> MCPServer {
    server(
        "apiVersion: mcp-operator.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: files}\nspec:\n  image: fs:1\n  transport: stdio\n  command: [node, /app/index.js]\n  args: [/data]\n  secretEnv: [{name: TOKEN, secretKeyRef: {name: fs, key: token}}]\n",
    )
}

fn policy(yaml_spec: &str) -> MCPPolicy {
    serde_saphyr::from_str(&format!("apiVersion: mcp-operator.dev/v1alpha1\nkind: MCPPolicy\nmetadata: {{name: p}}\nspec:\n{yaml_spec}")).unwrap()
}

fn desired(
    server: &MCPServer,
    policies: &[&MCPPolicy],
    prompts: &[MCPPromptVersion],
) -> DesiredState {
    build(
        ServerInputs {
            server,
            policies,
            prompt_versions: prompts,
        },
        &BuildContext::default(),
    )
    .unwrap()
}

fn template_meta(d: &DesiredState) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    d.deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
}

fn pod(d: &DesiredState) -> &PodSpec {
    d.deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn all_containers(p: &PodSpec) -> Vec<&Container> {
    p.containers
        .iter()
        .chain(p.init_containers.iter().flatten())
        .collect()
}

#[test]
fn pods_meet_the_restricted_profile() {
    for s in [http_server(""), stdio_server()] {
        let d = desired(&s, &[], &[]);
        let p = pod(&d);
        assert_eq!(p.automount_service_account_token, Some(false));
        assert_eq!(p.enable_service_links, Some(false));
        let psc = p.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert!(psc.run_as_user.unwrap() > 0 && psc.run_as_group.unwrap() > 0);
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert!(p.host_network.is_none() && p.host_pid.is_none() && p.host_ipc.is_none());
        for c in all_containers(p) {
            let sc = c
                .security_context
                .as_ref()
                .unwrap_or_else(|| panic!("{}: no securityContext", c.name));
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.privileged, Some(false), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
            let caps = sc.capabilities.as_ref().unwrap();
            assert_eq!(
                caps.drop.as_deref(),
                Some(&["ALL".to_string()][..]),
                "{}",
                c.name
            );
            assert!(caps.add.is_none(), "{}", c.name);
            assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
            let resources = c.resources.as_ref().unwrap();
            for side in [&resources.requests, &resources.limits] {
                let side = side.as_ref().unwrap();
                for name in ["cpu", "memory", "ephemeral-storage"] {
                    assert!(side.contains_key(name), "{}: {name} missing", c.name);
                }
            }
            assert!(c.ports.iter().flatten().all(|p| p.host_port.is_none()));
        }
        for volume in p.volumes.iter().flatten() {
            assert!(volume.host_path.is_none());
            if let Some(empty) = &volume.empty_dir {
                assert!(
                    empty.size_limit.is_some(),
                    "emptyDir {} has no size limit",
                    volume.name
                );
            }
        }
    }
}

#[test]
fn user_resources_win_and_stay_consistent() {
    let s = http_server("  resources: {requests: {memory: 2Gi}, limits: {cpu: 50m}}\n");
    let d = desired(&s, &[], &[]);
    let server_container = &pod(&d).containers[0];
    let r = server_container.resources.as_ref().unwrap();
    let requests = r.requests.as_ref().unwrap();
    let limits = r.limits.as_ref().unwrap();
    assert_eq!(requests["memory"].0, "2Gi");
    assert_eq!(
        limits["memory"].0, "2Gi",
        "a default limit below the request is raised to it"
    );
    assert_eq!(limits["cpu"].0, "50m");
    assert_eq!(
        requests["cpu"].0, "50m",
        "a default request above the limit is lowered to it"
    );
}

#[test]
fn every_child_is_labelled_named_and_owned() {
    let s = http_server("  autoscaling: {minReplicas: 2, maxReplicas: 4}\n");
    let d = desired(&s, &[], &[]);
    let objects = d.objects().unwrap();
    assert_eq!(objects.len(), 7);
    for o in &objects {
        let kind = o["kind"].as_str().unwrap();
        let meta = &o["metadata"];
        let expected_name = if kind == "ConfigMap" {
            "github-gateway"
        } else {
            "github"
        };
        assert_eq!(meta["name"], expected_name, "{kind}");
        assert_eq!(meta["namespace"], "tools", "{kind}");
        for label in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
            "app.kubernetes.io/part-of",
            "app.kubernetes.io/managed-by",
        ] {
            assert!(
                meta["labels"].get(label).is_some(),
                "{kind}: label {label} missing"
            );
        }
        assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "github");
        assert_eq!(
            meta["labels"]["app.kubernetes.io/managed-by"],
            "mcp-operator"
        );
        let owners = meta["ownerReferences"].as_array().unwrap();
        assert_eq!(owners.len(), 1, "{kind}");
        let owner = &owners[0];
        assert_eq!(owner["kind"], "MCPServer");
        assert_eq!(owner["apiVersion"], "mcp-operator.dev/v1alpha1");
        assert_eq!(owner["name"], "github");
        assert_eq!(owner["uid"], "0f6d7f0e-7d1a-4c55-9a43-1f2b3c4d5e6f");
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
    }
    let template_labels = template_meta(&d).labels.as_ref().unwrap();
    let selector = d
        .deployment
        .spec
        .as_ref()
        .unwrap()
        .selector
        .match_labels
        .as_ref()
        .unwrap();
    assert!(
        selector
            .iter()
            .all(|(k, v)| template_labels.get(k) == Some(v)),
        "the selector selects the pods"
    );
}

#[test]
fn service_reaches_only_the_gateway() {
    let s = http_server("  port: 3000\n");
    let d = desired(&s, &[], &[]);
    let spec = d.service.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let targets: Vec<_> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| p.target_port.clone().unwrap())
        .collect();
    assert_eq!(
        targets,
        vec![
            IntOrString::String("mcp".into()),
            IntOrString::String("admin".into())
        ]
    );
    let gateway = pod(&d)
        .containers
        .iter()
        .find(|c| c.name == "gateway")
        .unwrap();
    let named: Vec<_> = gateway
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        named,
        vec![("mcp".to_string(), 8443), ("admin".to_string(), 9090)]
    );
    let server_container = pod(&d)
        .containers
        .iter()
        .find(|c| c.name == "server")
        .unwrap();
    assert!(
        server_container
            .ports
            .iter()
            .flatten()
            .all(|p| p.name.as_deref() != Some("mcp")),
        "the raw server port is never the Service target"
    );
    assert_eq!(d.endpoint, "http://github.tools.svc:8443/mcp");
    assert_eq!(spec.session_affinity.as_deref(), Some("ClientIP"));
}

#[test]
fn network_policy_is_default_deny_with_declared_egress_only() {
    let s = http_server(
        "  egress:\n    - {cidr: 140.82.112.0/20, ports: [{port: 443}]}\n    - {cidr: 0.0.0.0/0, ports: [{port: 53, protocol: UDP}]}\n  ingress:\n    - namespaceSelector: {matchLabels: {mcp-client: 'true'}}\n",
    );
    let d = desired(&s, &[], &[]);
    let np: Value = serde_json::to_value(d.network_policy.spec.as_ref().unwrap()).unwrap();
    assert_eq!(np["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
    assert_eq!(
        np["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        "github"
    );

    let ingress = np["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 2);
    assert_eq!(
        ingress[0]["ports"],
        serde_json::json!([{"port": 8443, "protocol": "TCP"}])
    );
    assert_eq!(
        ingress[0]["from"],
        serde_json::json!([{"namespaceSelector": {"matchLabels": {"mcp-client": "true"}}}])
    );
    assert_eq!(
        ingress[1]["ports"],
        serde_json::json!([{"port": 9090, "protocol": "TCP"}])
    );
    assert_eq!(
        ingress[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "mcp-operator"
    );

    let egress = np["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 3, "DNS plus the two declared destinations");
    assert_eq!(
        egress[0]["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
        "kube-dns"
    );
    assert_eq!(
        egress[0]["ports"],
        serde_json::json!([{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}])
    );
    assert_eq!(
        egress[1]["to"],
        serde_json::json!([{"ipBlock": {"cidr": "140.82.112.0/20"}}])
    );
    assert_eq!(
        egress[1]["ports"],
        serde_json::json!([{"port": 443, "protocol": "TCP"}])
    );
    assert_eq!(
        egress[2]["to"][0]["ipBlock"]["except"],
        serde_json::json!(["169.254.0.0/16", "127.0.0.0/8"]),
        "metadata and loopback stay blocked"
    );
    assert_eq!(
        egress[2]["ports"],
        serde_json::json!([{"port": 53, "protocol": "UDP"}])
    );

    // Without declared ingress, only the server's own namespace may connect.
    let d = desired(&http_server(""), &[], &[]);
    let np: Value = serde_json::to_value(d.network_policy.spec.as_ref().unwrap()).unwrap();
    assert_eq!(
        np["ingress"][0]["from"],
        serde_json::json!([{"podSelector": {}}])
    );
    assert_eq!(
        np["egress"].as_array().unwrap().len(),
        1,
        "nothing declared: DNS only"
    );
}

#[test]
fn policy_allowlist_removes_undeclared_networks() {
    let s = http_server(
        "  egress:\n    - {cidr: 140.82.112.0/20, ports: [{port: 443}]}\n    - {cidr: 0.0.0.0/0, ports: [{port: 443}]}\n",
    );
    let p = policy("  network: {allowedEgress: [140.82.0.0/16]}\n");
    let d = desired(&s, &[&p], &[]);
    let np: Value = serde_json::to_value(d.network_policy.spec.as_ref().unwrap()).unwrap();
    let cidrs: Vec<_> = np["egress"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["to"][0]["ipBlock"]["cidr"].as_str())
        .collect();
    assert_eq!(cidrs, vec!["140.82.112.0/20"]);
    assert_eq!(d.effective.egress_refused.len(), 1);
}

#[test]
fn autoscaler_and_disruption_budget_only_when_useful() {
    let single = desired(&http_server(""), &[], &[]);
    assert!(single.autoscaler.is_none() && single.disruption_budget.is_none());
    assert_eq!(single.deployment.spec.as_ref().unwrap().replicas, Some(1));

    let fixed = desired(&http_server("  replicas: 3\n"), &[], &[]);
    assert!(fixed.autoscaler.is_none());
    assert!(fixed.disruption_budget.is_some());
    assert!(pod(&fixed).topology_spread_constraints.is_some());

    let scaled = desired(
        &http_server(
            "  autoscaling: {minReplicas: 1, maxReplicas: 5, targetCPUUtilization: 60, targetMemoryUtilization: 80}\n",
        ),
        &[],
        &[],
    );
    assert_eq!(
        scaled.deployment.spec.as_ref().unwrap().replicas,
        None,
        "the HPA owns the replica count"
    );
    let hpa = scaled.autoscaler.as_ref().unwrap().spec.as_ref().unwrap();
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(1), 5));
    assert_eq!(hpa.scale_target_ref.name, "github");
    assert_eq!(hpa.metrics.as_ref().unwrap().len(), 2);
    let pdb = scaled
        .disruption_budget
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
}

#[test]
fn stdio_servers_run_behind_the_wrapper() {
    let d = desired(&stdio_server(), &[], &[]);
    let p = pod(&d);
    let init = &p.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.args.as_deref().unwrap()[0], "install-gateway");
    assert_eq!(
        p.containers.len(),
        1,
        "no sidecar: the wrapper is the server container's process"
    );
    let c = &p.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("fs:1"),
        "the server's own image, unchanged"
    );
    assert_eq!(
        c.command.as_deref().unwrap(),
        ["/opt/mcp-operator/bin/mcp-operator"]
    );
    let args = c.args.as_ref().unwrap();
    let dash = args.iter().position(|a| a == "--").unwrap();
    assert_eq!(
        &args[..dash],
        [
            "gateway",
            "--config",
            "/etc/mcp-operator/gateway.yaml",
            "--allow-unauthenticated",
            "--stdio"
        ],
        "no authentication declared: the gateway is told it may serve without tokens"
    );
    assert_eq!(&args[dash + 1..], ["node", "/app/index.js", "/data"]);
    assert!(
        c.ports
            .iter()
            .flatten()
            .any(|p| p.name.as_deref() == Some("mcp"))
    );
    let env = c.env.as_ref().unwrap();
    assert!(
        env[0].value.is_none() && env[0].value_from.as_ref().unwrap().secret_key_ref.is_some(),
        "secrets stay references"
    );
    let config = &d.gateway_config_map.data.as_ref().unwrap()["gateway.yaml"];
    assert!(config.contains("transport: stdio"));
}

#[test]
fn a_busy_polling_setting_reaches_the_gateway_command_line_and_none_leaves_it_to_the_gateway() {
    // The value after `--busy-poll-microseconds` on the gateway's command line, if any.
    let busy_poll_flag = |extra_spec: &str| {
        let d = desired(&http_server(extra_spec), &[], &[]);
        let gateway = pod(&d)
            .containers
            .iter()
            .find(|c| c.name == "gateway")
            .unwrap();
        let args = gateway.args.clone().unwrap();
        args.iter()
            .position(|a| a == "--busy-poll-microseconds")
            .map(|flag| args[flag + 1].clone())
    };
    assert_eq!(
        busy_poll_flag("  gateway: {busyPollMicroseconds: 50}\n").as_deref(),
        Some("50")
    );
    // 0 is passed on: it turns off what the gateway would otherwise decide for itself.
    assert_eq!(
        busy_poll_flag("  gateway: {busyPollMicroseconds: 0}\n").as_deref(),
        Some("0")
    );
    assert_eq!(
        busy_poll_flag(""),
        None,
        "absent, the gateway decides by its CPU limit"
    );
}

#[test]
fn configuration_changes_roll_the_pods() {
    let hash = |d: &DesiredState| pod_annotation(d);
    let base = desired(&http_server(""), &[], &[]);
    let same = desired(&http_server(""), &[], &[]);
    assert_eq!(hash(&base), hash(&same), "deterministic");
    let with_rule = desired(
        &http_server("  authorization: [{tools: ['get_*']}]\n"),
        &[],
        &[],
    );
    assert_ne!(
        hash(&base),
        hash(&with_rule),
        "an authorization change reaches the gateway through a rollout"
    );
    let p = policy("  enforcement: Enforce\n  tools: {deny: ['delete_*']}\n");
    let with_policy = desired(&http_server(""), &[&p], &[]);
    assert_ne!(
        hash(&base),
        hash(&with_policy),
        "a policy change reaches the gateway too"
    );
    let config = &with_policy.gateway_config_map.data.as_ref().unwrap()["gateway.yaml"];
    assert!(
        config.contains("delete_*") && config.contains("enforcement: Enforce"),
        "{config}"
    );
}

fn pod_annotation(d: &DesiredState) -> String {
    template_meta(d).annotations.as_ref().unwrap()[ANNOTATION_CONFIG_HASH].clone()
}

#[test]
fn prompts_resolve_into_the_gateway_configuration() {
    let version = |v: &str, lifecycle: &str| -> MCPPromptVersion {
        let mut p: MCPPromptVersion = serde_saphyr::from_str(&format!(
            "apiVersion: mcp-operator.dev/v1alpha1\nkind: MCPPromptVersion\nmetadata: {{name: triage-{v}, namespace: tools}}\nspec:\n  prompt: triage\n  version: {v}\n  lifecycle: {lifecycle}\n  messages: [{{role: user, text: 'version {v}'}}]\n"
        ))
        .unwrap();
        p.metadata.namespace = Some("tools".into());
        p
    };
    let s = http_server(
        "  prompts: [{name: triage, version: '^1.2'}, {name: missing, version: '^1'}]\n",
    );
    let prompts = vec![
        version("1.2.0", "Active"),
        version("1.3.0", "Active"),
        version("2.0.0", "Active"),
    ];
    let d = desired(&s, &[], &prompts);
    assert_eq!(d.gateway_config.prompts.len(), 1);
    assert_eq!(d.gateway_config.prompts[0].version, "1.3.0");
    assert_eq!(d.prompts[0].resolved_version.as_deref(), Some("1.3.0"));
    assert!(
        d.prompts[1]
            .problem
            .as_ref()
            .unwrap()
            .contains("no Active or Deprecated")
    );

    let retired = vec![version("1.2.0", "Active"), version("1.3.0", "Retired")];
    let rolled_back = desired(&s, &[], &retired);
    assert_eq!(
        rolled_back.gateway_config.prompts[0].version, "1.2.0",
        "retiring 1.3.0 rolls back to 1.2.0"
    );
    // A new bundle reaches the mounted file, but does not roll the pods: the gateway reloads
    // it and tells the open sessions.
    assert_ne!(
        d.gateway_config_map.data, rolled_back.gateway_config_map.data,
        "the configuration carries the bundle"
    );
    assert_eq!(pod_annotation(&d), pod_annotation(&rolled_back));
}

#[test]
fn secrets_never_reach_the_configuration() {
    let s = http_server(
        "  secretEnv: [{name: GITHUB_TOKEN, secretKeyRef: {name: gh, key: token}}]\n  env: [{name: MODE, value: readonly}]\n",
    );
    let d = desired(&s, &[], &[]);
    let config = &d.gateway_config_map.data.as_ref().unwrap()["gateway.yaml"];
    assert!(
        !config.contains("GITHUB_TOKEN") && !config.contains("gh"),
        "{config}"
    );
    let server_container = &pod(&d).containers[0];
    let env = server_container.env.as_ref().unwrap();
    assert_eq!(env[0].value.as_deref(), Some("readonly"));
    let secret = env[1]
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!((secret.name.as_str(), secret.key.as_str()), ("gh", "token"));
    let gateway = &pod(&d).containers[1];
    assert!(gateway.env.is_none(), "the gateway gets no server secrets");
}
