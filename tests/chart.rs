//! The Helm chart, rendered and linted by the Helm v4 SDK (PyPI `helm-python-sdk`, installed by
//! `scripts/test.sh`): every value set renders objects that pass `kubernetes-validate --strict`
//! for our oldest Kubernetes, the operator's objects pass checkov, and a bad value fails the
//! install with a message naming it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{RenderedChart as Rendered, chart_dir, chart_script};

use serde_json::{Value, json};

const RELEASE: &str = "mcp-operator";
const NAMESPACE: &str = "mcp-system";

fn try_render(values: &Value) -> Result<Rendered, String> {
    common::render_chart(values, RELEASE, NAMESPACE)
}

fn render(values: &Value) -> Rendered {
    try_render(values).unwrap_or_else(|e| panic!("the chart refused {values}: {e}"))
}

/// The value sets the acceptance names, besides the defaults.
fn value_sets() -> Vec<(&'static str, Value)> {
    vec![
        ("defaults", json!({})),
        (
            "namespace-scoped",
            json!({"scope": {"namespaces": ["team-a", "team-b"]}}),
        ),
        (
            "service-monitor",
            json!({"metrics": {"serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}}}}),
        ),
        ("crds-off", json!({"crds": {"install": false}})),
        (
            "cert-manager",
            json!({"webhook": {"certificate": {"source": "cert-manager"}}}),
        ),
        (
            "single-replica-no-webhook",
            json!({"replicaCount": 1, "leaderElection": {"enabled": false}, "webhook": {"enabled": false}, "logFormat": "text", "otlp": {"endpoint": "http://otel-collector.observability:4318"}}),
        ),
    ]
}

#[test]
fn the_chart_lints_cleanly_with_every_value_set() {
    for (name, values) in value_sets() {
        let output = chart_script(&[
            "lint",
            chart_dir().to_str().unwrap(),
            &values.to_string(),
            NAMESPACE,
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["errors"], json!([]), "{name}: {report}");
        // Severity 2 is a warning, 3 an error; 1 (info) is only the missing icon.
        let serious: Vec<&Value> = report["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"].as_i64().unwrap_or(3) >= 2)
            .collect();
        assert!(serious.is_empty(), "{name}: {serious:?}");
    }
}

#[test]
fn every_value_set_renders_objects_valid_for_the_oldest_kubernetes() {
    for (name, values) in value_sets() {
        let rendered = render(&values);
        assert!(!rendered.files.is_empty(), "{name}");
        let report = common::kubernetes_validate(&rendered.files);
        // Only the Prometheus Operator's and cert-manager's kinds have no schema there.
        for line in report.lines().filter(|l| l.starts_with("WARN")) {
            assert!(
                line.contains("ServiceMonitor") || line.contains("cert-manager.io"),
                "{name}: {line}"
            );
        }
        for object in &rendered.objects {
            let kind = object["kind"].as_str().unwrap();
            let cluster_scoped = [
                "CustomResourceDefinition",
                "ClusterRole",
                "ClusterRoleBinding",
                "ValidatingWebhookConfiguration",
            ];
            if !cluster_scoped.contains(&kind) && kind != "Role" && kind != "RoleBinding" {
                assert_eq!(
                    object["metadata"]["namespace"], NAMESPACE,
                    "{name}: {kind} {} names the release namespace",
                    object["metadata"]["name"]
                );
            }
        }
    }
}

#[test]
fn the_crds_are_templates_equal_to_crdgen_and_kept_on_uninstall() {
    // files/crds is what the CRD template ships: the same bytes as crds/.
    for (file, yaml) in mcp_operator::crdgen::crd_files().unwrap() {
        let shipped = std::fs::read_to_string(chart_dir().join("files/crds").join(&file))
            .unwrap_or_else(|e| panic!("charts/mcp-operator/files/crds/{file}: {e}"));
        assert_eq!(
            shipped, yaml,
            "charts/mcp-operator/files/crds/{file} drifted: run `cargo run -- crdgen --out-dir charts/mcp-operator/files/crds`"
        );
    }
    let rendered = render(&json!({}));
    let crds = rendered.of_kind("CustomResourceDefinition");
    assert_eq!(crds.len(), 3, "{:?}", rendered.names());
    for crd in crds {
        let name = crd["metadata"]["name"].as_str().unwrap();
        let generated: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(common::repo().join("crds").join(format!("{name}.yaml")))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            crd["spec"], generated["spec"],
            "{name}: the template changed the spec"
        );
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name}: uninstalling must not delete every MCPServer"
        );
    }
    let without = render(&json!({"crds": {"install": false}}));
    assert!(without.of_kind("CustomResourceDefinition").is_empty());
    assert!(
        without
            .notes
            .contains("kubectl apply --server-side -f crds/"),
        "{}",
        without.notes
    );
    let not_kept = render(&json!({"crds": {"keep": false}}));
    assert!(
        not_kept
            .of_kind("CustomResourceDefinition")
            .iter()
            .all(|c| c["metadata"]["annotations"]
                .get("helm.sh/resource-policy")
                .is_none())
    );
}

