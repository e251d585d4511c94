//! The CitoRoute data plane: Gateway API routing on Pingora, configured by the TOML contract
//! of `citoroute-config` and hot-reloaded without dropping a request.

#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod client_auth;
pub mod engine;
pub mod filters;
pub mod h1_proxy;
pub mod https;
pub mod kube_secret;
pub mod kube_source;
pub mod llm;
pub mod metrics;
pub mod mirror;
pub mod reload;
pub mod router;
pub mod server;
pub mod sniff;
pub mod tls;
pub mod tlsroute;
pub mod upstream_tls;
