//! A token issuer for tests and benchmarks: an https server (with its own CA, trusted by the
//! gateway through SSL_CERT_FILE) serving RFC 8414 metadata and a JWKS, and keys that sign tokens.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// An https server for the issuer's metadata and JWKS, counting JWKS fetches.
pub struct Issuer {
    pub url: String,
    pub jwks: Arc<Mutex<Value>>,
    pub fetches: Arc<AtomicUsize>,
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// A CA written to `dir/ca.pem` and a TLS acceptor for 127.0.0.1 with a certificate it signed.
fn tls_for_loopback(dir: &std::path::Path) -> (tokio_rustls::TlsAcceptor, PathBuf) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mcp-operator test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca_file)
}

/// An https front for a plain-HTTP server on 127.0.0.1 (TLS terminated, bytes relayed as they
/// are), with the CA that signed its certificate.
pub struct TlsFront {
    pub port: u16,
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

type TlsConnection = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// A listener on 127.0.0.1 with a port from the OS, and that port.
fn loopback_listener() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Accept TLS connections on `listener`, on a thread of their own, each handed to `handle`.
fn serve_tls<F, Fut>(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handle: F,
) where
    F: Fn(TlsConnection) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, handle) = (acceptor.clone(), handle.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        handle(tls).await;
                    }
                });
            }
        });
    });
}

pub fn start_tls_front(target_port: u16) -> TlsFront {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca_file) = tls_for_loopback(dir.path());
    let (listener, port) = loopback_listener();
    serve_tls(listener, acceptor, move |mut tls| async move {
        let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
    });
    TlsFront {
        port,
        ca_file,
        _dir: dir,
    }
}

pub fn start_issuer() -> Issuer {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca_file) = tls_for_loopback(dir.path());
    let jwks = Arc::new(Mutex::new(json!({"keys": []})));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (listener, port) = loopback_listener();
    let url = format!("https://127.0.0.1:{port}");
    let (served_jwks, served_fetches, served_issuer) = (jwks.clone(), fetches.clone(), url.clone());
    serve_tls(listener, acceptor, move |mut tls| {
        let (jwks, fetches, issuer) = (
            served_jwks.clone(),
            served_fetches.clone(),
            served_issuer.clone(),
        );
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let head = String::from_utf8_lossy(&request);
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let (status, body) = match path.as_str() {
                "/jwks.json" => {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    ("200 OK", jwks.lock().unwrap().to_string())
                }
                "/.well-known/oauth-authorization-server" => (
                    "200 OK",
                    json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks.json")})
                        .to_string(),
                ),
                _ => ("404 Not Found", "{}".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });
    Issuer {
        url,
        jwks,
        fetches,
        ca_file,
        _dir: dir,
    }
}

/// A signing key and its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub key: EncodingKey,
    pub public_pem: String,
}

impl SigningKey {
    pub fn rsa(kid: &str) -> Self {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let pem = private.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).unwrap();
        let public_pem = private
            .to_public_key()
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .unwrap();
        Self {
            kid: kid.into(),
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            public_pem,
        }
    }

    pub fn ec(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            public_pem: pair.public_key_pem(),
        }
    }

    pub fn jwk(&self) -> Value {
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&self.key, self.alg).unwrap()).unwrap();
        jwk["kid"] = json!(self.kid);
        jwk["use"] = json!("sig");
        jwk
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
