//! Test support shipped behind the `testkit` feature: an in-process Kubernetes API server.

pub mod apiserver;
