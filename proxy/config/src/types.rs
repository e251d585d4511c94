//! The TOML schema, version 1. Every type here is part of the contract between the controller
//! and the proxy, and what a standalone user writes by hand: additive changes only within a
//! version. Field names are snake_case; enum values use the Gateway API spelling
//! (`PathPrefix`, `RegularExpression`, ...), so a route reads like its Kubernetes source.

use crate::duration::GatewayDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The schema version this crate reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

fn is_false(b: &bool) -> bool {
    !*b
}

/// A whole proxy configuration: one per Gateway (or one hand-written file in standalone mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Must equal [`SCHEMA_VERSION`]; a proxy refuses a config from a newer controller rather
    /// than misread it.
    pub version: u32,
    #[serde(default)]
    pub runtime: RuntimeSettings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
    /// Certificates by name; listeners refer to them. Keys are files, never inline, so a
    /// config can sit in a ConfigMap while keys stay in Secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub certificates: BTreeMap<String, Certificate>,
    /// Backends by name (in Kubernetes `namespace/service:port`). Routes refer to them by name
    /// so 5,000 routes to the same Service carry its endpoints once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backends: BTreeMap<String, Backend>,
    /// HTTP routes in tie-break order: when the spec's precedence rules tie, the earlier route
    /// wins (the controller sorts by creation time, then namespace/name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_routes: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_routes: Vec<GrpcRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_routes: Vec<TlsRoute>,
    /// AI gateway: LLM backends by name (see [`crate::llm`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub llm_backends: BTreeMap<String, crate::llm::LlmBackend>,
    /// AI gateway: OpenAI-compatible chat completion routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub llm_routes: Vec<crate::llm::LlmRoute>,
    /// AI gateway: consumers by name, identified by a JWT claim.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consumers: BTreeMap<String, crate::llm::Consumer>,
    /// AI gateway: how tokens are validated on LLM routes with consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<crate::llm::JwtSettings>,
}

/// Process-level settings, read when the process starts: a reload that changes them is
/// accepted for its routes, and the settings take effect at the next restart (`access_log`
/// is the exception: it applies at once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// Where `/metrics`, `/healthz` and `/readyz` are served. Empty disables the admin listener.
    pub admin_address: String,
    /// Worker threads for the data plane; 0 means one per available CPU.
    pub worker_threads: usize,
    /// How long to keep accepting and serving after SIGTERM before closing listeners.
    pub grace_period: GatewayDuration,
    /// How long in-flight requests may take to finish after the grace period.
    pub shutdown_timeout: GatewayDuration,
    /// Log one line per request (structured, through `tracing`).
    pub access_log: bool,
    /// Concurrent streams per upstream HTTP/2 connection.
    pub max_h2_streams: usize,
    /// Idle upstream connections kept per process.
    pub upstream_keepalive_pool_size: usize,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            admin_address: "127.0.0.1:9091".to_string(),
            worker_threads: 0,
            grace_period: GatewayDuration(std::time::Duration::from_secs(5)),
            shutdown_timeout: GatewayDuration(std::time::Duration::from_secs(5)),
            access_log: false,
            max_h2_streams: 100,
            upstream_keepalive_pool_size: 1024,
        }
    }
}

/// A Gateway listener. Listeners sharing a port share one socket; the request's host (or the
/// TLS SNI) picks the most specific listener hostname among them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique within the config; routes attach by this name.
    pub name: String,
    /// Bind address; defaults to all IPv4 addresses.
    #[serde(default = "default_bind_address")]
    pub address: String,
    pub port: u16,
    pub protocol: ListenerProtocol,
    /// Only requests (or SNI) matching this hostname reach this listener; `*.example.com`
    /// matches any name below `example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

