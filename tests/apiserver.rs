//! The in-process API server behaves as the unmodified kube client expects.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use mcp_operator::api::{MCPPromptVersion, MCPServer};
use mcp_operator::testkit::apiserver::{ApiServer, Faults, Options};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

#[tokio::test]
async fn crud_lists_selectors_and_preconditions() {
    let server = ApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(server.client("t").unwrap(), "ns");
    let created = api
        .create(
            &PostParams::default(),
            &config_map("a", json!({"app": "x"})),
        )
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    api.create(
        &PostParams::default(),
        &config_map("b", json!({"app": "y"})),
    )
    .await
    .unwrap();
    let err = api
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );

    let selected = api
        .list(&ListParams::default().labels("app=x"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    let paged = api.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(paged.items.len(), 1);
    assert!(paged.metadata.continue_.is_some());

    // A stale resourceVersion is refused with 409.
    let mut stale = created.clone();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    stale.data = Some([("k".to_string(), "z".to_string())].into());
    let err = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );

    api.delete("a", &DeleteParams::default()).await.unwrap();
    let err = api.get("a").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404));
    let counts = server.counts();
    assert_eq!(counts.count(Some("t"), "create"), 3);
    assert_eq!(counts.count(Some("t"), "list"), 2);
}

#[tokio::test]
async fn server_side_apply_is_idempotent_and_drops_unapplied_fields() {
    let server = ApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(server.client("t").unwrap(), "ns");
    let pp = PatchParams::apply("mgr").force();
    let first = api.patch("c", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}))).await.unwrap();
    let again = api.patch("c", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}))).await.unwrap();
    assert_eq!(
        first.metadata.resource_version, again.metadata.resource_version,
        "a no-op apply does not bump the resourceVersion"
    );
    let dropped = api.patch("c", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}))).await.unwrap();
    assert_eq!(dropped.data.unwrap().len(), 1);
    assert!(dropped.metadata.managed_fields.is_some());
}

#[tokio::test]
async fn status_and_scale_subresources_and_generation() {
    let server = ApiServer::start().await.unwrap();
    server.install_crds().unwrap();
    let api: Api<MCPServer> = Api::namespaced(server.client("t").unwrap(), "ns");
    let s: MCPServer = serde_json::from_value(json!({"apiVersion": "mcp-operator.dev/v1alpha1", "kind": "MCPServer", "metadata": {"name": "s"}, "spec": {"image": "i", "replicas": 1}})).unwrap();
    let created = api.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let with_status = api
        .patch_status("s", &PatchParams::apply("ctl").force(), &Patch::Apply(json!({"apiVersion": "mcp-operator.dev/v1alpha1", "kind": "MCPServer", "status": {"phase": "Ready", "replicas": 1}})))
        .await
        .unwrap();
    assert_eq!(
        with_status.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );
    assert_eq!(with_status.status.unwrap().phase.as_deref(), Some("Ready"));
    let scaled = api
        .patch_scale(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(3));
    let after = api.get("s").await.unwrap();
    assert_eq!(after.spec.replicas, Some(3));
    assert_eq!(
        after.metadata.generation,
        Some(2),
        "a spec change bumps generation"
    );
}

