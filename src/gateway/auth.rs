//! OAuth 2.1 resource server: bearer JWTs checked against the issuer's JWKS (fetched over https,
//! cached, refreshed when a token names an unknown key, one refresh at a time), the answers
//! RFC 6750 asks for, and the RFC 9728 protected-resource metadata.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, RwLock};

use super::access::Principal;
use super::error_chain;
use crate::api::gateway_config::GatewayConfig;

/// Well-known path of the protected-resource metadata (RFC 9728).
pub const PROTECTED_RESOURCE_PATH: &str = "/.well-known/oauth-protected-resource";
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;
/// Shortest time between two refreshes caused by unknown key ids, so random `kid`s cannot make
/// the gateway hammer the issuer.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How often keys are refreshed regardless.
pub const JWKS_REFRESH_PERIOD: Duration = Duration::from_secs(600);
/// Largest JWKS or metadata document accepted.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Signature algorithms accepted. Only public-key ones: an HMAC "signature" made with the
/// issuer's public key as secret must never verify.
const ACCEPTED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a request is not authenticated or not authorised by its token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token in the `Authorization` header.
    #[error("a bearer token is required")]
    Missing,
    /// The token came in the query string, which leaks it into logs.
    #[error("access tokens are accepted only in the Authorization header, not in the query string")]
    InQuery,
    /// The token is malformed, badly signed, expired or not for this server.
    #[error("{0}")]
    Invalid(String),
    /// The token lacks scopes this server requires.
    #[error("the token lacks required scope(s): {}", .0.join(" "))]
    InsufficientScope(Vec<String>),
}

impl AuthError {
    /// HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Missing | Self::Invalid(_) => StatusCode::UNAUTHORIZED,
            Self::InQuery => StatusCode::BAD_REQUEST,
            Self::InsufficientScope(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 section 3, RFC 9728 section 5.1).
    pub fn challenge(&self, metadata_url: &str, scopes: &[String]) -> String {
        let mut challenge = format!("Bearer resource_metadata=\"{metadata_url}\"");
        if !scopes.is_empty() {
            challenge.push_str(&format!(", scope=\"{}\"", scopes.join(" ")));
        }
        let error = match self {
            Self::Missing => None,
            Self::InQuery => Some("invalid_request"),
            Self::Invalid(_) => Some("invalid_token"),
            Self::InsufficientScope(_) => Some("insufficient_scope"),
        };
        if let Some(error) = error {
            let description = self.to_string().replace(['"', '\\'], "'");
            challenge.push_str(&format!(
                ", error=\"{error}\", error_description=\"{description}\""
            ));
        }
        challenge
    }
}

/// Problems with the authentication configuration, found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("resource {0:?} is not an absolute http(s) URL")]
    Resource(String),
    #[error("authentication.{field}: {value:?} must be an https URL")]
    NotHttps { field: &'static str, value: String },
    #[error("cannot build the HTTP client for the JWKS: {0}")]
    Client(String),
}

/// The protected resource's identity: canonical URI and where its metadata lives.
#[derive(Clone, Debug)]
pub struct ResourceIdentity {
    /// The canonical resource URI (no fragment, no trailing slash, lowercase scheme and host).
    pub resource: String,
    /// Path of the resource (`/mcp`), used for the path form of the metadata URL.
    pub path: String,
    /// `https://host/.well-known/oauth-protected-resource/<path>`.
    pub metadata_url: String,
}

impl ResourceIdentity {
    /// From the configuration's `resource`.
    pub fn new(resource: &str) -> Result<Self, AuthConfigError> {
        let mut url = url::Url::parse(resource)
            .map_err(|_| AuthConfigError::Resource(resource.to_owned()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(AuthConfigError::Resource(resource.to_owned()));
        }
        url.set_fragment(None);
        let canonical = url.as_str().trim_end_matches('/').to_owned();
        let path = url.path().trim_end_matches('/').to_owned();
        let origin = url.origin().ascii_serialization();
        Ok(Self {
            resource: canonical,
            metadata_url: format!("{origin}{PROTECTED_RESOURCE_PATH}{path}"),
            path,
        })
    }
}

struct VerifyKey {
    key: DecodingKey,
    kty: &'static str,
    alg: Option<Algorithm>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    without_kid: Vec<Arc<VerifyKey>>,
    generation: u64,
}

fn key_type(params: &AlgorithmParameters) -> Option<&'static str> {
    match params {
        AlgorithmParameters::RSA(_) => Some("RSA"),
        AlgorithmParameters::EllipticCurve(_) => Some("EC"),
        AlgorithmParameters::OctetKeyPair(_) => Some("OKP"),
        // Symmetric keys never verify access tokens here.
        _ => None,
    }
}

fn algorithm_key_type(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => "EC",
        Algorithm::EdDSA => "OKP",
        _ => "RSA",
    }
}

