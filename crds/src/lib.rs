//! CitoRoute's own custom resources, group `citoroute.io`, version `v1alpha1`, all
//! namespaced: [`LlmBackend`], [`LlmRoute`], [`Consumer`] and [`JwtValidationPolicy`].
//!
//! The Rust types are the source of truth: [`crd_files`] renders the CRD YAML that the Helm
//! chart ships (`gen-crds` writes it, a test fails when the committed files drift). Schema
//! rules that span fields are CEL (`x-kubernetes-validations`), so the API server refuses
//! what the controller could not translate anyway.

#![forbid(unsafe_code)]

pub mod common;
pub mod consumer;
pub mod jwt_policy;
pub mod llm_backend;
pub mod llm_route;

pub use common::{Condition, ConditionStatus, KeyRef, Status};
pub use consumer::{ClaimMatch, Consumer, ConsumerSpec};
pub use jwt_policy::{JwksSource, JwtValidationPolicy, JwtValidationPolicySpec, TargetRef};
pub use llm_backend::{
    AnthropicSettings, BedrockSettings, CredentialsRef, LlmBackend, LlmBackendSpec, LlmProvider,
};
pub use llm_route::{
    Hostname, LlmBackendRef, LlmPath, LlmRoute, LlmRouteSpec, LocalRef, ParentReference,
    PathMatchType,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every CitoRoute resource.
pub const GROUP: &str = "citoroute.io";
/// The one version served.
pub const VERSION: &str = "v1alpha1";

/// Every CRD, in a fixed order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        LlmBackend::crd(),
        LlmRoute::crd(),
        Consumer::crd(),
        JwtValidationPolicy::crd(),
    ]
}

const HEADER: &str = "# Generated from the citoroute-crds crate by\n\
# `cargo run -p citoroute-crds --bin gen-crds -- charts/citoroute/crds`. Do not edit.\n";

/// The CRD files as the chart ships them: `(file name, YAML)`, one CRD per file, named
/// `<group>_<plural>.yaml`.
pub fn crd_files() -> Result<Vec<(String, String)>, String> {
    crds()
        .into_iter()
        .map(|crd| {
            let yaml = serde_saphyr::to_string(&crd)
                .map_err(|e| format!("CRD {}: cannot render YAML: {e}", crd.spec.names.plural))?;
            Ok((
                format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural),
                format!("{HEADER}{yaml}"),
            ))
        })
        .collect()
}
