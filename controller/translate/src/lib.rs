//! The pure translation of Gateway API objects into CitoRoute proxy configs and statuses.
//!
//! [`translate`] takes a [`Snapshot`] of the cluster (what the controller's reflectors hold) and
//! returns a [`Translation`]: one [`ProxyConfig`] per Gateway of our GatewayClass, the status of
//! every GatewayClass, Gateway and route it is responsible for (only our own `parents` entries
//! on routes), and the Secrets each proxy must mount. No I/O and no clock: the same snapshot
//! always gives the same output, which the golden tests under `tests/golden/` pin down.

#![forbid(unsafe_code)]

mod backend_tls;
mod backends;
mod frontend_tls;
mod gateways;
mod ir;
mod llm;
mod llm_refs;
mod routes;
pub mod status;

use citoroute_config::{Certificate, ProxyConfig};
use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::experimental::gatewayclasses::GatewayClass;
use gateway_api::experimental::gateways::Gateway;
use gateway_api::experimental::grpcroutes::GrpcRoute;
use gateway_api::experimental::httproutes::HttpRoute;
use gateway_api::experimental::referencegrants::ReferenceGrant;
use gateway_api::experimental::tlsroutes::TlsRoute;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

pub use llm_refs::{
    ConfigMapInfo, FileSource, LlmFile, LlmKey, LlmKind, has_pem_certificate, is_jwks_document,
    secret_jwks_keys,
};
pub use status::*;

/// The controller name our GatewayClass carries.
pub const CONTROLLER_NAME: &str = "citoroute.io/gateway-controller";

/// The API group of Gateway API kinds.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Where the proxy finds listener certificates: the I/O layer copies every Secret of
/// [`Translation::secrets_needed`] into the proxy's own Secret under the keys
/// [`certificate_keys`] names and mounts that Secret here.
pub const CERT_DIR: &str = "/etc/citoroute/certs";

/// The keys (certificate, private key) under which the proxy's Secret carries the
/// `kubernetes.io/tls` Secret `namespace/name`. Namespaces and names never contain `_`, so the
/// keys are unambiguous.
pub fn certificate_keys(namespace: &str, name: &str) -> (String, String) {
    (
        format!("{namespace}_{name}.crt"),
        format!("{namespace}_{name}.key"),
    )
}

/// The `[certificates]` entry for a Secret, pointing into [`CERT_DIR`].
pub fn certificate_files(namespace: &str, name: &str) -> Certificate {
    let (crt, key) = certificate_keys(namespace, name);
    Certificate {
        cert_file: format!("{CERT_DIR}/{crt}"),
        key_file: format!("{CERT_DIR}/{key}"),
    }
}

/// What the translation needs to know of a Secret: never its key material.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretInfo {
    pub namespace: String,
    pub name: String,
    /// `type`, e.g. `kubernetes.io/tls`.
    pub type_: String,
    /// The keys present in `data` (e.g. `tls.crt`, `tls.key`).
    pub keys: BTreeSet<String>,
    /// Set by whoever reads the Secret when its `tls.crt`/`tls.key` do not parse as a PEM
    /// certificate chain and key (the listener then gets InvalidCertificateRef). `None` means
    /// fine or not checked.
    pub certificate_problem: Option<String>,
    /// The keys whose value is a JWKS document (see [`is_jwks_document`]), which a
    /// JWTValidationPolicy may name.
    pub jwks_keys: BTreeSet<String>,
}

impl SecretInfo {
    /// What the translation keeps of a Secret: namespace, name, type and the names of its
    /// keys. `certificate_problem` is left for the caller, who may parse the certificate.
    pub fn from_secret(secret: &Secret) -> Option<SecretInfo> {
        let mut keys: BTreeSet<String> = secret
            .data
            .as_ref()
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        if let Some(sd) = &secret.string_data {
            keys.extend(sd.keys().cloned());
        }
        Some(SecretInfo {
            namespace: secret.metadata.namespace.clone()?,
            name: secret.metadata.name.clone()?,
            type_: secret.type_.clone().unwrap_or_else(|| "Opaque".to_string()),
            keys,
            certificate_problem: None,
            jwks_keys: secret_jwks_keys(secret),
        })
    }
}