fn signing_algorithm(alg: &KeyAlgorithm) -> Option<Algorithm> {
    match alg {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::RS384 => Some(Algorithm::RS384),
        KeyAlgorithm::RS512 => Some(Algorithm::RS512),
        KeyAlgorithm::PS256 => Some(Algorithm::PS256),
        KeyAlgorithm::PS384 => Some(Algorithm::PS384),
        KeyAlgorithm::PS512 => Some(Algorithm::PS512),
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::ES384 => Some(Algorithm::ES384),
        KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// Parse a JWKS document, keeping the public signing keys it holds and skipping the rest.
fn parse_key_set(document: &Value) -> Result<KeySet, String> {
    let keys = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWKS has no \"keys\" array")?;
    let mut set = KeySet::default();
    for raw in keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        let Some(kty) = key_type(&jwk.algorithm) else {
            continue;
        };
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
        {
            continue;
        }
        let alg = match &jwk.common.key_algorithm {
            None => None,
            Some(alg) => match signing_algorithm(alg) {
                Some(alg) => Some(alg),
                None => continue,
            },
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let key = Arc::new(VerifyKey { key, kty, alg });
        match &jwk.common.key_id {
            Some(kid) => {
                set.by_kid.insert(kid.clone(), key);
            }
            None => set.without_kid.push(key),
        }
    }
    Ok(set)
}

/// Where the keys come from.
#[derive(Clone, Debug)]
enum JwksSource {
    Uri(String),
    Discover { issuer: String },
}

struct JwksCache {
    source: JwksSource,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// `keys`' generation, readable on every request without taking the lock.
    generation: std::sync::atomic::AtomicU64,
    /// Held while fetching, so concurrent unknown `kid`s cause one fetch; holds the time of the
    /// last refresh an unknown `kid` caused.
    refresh: Mutex<Option<Instant>>,
    fetches: std::sync::atomic::AtomicU64,
}

impl JwksCache {
    async fn fetch_json(&self, url: &str) -> Result<Value, String> {
        if !url.starts_with("https://") {
            return Err(format!(
                "refusing to fetch {url}: keys are fetched over https only"
            ));
        }
        let response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("fetching {url}: {}", error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("fetching {url}: HTTP {}", response.status()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("reading {url}: {e}"))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("{url} is larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url} is not JSON: {e}"))
    }

    async fn jwks_uri(&self) -> Result<String, String> {
        match &self.source {
            JwksSource::Uri(uri) => Ok(uri.clone()),
            JwksSource::Discover { issuer } => {
                let mut last_error = String::new();
                for url in discovery_urls(issuer) {
                    match self.fetch_json(&url).await {
                        Ok(doc) => {
                            if let Some(uri) = doc.get("jwks_uri").and_then(Value::as_str) {
                                return Ok(uri.to_owned());
                            }
                            last_error = format!("{url} has no jwks_uri");
                        }
                        Err(e) => last_error = e,
                    }
                }
                Err(last_error)
            }
        }
    }

    /// Fetch the keys now and install them.
    async fn fetch(&self) -> Result<(), String> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let uri = self.jwks_uri().await?;
        let document = self.fetch_json(&uri).await?;
        let mut set = parse_key_set(&document)?;
        let mut keys = self.keys.write().await;
        set.generation = keys.generation + 1;
        let generation = set.generation;
        *keys = Arc::new(set);
        self.generation
            .store(generation, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Refresh because a token named `kid` that the keys seen at `generation` do not have.
    async fn refresh_for_unknown(&self, generation: u64) {
        let mut last = self.refresh.lock().await;
        if self.keys.read().await.generation != generation {
            return; // someone refreshed while we waited
        }
        if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_REFRESH_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %e, "refreshing the JWKS failed");
        }
    }
}

fn discovery_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let mut urls = Vec::new();
    if let Ok(url) = url::Url::parse(trimmed) {
        let origin = url.origin().ascii_serialization();
        let path = url.path().trim_end_matches('/');
        urls.push(format!(
            "{origin}/.well-known/oauth-authorization-server{path}"
        ));
    }
    urls.push(format!("{trimmed}/.well-known/openid-configuration"));
    urls
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Most tokens remembered as verified; past it the memory is cleared.
const VERIFIED_TOKENS: usize = 10_000;
/// Longest a verified token is trusted without checking its signature again.
const VERIFIED_TTL_SECONDS: i64 = 60;

struct Verified {
    principal: Arc<Principal>,
    generation: u64,
    until: i64,
}