#[tokio::test]
async fn custom_resources_are_validated_like_the_api_server() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client("t").unwrap();
    let api: Api<MCPServer> = Api::namespaced(client.clone(), "ns");
    let bad: MCPServer = serde_json::from_value(json!({"apiVersion": "mcp-operator.dev/v1alpha1", "kind": "MCPServer", "metadata": {"name": "s"}, "spec": {"image": "i", "transport": "stdio"}})).unwrap();
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "no CRD yet: {err:?}"
    );
    server.install_crds().unwrap();
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("spec.command is required")),
        "{err:?}"
    );

    // Transition rules: a published prompt version cannot change.
    let prompts: Api<MCPPromptVersion> = Api::namespaced(client, "ns");
    let p: MCPPromptVersion = serde_json::from_value(json!({"apiVersion": "mcp-operator.dev/v1alpha1", "kind": "MCPPromptVersion", "metadata": {"name": "p"}, "spec": {"prompt": "t", "version": "1.0.0", "messages": [{"role": "user", "text": "a"}]}})).unwrap();
    prompts.create(&PostParams::default(), &p).await.unwrap();
    let err = prompts
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"messages": [{"role": "user", "text": "b"}]}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("immutable")),
        "{err:?}"
    );
    prompts
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"lifecycle": "Deprecated"}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn finalizers_and_garbage_collection() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client("t").unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");
    let mut owner = config_map("owner", json!({}));
    owner.metadata.finalizers = Some(vec!["test/hold".into()]);
    let owner = cms.create(&PostParams::default(), &owner).await.unwrap();
    let mut child = config_map("child", json!({}));
    child.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().unwrap(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    ]);
    cms.create(&PostParams::default(), &child).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    let marked = cms.get("owner").await.unwrap();
    assert!(
        marked.metadata.deletion_timestamp.is_some(),
        "a finalizer holds the object"
    );
    assert!(cms.get("child").await.is_ok());
    cms.patch(
        "owner",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(
        cms.get("owner").await.is_err(),
        "removing the last finalizer deletes"
    );
    assert!(
        cms.get("child").await.is_err(),
        "dependents are garbage-collected"
    );
}

