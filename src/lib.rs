//! mcp-operator: runs Model Context Protocol servers on Kubernetes, declared and governed.
//!
//! Layers, each a folder; arrows point from user to used:
//! - [`api`]: the custom resources and gateway documents (uses nothing of ours);
//! - [`builders`]: pure desired-state builders (use `api`);
//! - [`validation`]: admitting manifests as the API server would, plus Rust-side checks (uses `api`);
//! - [`offline`]: reading manifest files and `render` (uses `api`, `validation`, `builders`);
//! - [`gateway`]: the MCP gateway, pure parts apart from its HTTP layer (uses `api`, `builders`);
//! - [`crdgen`]: the CRD files and the stdio wrapper's self-install;
//! - `main.rs`: the CLI, which only parses flags and wires the parts.

#![forbid(unsafe_code)]

pub mod api;
pub mod builders;
pub mod controller;
pub mod crdgen;
pub mod gateway;
pub mod governance;
pub mod offline;
pub mod report;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod validation;

/// Install rustls's `ring` provider for every HTTP client of the process (JWKS, upstreams, OTLP
/// export). Installing twice is harmless: the second attempt keeps the first.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