/// Tokens whose signature and claims were checked, so a client's every request does not pay for
/// a signature check. An entry lasts until the token expires (at most a minute) and only while
/// the same keys are loaded, so a rotated-out key stops its tokens at once.
///
/// Keyed by the token itself: a lookup compares whole tokens, so a hash collision can never
/// match another token, and foldhash (randomly seeded per process) hashes a token in a fraction
/// of a SHA-256. Only verified tokens are inserted, so a caller cannot fill it at will. An entry
/// holds its whole token, about 1 KiB for a typical JWT: some 10 MiB when the cache is full.
#[derive(Default)]
struct VerifiedTokens(std::sync::Mutex<HashMap<Box<str>, Verified, foldhash::fast::RandomState>>);

impl VerifiedTokens {
    fn lookup(&self, token: &str, generation: u64, now: i64) -> Option<Arc<Principal>> {
        let cache = self.0.lock().ok()?;
        let entry = cache.get(token)?;
        (entry.generation == generation && now < entry.until).then(|| Arc::clone(&entry.principal))
    }

    fn remember(&self, token: &str, generation: u64, exp: i64, principal: &Arc<Principal>) {
        let Ok(mut cache) = self.0.lock() else {
            return;
        };
        if cache.len() >= VERIFIED_TOKENS {
            cache.clear();
        }
        let until = exp.min(unix_now() + VERIFIED_TTL_SECONDS);
        cache.insert(
            token.into(),
            Verified {
                principal: Arc::clone(principal),
                generation,
                until,
            },
        );
    }
}

/// Validates bearer tokens for one protected resource.
pub struct Authenticator {
    verified: VerifiedTokens,
    issuer: String,
    audiences: Vec<String>,
    required_scopes: Vec<String>,
    groups_claim: String,
    max_lifetime_seconds: Option<i64>,
    identity: ResourceIdentity,
    metadata: Value,
    jwks: JwksCache,
}

impl Authenticator {
    /// Build from the gateway configuration; `None` when it configures no authentication.
    pub fn from_config(config: &GatewayConfig) -> Result<Option<Self>, AuthConfigError> {
        let Some(auth) = &config.authentication else {
            return Ok(None);
        };
        let identity = ResourceIdentity::new(&config.resource)?;
        if !auth.issuer.starts_with("https://") {
            return Err(AuthConfigError::NotHttps {
                field: "issuer",
                value: auth.issuer.clone(),
            });
        }
        let source = match &auth.jwks_uri {
            Some(uri) if uri.starts_with("https://") => JwksSource::Uri(uri.clone()),
            Some(uri) => {
                return Err(AuthConfigError::NotHttps {
                    field: "jwksUri",
                    value: uri.clone(),
                });
            }
            None => JwksSource::Discover {
                issuer: auth.issuer.clone(),
            },
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AuthConfigError::Client(error_chain(&e)))?;
        let mut scopes: BTreeSet<String> = auth.required_scopes.iter().cloned().collect();
        for rule in &config.authorization.rules {
            scopes.extend(rule.subjects.scopes.iter().cloned());
        }
        let metadata = json!({
            "resource": identity.resource,
            "authorization_servers": [auth.issuer],
            "scopes_supported": scopes,
            "bearer_methods_supported": ["header"],
            "resource_name": format!("{}/{}", config.server.namespace, config.server.name),
        });
        let mut audiences = auth.audiences.clone();
        if audiences.is_empty() {
            audiences.push(identity.resource.clone());
        }
        Ok(Some(Self {
            verified: VerifiedTokens::default(),
            issuer: auth.issuer.clone(),
            audiences,
            required_scopes: auth.required_scopes.clone(),
            groups_claim: auth.groups_claim.clone(),
            max_lifetime_seconds: auth.max_token_lifetime_seconds,
            identity,
            metadata,
            jwks: JwksCache {
                source,
                client,
                keys: RwLock::new(Arc::new(KeySet::default())),
                generation: Default::default(),
                refresh: Mutex::new(None),
                fetches: Default::default(),
            },
        }))
    }

    /// The resource's identity (metadata URL for challenges).
    pub fn identity(&self) -> &ResourceIdentity {
        &self.identity
    }

    /// The RFC 9728 metadata document.
    pub fn metadata(&self) -> &Value {
        &self.metadata
    }

    /// Scopes every token must carry, for challenges.
    pub fn required_scopes(&self) -> &[String] {
        &self.required_scopes
    }

    /// Fetch the keys now (start-up and periodic refresh).
    pub async fn refresh_keys(&self) -> Result<(), String> {
        // Held so a concurrent unknown-kid refresh waits for this fetch instead of repeating it;
        // the unknown-kid cool-down is left alone, so a key published right after start-up is
        // still picked up at once.
        let _one_at_a_time = self.jwks.refresh.lock().await;
        self.jwks.fetch().await
    }