/// Everything the translation reads, as the reflectors hold it. Order does not matter: the
/// translation sorts.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub controller_name: String,
    pub gateway_classes: Vec<GatewayClass>,
    pub gateways: Vec<Gateway>,
    pub http_routes: Vec<HttpRoute>,
    pub grpc_routes: Vec<GrpcRoute>,
    pub tls_routes: Vec<TlsRoute>,
    pub reference_grants: Vec<ReferenceGrant>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub secrets: Vec<SecretInfo>,
    pub namespaces: Vec<Namespace>,
    /// ConfigMaps (keys only), for JWKS documents in ConfigMaps.
    pub config_maps: Vec<ConfigMapInfo>,
    pub llm_backends: Vec<citoroute_crds::LlmBackend>,
    pub llm_routes: Vec<citoroute_crds::LlmRoute>,
    pub consumers: Vec<citoroute_crds::Consumer>,
    pub jwt_policies: Vec<citoroute_crds::JwtValidationPolicy>,
    pub backend_tls_policies: Vec<BackendTlsPolicy>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            controller_name: CONTROLLER_NAME.to_string(),
            gateway_classes: Vec::new(),
            gateways: Vec::new(),
            http_routes: Vec::new(),
            grpc_routes: Vec::new(),
            tls_routes: Vec::new(),
            reference_grants: Vec::new(),
            services: Vec::new(),
            endpoint_slices: Vec::new(),
            secrets: Vec::new(),
            namespaces: Vec::new(),
            config_maps: Vec::new(),
            llm_backends: Vec::new(),
            llm_routes: Vec::new(),
            consumers: Vec::new(),
            jwt_policies: Vec::new(),
            backend_tls_policies: Vec::new(),
        }
    }
}

/// The route kinds we translate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RouteKind {
    #[serde(rename = "HTTPRoute")]
    Http,
    #[serde(rename = "GRPCRoute")]
    Grpc,
    #[serde(rename = "TLSRoute")]
    Tls,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Tls => "TLSRoute",
        }
    }

    pub(crate) fn from_kind(kind: &str) -> Option<RouteKind> {
        match kind {
            "HTTPRoute" => Some(RouteKind::Http),
            "GRPCRoute" => Some(RouteKind::Grpc),
            "TLSRoute" => Some(RouteKind::Tls),
            _ => None,
        }
    }
}

/// Identifies a route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RouteKey {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
}

/// `(namespace, name)` of a namespaced object.
pub type ObjectKey = (String, String);

/// The output of [`translate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    /// One config per programmed Gateway of our class, keyed by `(namespace, name)`.
    pub proxies: BTreeMap<ObjectKey, ProxyConfig>,
    /// Status of every GatewayClass whose controllerName is ours, keyed by name.
    pub gateway_class_statuses: BTreeMap<String, GatewayClassStatus>,
    /// Status of every Gateway of our classes.
    pub gateway_statuses: BTreeMap<ObjectKey, GatewayStatus>,
    /// Our `parents` entries of every route that names one of our Gateways.
    pub route_statuses: BTreeMap<RouteKey, RouteStatus>,
    /// Our `ancestors` entries of every BackendTLSPolicy affecting one of our Gateways.
    pub backend_tls_policy_statuses: BTreeMap<ObjectKey, PolicyStatus>,
    /// Per Gateway, the `(namespace, name)` of the Secrets whose certificates its proxy mounts.
    pub secrets_needed: BTreeMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Status conditions of every `citoroute.io` object (LLMBackend, LLMRoute, Consumer,
    /// JWTValidationPolicy).
    pub llm_statuses: BTreeMap<LlmKey, Vec<Condition>>,
    /// Per Gateway, the Secret and ConfigMap keys its proxy reads as files (LLM credentials,
    /// JWKS, client CA bundles of `spec.tls.frontend`, CA bundles of BackendTLSPolicies); the I/O layer copies them into the proxy's Secret under
    /// [`LlmFile::secret_key`].
    pub llm_files: BTreeMap<ObjectKey, BTreeSet<LlmFile>>,
}

/// The Gateway API features (names from `sigs.k8s.io/gateway-api/pkg/features`) every
/// GatewayClass of ours declares in its status. The conformance suite reads this list and
/// tests exactly these, so a name goes here only once its conformance tests pass. Sorted.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "BackendTLSPolicy",
    "BackendTLSPolicySANValidation",
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "Gateway",
    "GatewayAddressEmpty",
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayInfrastructurePropagation",
    "GatewayPort8080",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
    "TLSRoute",
    "TLSRouteModeMixed",
    "TLSRouteModeTerminate",
];

/// Translates a snapshot. Pure and deterministic.
pub fn translate(s: &Snapshot) -> Translation {
    let mut t = Translation::default();
    let ctx = backends::Ctx::new(s);
    let mut classes = BTreeSet::new();
    for gc in &s.gateway_classes {
        if gc.spec.controller_name != s.controller_name {
            continue;
        }
        let Some(name) = gc.metadata.name.clone() else {
            continue;
        };
        let generation = gc.metadata.generation.unwrap_or_default();
        t.gateway_class_statuses.insert(
            name.clone(),
            GatewayClassStatus {
                conditions: vec![Condition::new(
                    "Accepted",
                    true,
                    "Accepted",
                    "handled by CitoRoute",
                    generation,
                )],
                supported_features: SUPPORTED_FEATURES.to_vec(),
            },
        );
        classes.insert(name);
    }
    let mut gws = gateways::build(s, &ctx, &classes);
    let mut ctx = ctx;
    routes::attach_all(s, &mut ctx, &mut gws, &mut t);
    llm::attach(s, &ctx, &mut gws, &mut t);
    backend_tls::attach(s, &ctx, &gws, &mut t);
    gateways::finish(gws, &mut t);
    t
}
