//! The validating admission webhook over HTTPS (`POST /validate`): the API server sends an
//! AdmissionReview for each create or update of our three kinds, answered by
//! [`crate::validation::admission::review`]. The certificate and key are PEM files (mounted from a
//! Secret the chart or cert-manager provides); they are read again when they change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::validation::admission;

/// Path the API server posts AdmissionReviews to.
pub const WEBHOOK_PATH: &str = "/validate";
/// Largest review accepted (objects are at most a few hundred KiB).
const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

/// Why the webhook cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot read the webhook certificate {path}: {message}")]
    Certificate { path: String, message: String },
    #[error("cannot read the webhook key {path}: {message}")]
    Key { path: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Where the webhook's certificate chain and key are.
#[derive(Clone, Debug)]
pub struct WebhookTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The webhook's HTTP routes.
pub fn router() -> Router {
    Router::new()
        .route(WEBHOOK_PATH, axum::routing::post(validate))
        // Larger bodies get 413 before they are read whole.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REVIEW_BYTES))
}

async fn validate(body: Bytes) -> Response {
    match admission::review(&body) {
        Ok(answer) => (
            [(header::CONTENT_TYPE, "application/json")],
            answer.to_string(),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

fn load(tls: &WebhookTls) -> Result<Arc<CertifiedKey>, WebhookError> {
    let shown = |p: &Path| p.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| WebhookError::Certificate {
            path: shown(&tls.cert),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(WebhookError::Certificate {
            path: shown(&tls.cert),
            message: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| WebhookError::Key {
        path: shown(&tls.key),
        message: e.to_string(),
    })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| WebhookError::Key {
            path: shown(&tls.key),
            message: e.to_string(),
        })?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Serves the current certificate, read again when the files change (a rotated Secret).
#[derive(Debug)]
struct Rotating {
    tls: WebhookTls,
    current: std::sync::RwLock<(Option<std::time::SystemTime>, Arc<CertifiedKey>)>,
}

impl Rotating {
    fn modified(&self) -> Option<std::time::SystemTime> {
        let cert = std::fs::metadata(&self.tls.cert)
            .and_then(|m| m.modified())
            .ok();
        let key = std::fs::metadata(&self.tls.key)
            .and_then(|m| m.modified())
            .ok();
        cert.max(key)
    }
}

impl ResolvesServerCert for Rotating {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let modified = self.modified();
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if current.0 == modified {
                return Some(current.1.clone());
            }
        }
        match load(&self.tls) {
            Ok(fresh) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) =
                    (modified, fresh.clone());
                Some(fresh)
            }
            Err(e) => {
                // A half-written rotation: keep serving the last good pair.
                tracing::warn!(error = %e, "the webhook certificate could not be read again");
                Some(
                    self.current
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .1
                        .clone(),
                )
            }
        }
    }
}

/// Listen on `addr` with TLS and answer reviews until the task is dropped; returns the bound
/// address and the serving task.
pub async fn serve(
    addr: SocketAddr,
    tls: WebhookTls,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), WebhookError> {
    crate::install_tls_provider();
    let first = load(&tls)?;
    let resolver = Rotating {
        current: std::sync::RwLock::new((None, first)),
        tls,
    };
    let modified = resolver.modified();
    resolver
        .current
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .0 = modified;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| WebhookError::Listen { addr, source })?;
    let service = hyper_util::service::TowerToHyperService::new(router());
    let task = tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "the webhook could not accept a connection");
                    continue;
                }
            };
            let (acceptor, service) = (acceptor.clone(), service.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let served = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
                if let Err(e) = served {
                    tracing::debug!(error = %e, "a webhook connection ended with an error");
                }
            });
        }
    });
    Ok((bound, task))
}
