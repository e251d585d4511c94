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
    },
    {
        "rule": "!has(self.caCertificateRef) || has(self.url)",
        "message": "caCertificateRef is for url"
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
    /// A ConfigMap key in this namespace holding PEM CA certificates (one bundle) trusted for
    /// an `https://` `url` in addition to the system roots: an in-cluster identity provider
    /// whose certificate a private CA signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_ref: Option<CaCertificateRef>,
}

/// The `ca.crt` key a CA bundle is usually under (as in `kube-root-ca.crt`, cert-manager).
pub fn default_ca_key() -> String {
    "ca.crt".to_string()
}

/// A ConfigMap key, in the policy's namespace, holding a PEM CA bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaCertificateRef {
    /// The ConfigMap's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the bundle. Default `ca.crt`.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ca_certificate_ref_key_defaults_to_ca_crt() {
        let src: JwksSource = serde_json::from_value(serde_json::json!({
            "url": "https://keycloak.auth.svc/realms/r/protocol/openid-connect/certs",
            "caCertificateRef": {"name": "idp-ca"}
        }))
        .unwrap();
        let r = src.ca_certificate_ref.as_ref().unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("idp-ca", "ca.crt"));
        let back = serde_json::to_value(&src).unwrap();
        assert_eq!(
            back["caCertificateRef"],
            serde_json::json!({"name": "idp-ca", "key": "ca.crt"})
        );
        // Absent: not rendered.
        let src: JwksSource =
            serde_json::from_value(serde_json::json!({"url": "https://a.example/k"})).unwrap();
        assert!(src.ca_certificate_ref.is_none());
        assert!(
            serde_json::to_value(&src)
                .unwrap()
                .get("caCertificateRef")
                .is_none()
        );
    }

    #[test]
    fn ca_certificate_ref_schema_has_its_default_and_rule() {
        let crd =
            serde_json::to_value(<JwtValidationPolicy as kube::CustomResourceExt>::crd()).unwrap();
        let jwks = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["jwks"];
        let ca = &jwks["properties"]["caCertificateRef"];
        assert_eq!(ca["properties"]["key"]["default"], "ca.crt", "{ca}");
        assert_eq!(ca["required"], serde_json::json!(["name"]), "{ca}");
        let rules = jwks["x-kubernetes-validations"].as_array().unwrap();
        assert!(
            rules
                .iter()
                .any(|r| r["rule"] == "!has(self.caCertificateRef) || has(self.url)"),
            "{rules:?}"
        );
    }
}