#[tokio::test]
async fn watches_resume_expire_and_survive_faults() {
    let server = ApiServer::start_with(Options {
        history_limit: 5,
        bookmark_interval: Duration::from_millis(50),
    })
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(server.client("t").unwrap(), "ns");
    for i in 0..3 {
        api.create(
            &PostParams::default(),
            &config_map(&format!("c{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    // A watcher sees the current state, then changes, across dropped streams and errors.
    server.set_faults(Faults::errors(0.2, &[500, 429]).with_watch_drops(0.5));
    let mut seen = std::pin::pin!(
        watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    let api2 = api.clone();
    let writer = tokio::spawn(async move {
        for i in 3..20 {
            // Injected errors: retry until the create lands.
            while api2
                .create(
                    &PostParams::default(),
                    &config_map(&format!("c{i}"), json!({})),
                )
                .await
                .is_err()
            {}
        }
    });
    let mut names = std::collections::BTreeSet::new();
    tokio::time::timeout(WAIT, async {
        while names.len() < 20 {
            // Errors (injected ones, 410 after compaction) are reported and the watcher recovers.
            if let Some(Ok(cm)) = seen.next().await {
                names.insert(cm.metadata.name.unwrap());
            }
        }
    })
    .await
    .expect("the watcher saw all 20 objects");
    writer.await.unwrap();

    // Deployments get rolled out by the helper.
    server.set_faults(Faults::default());
    server.spawn_deployment_controller();
    let deployments: Api<Deployment> = Api::namespaced(server.client("t").unwrap(), "ns");
    let d: Deployment = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})).unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    server
        .wait_until("deployment ready", WAIT, |s| {
            s.get("apps/v1", "Deployment", "ns", "d")
                .and_then(|d| d.pointer("/status/readyReplicas").and_then(|r| r.as_i64()))
                == Some(2)
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn too_old_resource_version_is_gone() {
    let server = ApiServer::start_with(Options {
        history_limit: 2,
        ..Options::default()
    })
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(server.client("t").unwrap(), "ns");
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &config_map(&format!("c{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    let stream = api
        .watch(&kube::api::WatchParams::default(), "2")
        .await
        .unwrap();
    let first = std::pin::pin!(stream).next().await.unwrap();
    match first {
        Ok(kube::api::WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn paginated_initial_lists_complete() {
    let server = ApiServer::start().await.unwrap();
    for i in 0..1200 {
        server.create("v1", "ConfigMap", "ns", json!({"metadata": {"name": format!("c{i:04}"), "labels": {"app.kubernetes.io/managed-by": "mcp-operator"}}})).unwrap();
    }
    for config in [
        watcher::Config::default(),
        watcher::Config::default().any_semantic(),
    ] {
        let api: Api<ConfigMap> = Api::all(server.client("t").unwrap());
        let (reader, writer) = kube::runtime::reflector::store();
        let stream = watcher(
            api,
            config.labels("app.kubernetes.io/managed-by=mcp-operator"),
        )
        .default_backoff()
        .reflect(writer)
        .applied_objects();
        let drive = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while stream.next().await.is_some() {}
        });
        tokio::time::timeout(WAIT, reader.wait_until_ready())
            .await
            .expect("the store fills")
            .unwrap();
        assert_eq!(reader.state().len(), 1200);
        drive.abort();
    }
}

/// Malformed prompt versions sent to the API double as raw JSON (as kubectl would): each is
/// refused with 422 and a message naming the field, by the CRD's schema and CEL rules or, for a
/// placeholder naming no argument (beyond what CEL can check within its cost budget), by the
/// operator's validating admission webhook.
#[tokio::test]
async fn malformed_prompt_versions_are_refused_with_the_field_named() {
    let server = ApiServer::start().await.unwrap();
    server.install_crds().unwrap();
    let client = server.client("t").unwrap();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "ns",
        &kube::api::ApiResource::erase::<MCPPromptVersion>(&()),
    );
    let version = |name: &str, spec: serde_json::Value| -> kube::api::DynamicObject {
        serde_json::from_value(json!({"apiVersion": "mcp-operator.dev/v1alpha1", "kind": "MCPPromptVersion", "metadata": {"name": name}, "spec": spec})).unwrap()
    };
    let hi = json!([{"role": "user", "text": "hi"}]);
    let cases = [
        (
            "bad-semver",
            json!({"prompt": "t", "version": "1.2", "messages": hi}),
            "spec.version",
        ),
        (
            "duplicate-arguments",
            json!({"prompt": "t", "version": "1.0.0", "arguments": [{"name": "a"}, {"name": "a"}], "messages": hi}),
            "spec.arguments",
        ),
        (
            "empty-messages",
            json!({"prompt": "t", "version": "1.0.0", "messages": []}),
            "spec.messages",
        ),
        (
            "text-and-resource",
            json!({"prompt": "t", "version": "1.0.0", "messages": [{"role": "user", "text": "a", "resource": {"uri": "x", "text": "b"}}]}),
            "spec.messages[0]",
        ),
        (
            "neither-text-nor-resource",
            json!({"prompt": "t", "version": "1.0.0", "messages": [{"role": "user"}]}),
            "spec.messages[0]",
        ),
        (
            "argument-name",
            json!({"prompt": "t", "version": "1.0.0", "arguments": [{"name": "two words"}], "messages": hi}),
            "spec.arguments[0].name",
        ),
        (
            "role-unknown",
            json!({"prompt": "t", "version": "1.0.0", "messages": [{"role": "system", "text": "a"}]}),
            "spec.messages[0].role",
        ),
        (
            "lifecycle-unknown",
            json!({"prompt": "t", "version": "1.0.0", "lifecycle": "Archived", "messages": hi}),
            "spec.lifecycle",
        ),
        (
            "prompt-name",
            json!({"prompt": "two words", "version": "1.0.0", "messages": hi}),
            "spec.prompt",
        ),
    ];
    for (name, spec, field) in cases {
        let err = api
            .create(&PostParams::default(), &version(name, spec))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains(field)),
            "{name}: {err:?}"
        );
    }
    // A placeholder naming no argument: refused by the operator's admission webhook.
    let undeclared = json!({"prompt": "t", "version": "1.0.0", "messages": [{"role": "user", "text": "see {{ticket}}"}]});
    server.install_admission_webhook();
    let err = api
        .create(
            &PostParams::default(),
            &version("undeclared-placeholder", undeclared),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("admission webhook denied") && s.message.contains("spec.messages[0].text")),
        "{err:?}"
    );
    // The eleventh: a lifecycle moving backwards.
    api.create(
        &PostParams::default(),
        &version(
            "p",
            json!({"prompt": "t", "version": "1.0.0", "lifecycle": "Deprecated", "messages": hi}),
        ),
    )
    .await
    .unwrap();
    let err = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"lifecycle": "Active"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("spec.lifecycle only moves forward")),
        "{err:?}"
    );
}