#[test]
fn the_deployment_is_highly_available_hardened_and_probed() {
    let rendered = render(&json!({}));
    let deployment = rendered.one("Deployment", RELEASE);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = rendered.controller_container();
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    let args = rendered.args();
    for expected in [
        "controller",
        "--leader-elect=true",
        "--log-format=json",
        "--webhook-listen=0.0.0.0:9443",
    ] {
        assert!(args.contains(&expected), "{expected} missing from {args:?}");
    }
    let pdb = rendered.one("PodDisruptionBudget", RELEASE);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let metrics = rendered.one("Service", &format!("{RELEASE}-metrics"));
    assert_eq!(metrics["spec"]["ports"][0]["targetPort"], "metrics");
    assert!(
        rendered
            .notes
            .contains("rollout status deployment/mcp-operator")
    );

    // A single replica: no PDB (it would block every drain), no webhook, text logs, OTLP on.
    let single = render(
        &json!({"replicaCount": 1, "leaderElection": {"enabled": false},
        "webhook": {"enabled": false}, "logFormat": "text",
        "otlp": {"endpoint": "http://otel-collector.observability:4318"}}),
    );
    assert!(single.of_kind("PodDisruptionBudget").is_empty());
    assert!(single.of_kind("ValidatingWebhookConfiguration").is_empty());
    assert!(
        single.of_kind("Role").is_empty(),
        "no Lease permissions without leader election"
    );
    let args = single.args();
    assert!(args.contains(&"--leader-elect=false") && args.contains(&"--log-format=text"));
    assert!(!args.iter().any(|a| a.starts_with("--webhook")), "{args:?}");
    let env = &single.controller_container()["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT"
                && e["value"] == "http://otel-collector.observability:4318"),
        "{env}"
    );
}

