//! The admission webhook over real TLS: the API server's AdmissionReview is answered on
//! `POST /validate`, and a rotated certificate is served without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use mcp_operator::controller::webhook::{WebhookTls, serve};
use serde_json::{Value, json};

/// A CA and a certificate for 127.0.0.1 it signed, written as PEM files; returns the CA's PEM.
fn issue(dir: &Path) -> String {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    ca.pem()
}

fn review() -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "1f0c", "kind": {"group": "mcp-operator.dev", "version": "v1alpha1", "kind": "MCPPromptVersion"},
            "operation": "CREATE", "name": "triage-1-0-0",
            "object": {"metadata": {"name": "triage-1-0-0"}, "spec": {"prompt": "triage", "version": "1.0.0",
                "messages": [{"role": "user", "text": "see {{ticket}}"}]}}}})
}

async fn post(url: &str, ca: &str) -> Result<Value, reqwest::Error> {
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .build()
        .unwrap();
    client.post(url).json(&review()).send().await?.json().await
}

#[tokio::test]
async fn reviews_are_answered_over_tls_and_a_rotated_certificate_is_served() {
    mcp_operator::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let first_ca = issue(dir.path());
    let (addr, task) = serve(
        "127.0.0.1:0".parse().unwrap(),
        WebhookTls {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        },
    )
    .await
    .unwrap();
    let url = format!("https://{addr}/validate");
    let answer = post(&url, &first_ca).await.unwrap();
    assert_eq!(answer["response"]["uid"], "1f0c");
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.messages[0].text"),
        "{answer}"
    );

    // The Secret is rotated: new files, signed by another CA, served at the next handshake.
    let second_ca = issue(dir.path());
    let answer = post(&url, &second_ca).await.unwrap();
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        post(&url, &first_ca).await.is_err(),
        "the old certificate is no longer served"
    );
    task.abort();
}

#[tokio::test]
async fn unreadable_certificates_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("tls.key"), "").unwrap();
    let error = serve(
        "127.0.0.1:0".parse().unwrap(),
        WebhookTls {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("tls.crt"), "{error}");
}
