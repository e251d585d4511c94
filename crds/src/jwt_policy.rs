//! `JWTValidationPolicy`: how a Gateway validates the tokens that identify Consumers.

use crate::common::{KeyRef, Status, gateway_group, gateway_kind};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// JWT validation for the LLMRoutes of one Gateway that name Consumers.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "citoroute.io",
    version = "v1alpha1",
    kind = "JWTValidationPolicy",
    root = "JwtValidationPolicy",
    plural = "jwtvalidationpolicies",
    namespaced,
    status = "Status",
    shortname = "jwtp",
    category = "citoroute",
    doc = "JWT validation for a Gateway's LLMRoutes that name Consumers.",
    printcolumn = r#"{"name": "Target", "type": "string", "jsonPath": ".spec.targetRef.name"}"#,
    printcolumn = r#"{"name": "Issuer", "type": "string", "jsonPath": ".spec.issuer"}"#,
    printcolumn = r#"{"name": "Accepted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct JwtValidationPolicySpec {
    /// The Gateway, in this namespace.
    pub target_ref: TargetRef,
    /// Required `iss`. Absent: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: Option<String>,
    /// `aud` must contain one of these. Empty: not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub audiences: Vec<String>,
    /// Where the signing keys (a JWKS document, `{"keys":[...]}`) come from.
    pub jwks: JwksSource,
    /// A claim every token must carry (e.g. `sub`), logged as the principal. Consumers are
    /// matched on their own `jwtClaimMatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub claim: Option<String>,
    /// The header carrying the token; a `Bearer ` prefix is stripped. Default
    /// `authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
    )]
    pub header: Option<String>,
}

/// A Gateway API `LocalPolicyTargetReference`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default = "gateway_group")]
    #[schemars(length(max = 253))]
    pub group: String,
    #[serde(default = "gateway_kind")]
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Exactly one source of the JWKS document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.secretRef) ? 1 : 0) + (has(self.configMapRef) ? 1 : 0) + (has(self.url) ? 1 : 0) == 1",
        "message": "give exactly one of secretRef, configMapRef and url"
    },
    {
        "rule": "!has(self.refreshInterval) || has(self.url)",
        "message": "refreshInterval is for url"
    }
]))]
pub struct JwksSource {
    /// A Secret key in this namespace holding the JWKS document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeyRef>,
    /// A ConfigMap key in this namespace holding the JWKS document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeyRef>,
    /// An `https://` URL the proxy fetches the JWKS document from (`http://` only to a
    /// loopback address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: Option<String>,
    /// How often `url` is fetched again, as a Gateway API duration. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub refresh_interval: Option<String>,
}