fn default_bind_address() -> String {
    "0.0.0.0".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ListenerProtocol {
    /// HTTP/1.1 and h2c (prior knowledge) on one port.
    #[serde(rename = "HTTP")]
    Http,
    /// TLS terminated here, then HTTP/1.1 or HTTP/2 by ALPN.
    #[serde(rename = "HTTPS")]
    Https,
    /// TLS routed by SNI to TLS routes: passed through, or terminated to a TCP backend.
    #[serde(rename = "TLS")]
    Tls,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    #[serde(default)]
    pub mode: TlsMode,
    /// Names in `[certificates]`. The most specific listener hostname covering the SNI picks
    /// the listener; among its certificates the first that names the SNI and whose key type
    /// the client accepts is served (e.g. ECDSA and RSA side by side), else the first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
    /// Client certificate validation (frontend mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_validation: Option<ClientValidation>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TlsMode {
    #[default]
    Terminate,
    Passthrough,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientValidation {
    /// PEM files of the CAs a client certificate must chain to.
    pub ca_files: Vec<String>,
    /// Accept connections without a valid client certificate too.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_insecure_fallback: bool,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub cert_file: String,
    pub key_file: String,
}

/// A set of endpoints reached the same way: in Kubernetes one Service port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// `ip:port` (IPv6 as `[::1]:80`). Empty means no ready endpoint: requests get 503.
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub protocol: BackendProtocol,
    /// TLS to the backend (BackendTLSPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// Passive circuit breaking per endpoint; on by default.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<GatewayDuration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    /// HTTP/1.1, upgrades (WebSocket) allowed.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge, without TLS (gRPC backends).
    H2c,
    /// HTTP/2 over TLS (needs `tls`).
    H2,
    /// HTTP/1.1 used for WebSocket (`kubernetes.io/ws`); same as `http1`.
    Websocket,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTls {
    /// SNI sent, and the name the certificate must carry unless `subject_alt_names` is set.
    pub sni: String,
    /// PEM CA files; empty means the system roots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_files: Vec<String>,
    /// When set, the certificate must carry one of these names (DNS names, or URIs such as
    /// SPIFFE IDs when they contain `:`) and `sni` is no longer checked against it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancing {
    #[serde(default)]
    pub policy: LbPolicy,
    /// What Maglev hashes: `source_ip` (default), `header:<name>` or `cookie:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    /// Maglev table size; must be prime. Default 65537.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<usize>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    Random,
    /// Consistent hashing: a key keeps its endpoint while endpoints come and go.
    Maglev,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerSettings {
    pub enabled: bool,
    /// Consecutive failures that open an endpoint's breaker.
    pub consecutive_failures: u32,
    /// Failure ratio over `window` that opens it (0 disables), once `min_requests` were seen.
    pub failure_ratio: f64,
    pub min_requests: u32,
    pub window: GatewayDuration,
    /// How long an open breaker rejects before letting probes through.
    pub open_for: GatewayDuration,
    pub half_open_probes: u32,
}

impl Default for CircuitBreakerSettings {
    fn default() -> Self {
        CircuitBreakerSettings {
            enabled: true,
            consecutive_failures: 5,
            failure_ratio: 0.0,
            min_requests: 20,
            window: GatewayDuration(std::time::Duration::from_secs(10)),
            open_for: GatewayDuration(std::time::Duration::from_secs(5)),
            half_open_probes: 1,
        }
    }
}

/// An HTTPRoute (or a hand-written route) attached to listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRoute {
    /// `namespace/name` in Kubernetes; used in metrics and logs.
    pub name: String,
    /// Listener names this route serves on.
    pub listeners: Vec<String>,
    /// Empty means every hostname the listener accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    pub rules: Vec<HttpRule>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one match selects the rule; empty means `PathPrefix /`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpFilter>,
    /// Weighted. Empty (and no redirect) answers 500, as the spec asks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    #[serde(rename = "type", default)]
    pub kind: PathMatchType,
    pub value: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathMatchType {
    Exact,
    /// Element-wise: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`; a trailing `/` is
    /// ignored.
    #[default]
    PathPrefix,
    /// Full match of the whole path (RE2-like syntax of the `regex` crate).
    RegularExpression,
}

/// A header or query parameter match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatch {
    #[serde(rename = "type", default)]
    pub kind: ValueMatchType,
    /// Header names match case-insensitively, query names exactly.
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueMatchType {
    #[default]
    Exact,
    RegularExpression,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum HttpFilter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    RequestRedirect(Redirect),
    #[serde(rename = "URLRewrite")]
    UrlRewrite(UrlRewrite),
    RequestMirror(Mirror),
    #[serde(rename = "CORS")]
    Cors(Cors),
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<Header>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<Header>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// Omitted: the scheme's well-known port if the scheme changed, else the listener's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value")]
pub enum PathModifier {
    ReplaceFullPath(String),
    /// Replaces the part of the path matched by the rule's `PathPrefix`.
    ReplacePrefixMatch(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Name in `[backends]`.
    pub backend: String,
    /// Share of requests mirrored, 0 to 100 (fractions allowed); default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Origins (`https://a.example`, `https://*.example`) or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_credentials: bool,
}

/// A weighted reference from a rule to a backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRef {
    /// Name in `[backends]`. Absent means the reference could not be resolved (missing
    /// Service, refused cross-namespace reference): its share of requests gets 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Filters applied only when this backend is chosen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpFilter>,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Whole request, from the first byte received to the last byte of the response head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<GatewayDuration>,
    /// One attempt to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<GatewayDuration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Retries after the first attempt.
    #[serde(default)]
    pub attempts: u32,
    /// Response codes that are retried (idempotent requests only); connect failures always are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<GatewayDuration>,
}

/// A GRPCRoute: compiled to HTTP/2 path matches `/<service>/<method>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcRoute {
    pub name: String,
    pub listeners: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    pub rules: Vec<GrpcRule>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GrpcMatch>,
    /// Header modifiers and mirrors only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendRef>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcMethodMatch {
    #[serde(rename = "type", default)]
    pub kind: ValueMatchType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A TLSRoute: SNI hostnames to TCP backends, on `TLS` listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsRoute {
    pub name: String,
    pub listeners: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    pub backends: Vec<BackendRef>,
}