#[test]
fn image_values_reach_the_operator_and_the_gateways() {
    let digest = format!("sha256:{}", "4f".repeat(32));
    let rendered = render(
        &json!({"image": {"repository": "registry.example.com/mcp-operator", "digest": digest},
        "gateway": {"image": "registry.example.com/gateway:1.2.3"}}),
    );
    let container = rendered.controller_container();
    assert_eq!(
        container["image"],
        format!("registry.example.com/mcp-operator@{digest}")
    );
    let gateway_image = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "MCP_OPERATOR_GATEWAY_IMAGE")
        .unwrap();
    assert_eq!(gateway_image["value"], "registry.example.com/gateway:1.2.3");

    // Cluster-wide gateway defaults become the controller's flags.
    let tuned = render(
        &json!({"gateway": {"resources": {"requests": {"cpu": "100m", "memory": "96Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"}}, "dns": {"namespace": "openshift-dns", "podLabels": "dns.operator.openshift.io/daemonset-dns=default"}}}),
    );
    let args = tuned.args();
    for expected in [
        "--gateway-cpu-request=100m",
        "--gateway-memory-request=96Mi",
        "--gateway-cpu-limit=1",
        "--gateway-memory-limit=512Mi",
        "--dns-namespace=openshift-dns",
        "--dns-pod-labels=dns.operator.openshift.io/daemonset-dns=default",
    ] {
        assert!(args.contains(&expected), "{expected} missing from {args:?}");
    }
    let refused = try_render(
        &json!({"gateway": {"resources": {"requests": {"cpu": "lots", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"}}}}),
    );
    assert!(refused.is_err_and(|e| e.contains("/gateway/resources/requests/cpu")));

    // By default the gateways run the operator's own image (the same binary).
    let defaults = render(&json!({}));
    let container = defaults.controller_container();
    let image = container["image"].as_str().unwrap();
    assert_eq!(image, "ghcr.io/mcp-operator/mcp-operator:0.1.0");
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "MCP_OPERATOR_GATEWAY_IMAGE" && e["value"] == image)
    );
}

#[test]
fn a_namespace_scoped_install_grants_namespaced_rights_only_there() {
    let rendered =
        render(&json!({"scope": {"namespaces": ["team-a", "team-b"], "selector": "shard=a"}}));
    let args = rendered.args();
    for expected in [
        "--namespace=team-a",
        "--namespace=team-b",
        "--selector=shard=a",
    ] {
        assert!(args.contains(&expected), "{expected} missing from {args:?}");
    }
    let cluster_role = rendered.one("ClusterRole", RELEASE);
    let cluster_resources: Vec<&str> = cluster_role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_array().unwrap())
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        !cluster_resources.contains(&"deployments") && !cluster_resources.contains(&"mcpservers"),
        "namespaced rights stay in the namespaces: {cluster_resources:?}"
    );
    for ns in ["team-a", "team-b"] {
        let role = rendered
            .of_kind("Role")
            .into_iter()
            .find(|r| r["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no Role in {ns}"));
        assert!(role["rules"].to_string().contains("deployments"));
    }
    let webhook = rendered.one("ValidatingWebhookConfiguration", RELEASE);
    assert_eq!(
        webhook["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["team-a", "team-b"])
    );
}

#[test]
fn the_service_monitor_scrapes_the_metrics_service() {
    let rendered = render(
        &json!({"metrics": {"serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}}}}),
    );
    let monitor = rendered.one("ServiceMonitor", RELEASE);
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let service = rendered.one("Service", &format!("{RELEASE}-metrics"));
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
    let webhook_service = rendered.one("Service", &format!("{RELEASE}-webhook"));
    assert_ne!(
        webhook_service["metadata"]["labels"]["mcp-operator.dev/metrics"], "true",
        "only the metrics Service is scraped"
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert!(render(&json!({})).of_kind("ServiceMonitor").is_empty());
}

#[test]
fn the_webhook_certificate_is_valid_for_its_service() {
    let rendered = render(&json!({}));
    let config = rendered.one("ValidatingWebhookConfiguration", RELEASE);
    let hook = &config["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Fail");
    assert_eq!(hook["clientConfig"]["service"]["path"], "/validate");
    assert_eq!(
        hook["rules"][0]["resources"],
        json!(["mcpservers", "mcppolicies", "mcppromptversions"])
    );
    let secret = rendered.one("Secret", &format!("{RELEASE}-webhook-tls"));
    assert_eq!(
        hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"],
        "the API server trusts the CA that signed the serving certificate"
    );
    // The certificate names the Service's DNS name and chains to the caBundle: verified with
    // the same TLS stack the controller serves it with.
    use base64::Engine;
    use rustls::client::danger::ServerCertVerifier;
    let decode = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let ca_pem = decode(&secret["data"]["ca.crt"]);
    let cert_pem = decode(&secret["data"]["tls.crt"]);
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile_certs(&ca_pem) {
        roots.add(ca).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider,
    )
    .build()
    .unwrap();
    let chain = rustls_pemfile_certs(&cert_pem);
    let dns = format!("{RELEASE}-webhook.{NAMESPACE}.svc");
    let name = rustls::pki_types::ServerName::try_from(dns.clone()).unwrap();
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &name,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .unwrap_or_else(|e| panic!("the serving certificate is not valid for {dns}: {e}"));

    // With cert-manager, its CA injector fills the caBundle from the Certificate.
    let managed = render(&json!({"webhook": {"certificate": {"source": "cert-manager"}}}));
    let config = managed.one("ValidatingWebhookConfiguration", RELEASE);
    assert_eq!(
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{NAMESPACE}/{RELEASE}-webhook")
    );
    let certificate = managed.one("Certificate", &format!("{RELEASE}-webhook"));
    assert_eq!(
        certificate["spec"]["secretName"],
        format!("{RELEASE}-webhook-tls")
    );
    assert!(
        certificate["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&json!(dns))
    );
    assert!(
        managed.of_kind("Secret").is_empty(),
        "cert-manager writes the Secret"
    );
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn a_value_that_breaks_the_schema_fails_the_install_naming_it() {
    for (values, named, expected) in [
        (json!({"replicaCount": -1}), "/replicaCount", "minimum"),
        (json!({"logFormat": "jsn"}), "/logFormat", "'text', 'json'"),
        (json!({"logformat": "json"}), "logformat", "not allowed"),
        (
            json!({"webhook": {"failurePolicy": "Sometimes"}}),
            "/webhook/failurePolicy",
            "'Fail', 'Ignore'",
        ),
        (
            json!({"image": {"digest": "latest"}}),
            "/image/digest",
            "sha256",
        ),
        (
            json!({"scope": {"namespaces": ["Team_A"]}}),
            "/scope/namespaces/0",
            "does not match",
        ),
    ] {
        let error = match try_render(&values) {
            Ok(rendered) => panic!("{values} rendered {:?}", rendered.names()),
            Err(e) => e,
        };
        assert!(
            error.contains(named) && error.contains(expected),
            "{values}: the message should name {named} and say {expected}:\n{error}"
        );
    }
}

#[test]
fn the_operators_objects_pass_checkov() {
    // The production install: the image pinned by digest (CKV_K8S_43), which release
    // packaging writes into values.yaml; every other value is the default.
    let rendered = render(&json!({"image": {"digest": format!("sha256:{}", "4f".repeat(32))}}));
    let dir = rendered.files[0].parent().unwrap();
    let report = common::checkov(dir, &[]);
    let summary = &report["summary"];
    assert!(
        summary["passed"].as_u64().unwrap_or_default() > 100,
        "{report:.2000}"
    );
    let deployment_checks = report["results"]["passed_checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["resource"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Deployment.")
        })
        .count();
    assert!(
        deployment_checks > 40,
        "the Deployment was checked: {deployment_checks}"
    );
}

/// docs/argocd.md: how to install the health checks, with the scripts themselves.
fn argocd_page() -> String {
    let mut page = String::from(
        "# Argo CD\n\n\
         Argo CD syncs MCPServer, MCPPolicy and MCPPromptVersion like any manifest. To show their\n\
         health (not just \"synced\"), add the Lua health checks the chart ships in\n\
         `charts/mcp-operator/files/argocd/` to Argo CD's `argocd-cm` ConfigMap. This page is\n\
         generated from those files (a test keeps it in sync, and runs each script with Lua 5.1,\n\
         the dialect of Argo CD's interpreter, on statuses the controller wrote in the scenario\n\
         tests).\n\n\
         | kind | Healthy | Progressing | Degraded | Suspended |\n\
         |---|---|---|---|---|\n\
         | MCPServer | rolled out (`Ready` True) | no status yet, a generation not yet observed, rolling out | `Invalid` (the message says which field), `Blocked` by an enforced MCPPolicy (the rule), `Degraded`, tools quarantined by the gateway, a managed prompt that resolves to no version | `spec.replicas: 0` |\n\
         | MCPPolicy | applied (`N of M selected servers compliant`) | not yet applied | | |\n\
         | MCPPromptVersion | published (Active or Deprecated) | no status yet | shadowed by a duplicate version, content changed under its version, not servable as written | `Retired` |\n\n\
         Servers that fail audit-mode rules stay Healthy: their findings are in `status.findings` and\n\
         `mcp-operator report`.\n\n\
         ## argocd-cm\n\n\
         Merge these keys into the `argocd-cm` ConfigMap of Argo CD's namespace (with the\n\
         argo-cd Helm chart, put them under `configs.cm`):\n\n```yaml\n",
    );
    page.push_str("data:\n");
    for (kind, script) in [
        ("MCPServer", "mcpserver.lua"),
        ("MCPPolicy", "mcppolicy.lua"),
        ("MCPPromptVersion", "mcppromptversion.lua"),
    ] {
        let source =
            std::fs::read_to_string(chart_dir().join("files/argocd").join(script)).unwrap();
        page.push_str(&format!(
            "  resource.customizations.health.mcp-operator.dev_{kind}: |\n"
        ));
        for line in source.lines() {
            if line.is_empty() {
                page.push('\n');
            } else {
                page.push_str(&format!("    {line}\n"));
            }
        }
    }
    page.push_str(
        "```\n\n\
         Argo CD reads `argocd-cm` again on its own; `kubectl -n argocd rollout restart\n\
         deployment argocd-application-controller` applies it at once.\n\n\
         ## Server-side apply\n\n\
         Sync with `ServerSideApply=true` if you like: the CRDs default nothing a manifest does not\n\
         say back, so Argo CD shows no perpetual diff on our kinds (a test applies every example\n\
         twice to the in-process API server and finds what it sent unchanged).\n",
    );
    page
}

#[test]
fn the_argocd_page_is_in_sync_with_the_health_scripts() {
    let expected = argocd_page();
    common::assert_page_in_sync(
        "docs/argocd.md",
        &expected,
        "cargo test --test chart the_argocd_page_is_in_sync_with_the_health_scripts",
    );
    // The snippet is valid YAML whose keys Argo CD knows, and each script is there whole.
    let snippet = &expected[expected.find("```yaml\n").unwrap() + 8..];
    let snippet = &snippet[..snippet.find("```").unwrap()];
    let parsed: Value = serde_saphyr::from_str(snippet).unwrap();
    let data = parsed["data"].as_object().unwrap();
    assert_eq!(data.len(), 3);
    let server = &data["resource.customizations.health.mcp-operator.dev_MCPServer"];
    let source = std::fs::read_to_string(chart_dir().join("files/argocd/mcpserver.lua")).unwrap();
    assert_eq!(server.as_str().unwrap().trim_end(), source.trim_end());
}