    /// Authenticate a request from its headers and query string.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Arc<Principal>, AuthError> {
        if query.is_some_and(|q| {
            q.split('&')
                .any(|pair| pair.split('=').next() == Some("access_token"))
        }) {
            return Err(AuthError::InQuery);
        }
        let token = bearer_token(headers)?;
        let generation = self
            .jwks
            .generation
            .load(std::sync::atomic::Ordering::Acquire);
        let now = unix_now();
        if let Some(principal) = self.verified.lookup(token, generation, now) {
            return Ok(principal);
        }
        let claims = self.verify(token).await?;
        let principal = Arc::new(self.principal(&claims)?);
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
        self.verified.remember(token, generation, exp, &principal);
        Ok(principal)
    }

    async fn verify(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
        if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "signature algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let key = match self.find_key(header.kid.as_deref(), header.alg).await {
            Some(key) => key,
            None => {
                let generation = self.jwks.keys.read().await.generation;
                self.jwks.refresh_for_unknown(generation).await;
                self.find_key(header.kid.as_deref(), header.alg)
                    .await
                    .ok_or_else(|| {
                        AuthError::Invalid("the token's signing key is unknown".into())
                    })?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| AuthError::Invalid(describe_jwt_error(&e)))?;
        let claims = data.claims;
        if let Some(max) = self.max_lifetime_seconds {
            let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
            let iat = claims.get("iat").and_then(Value::as_i64);
            match iat {
                Some(iat) if exp - iat <= max => {}
                Some(_) => {
                    return Err(AuthError::Invalid(format!(
                        "the token lives longer than {max} seconds"
                    )));
                }
                None => return Err(AuthError::Invalid("the token has no iat claim".into())),
            }
        }
        Ok(claims)
    }

    async fn find_key(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<VerifyKey>> {
        let keys = self.jwks.keys.read().await;
        let fits = |key: &&Arc<VerifyKey>| {
            key.kty == algorithm_key_type(alg) && key.alg.is_none_or(|a| a == alg)
        };
        match kid {
            Some(kid) => keys.by_kid.get(kid).filter(fits).cloned(),
            None => {
                let mut candidates = keys
                    .without_kid
                    .iter()
                    .chain(keys.by_kid.values())
                    .filter(fits);
                let only = candidates.next()?;
                // Without a kid the key must be unambiguous.
                candidates.next().is_none().then(|| only.clone())
            }
        }
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
        let scopes = strings(claims.get("scope").or_else(|| claims.get("scp")));
        let missing: Vec<String> = self
            .required_scopes
            .iter()
            .filter(|s| !scopes.contains(s))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(AuthError::InsufficientScope(missing));
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::Invalid("the token has no sub claim".into()))?
            .to_owned();
        let client_id = claims
            .get("client_id")
            .or_else(|| claims.get("azp"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Principal {
            subject,
            client_id,
            groups: strings(claims.get(&self.groups_claim)),
            scopes,
            authenticated: true,
        })
    }
}

/// A claim that is a space-separated string or an array of strings.
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::Invalid(
            "more than one Authorization header".into(),
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("the Authorization header is not ASCII".into()))?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err(AuthError::Missing);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Invalid("the bearer token is empty".into()));
    }
    Ok(token)
}

fn describe_jwt_error(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "the token was issued by another issuer".into(),
        ErrorKind::InvalidAudience => "the token is not meant for this server (aud)".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not fit its key".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        _ => format!("invalid token: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_identity_is_canonical() {
        let id = ResourceIdentity::new("HTTPS://Example.COM/mcp/#frag").unwrap();
        assert_eq!(id.resource, "https://example.com/mcp");
        assert_eq!(
            id.metadata_url,
            "https://example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert!(ResourceIdentity::new("not a url").is_err());
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let url = "https://h/.well-known/oauth-protected-resource/mcp";
        assert_eq!(
            AuthError::Missing.challenge(url, &["mcp".into()]),
            format!("Bearer resource_metadata=\"{url}\", scope=\"mcp\"")
        );
        let invalid = AuthError::Invalid("the token has expired".into()).challenge(url, &[]);
        assert!(invalid.contains("error=\"invalid_token\""), "{invalid}");
        let scope = AuthError::InsufficientScope(vec!["tools:write".into()]);
        assert_eq!(scope.status(), StatusCode::FORBIDDEN);
        assert!(
            scope
                .challenge(url, &[])
                .contains("error=\"insufficient_scope\"")
        );
    }

    #[test]
    fn symmetric_and_unusable_keys_are_ignored() {
        let set = parse_key_set(&json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "weird"}
        ]}))
        .unwrap();
        assert_eq!(set.by_kid.keys().collect::<Vec<_>>(), vec!["rsa"]);
    }

    #[test]
    fn discovery_tries_rfc_8414_then_oidc() {
        assert_eq!(
            discovery_urls("https://idp.example/tenant"),
            vec![
                "https://idp.example/.well-known/oauth-authorization-server/tenant",
                "https://idp.example/tenant/.well-known/openid-configuration"
            ]
        );
    }
}
