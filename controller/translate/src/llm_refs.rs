//! What the AI gateway part of the translation hands to the I/O layer: the credential and
//! JWKS files each proxy mounts (never their content), and the status of the `citoroute.io`
//! objects.

use crate::CERT_DIR;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde::Serialize;
use std::collections::BTreeSet;

/// What the translation needs to know of a ConfigMap: never its content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigMapInfo {
    pub namespace: String,
    pub name: String,
    /// The keys of `data` and `binaryData`.
    pub keys: BTreeSet<String>,
    /// The keys whose value is a JWKS document (see [`is_jwks_document`]).
    pub jwks_keys: BTreeSet<String>,
    /// The keys whose value holds a PEM certificate (see [`has_pem_certificate`]).
    pub certificate_keys: BTreeSet<String>,
}

impl ConfigMapInfo {
    /// Keys, and which of them hold a JWKS document, of a ConfigMap that still has its values.
    pub fn from_config_map(cm: &ConfigMap) -> Option<ConfigMapInfo> {
        let mut info = ConfigMapInfo {
            namespace: cm.metadata.namespace.clone()?,
            name: cm.metadata.name.clone()?,
            ..Default::default()
        };
        let data = cm.data.iter().flatten().map(|(k, v)| (k, v.as_bytes()));
        let binary = cm
            .binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k, v.0.as_slice()));
        for (k, v) in data.chain(binary) {
            info.keys.insert(k.clone());
            if is_jwks_document(v) {
                info.jwks_keys.insert(k.clone());
            }
            if has_pem_certificate(v) {
                info.certificate_keys.insert(k.clone());
            }
        }
        Some(info)
    }
}

/// The keys of a Secret whose value is a JWKS document.
pub fn secret_jwks_keys(secret: &Secret) -> BTreeSet<String> {
    let data = secret
        .data
        .iter()
        .flatten()
        .filter(|(_, v)| is_jwks_document(&v.0))
        .map(|(k, _)| k.clone());
    let string_data = secret
        .string_data
        .iter()
        .flatten()
        .filter(|(_, v)| is_jwks_document(v.as_bytes()))
        .map(|(k, _)| k.clone());
    data.chain(string_data).collect()
}

/// Whether bytes look like a JWKS document the proxy can load: a JSON object whose `keys`
/// holds at least one signing key with the members its `kty` needs. The proxy refuses a whole
/// config whose JWKS does not load, so a value failing this check is reported on the policy
/// instead of being shipped. (Key material is checked by the proxy only.)
pub fn is_jwks_document(bytes: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    let Some(keys) = v.get("keys").and_then(serde_json::Value::as_array) else {
        return false;
    };
    keys.iter().any(|k| {
        let has = |m: &str| k.get(m).and_then(serde_json::Value::as_str).is_some();
        let signing = k.get("use").and_then(serde_json::Value::as_str) != Some("enc");
        let members: &[&str] = match k.get("kty").and_then(serde_json::Value::as_str) {
            Some("RSA") => &["n", "e"],
            Some("EC") => &["crv", "x", "y"],
            Some("OKP") => &["crv", "x"],
            Some("oct") => &["k"],
            _ => return false,
        };
        signing && members.iter().all(|m| has(m))
    })
}

/// Whether bytes hold at least one PEM certificate block (a CA bundle for an LLM endpoint or
/// a JWKS URL).
/// The proxy parses it; this only keeps an obviously wrong value out of the config.
pub fn has_pem_certificate(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.find("-----BEGIN CERTIFICATE-----")
        .is_some_and(|at| text[at..].contains("-----END CERTIFICATE-----"))
}

/// Where a file's content comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum FileSource {
    Secret,
    ConfigMap,
}

/// One key of a Secret or ConfigMap that a proxy needs as a file (an API key, AWS keys, a
/// JWKS document, a CA bundle). The I/O layer copies its value into the proxy's Secret under
/// [`LlmFile::secret_key`]; the config names [`LlmFile::path`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct LlmFile {
    pub source: FileSource,
    pub namespace: String,
    pub name: String,
    pub key: String,
}

impl LlmFile {
    /// The key in the proxy's Secret. Namespaces and names never contain `_` and listener
    /// certificate keys have one `_` only, so keys cannot collide.
    pub fn secret_key(&self) -> String {
        let source = match self.source {
            FileSource::Secret => "secret",
            FileSource::ConfigMap => "configmap",
        };
        format!("llm_{source}_{}_{}_{}", self.namespace, self.name, self.key)
    }

    /// Where the proxy reads it: the proxy's Secret is mounted at [`CERT_DIR`].
    pub fn path(&self) -> String {
        format!("{CERT_DIR}/{}", self.secret_key())
    }
}

/// The `citoroute.io` kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum LlmKind {
    #[serde(rename = "LLMBackend")]
    Backend,
    #[serde(rename = "LLMRoute")]
    Route,
    Consumer,
    #[serde(rename = "JWTValidationPolicy")]
    JwtPolicy,
}

impl LlmKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LlmKind::Backend => "LLMBackend",
            LlmKind::Route => "LLMRoute",
            LlmKind::Consumer => "Consumer",
            LlmKind::JwtPolicy => "JWTValidationPolicy",
        }
    }
}

/// Identifies a `citoroute.io` object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct LlmKey {
    pub kind: LlmKind,
    pub namespace: String,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_documents() {
        assert!(is_jwks_document(
            br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#
        ));
        assert!(is_jwks_document(
            br#"{"keys":[{"kty":"RSA","use":"enc","n":"x","e":"AQAB"},{"kty":"RSA","n":"x","e":"AQAB"}]}"#
        ));
        assert!(!is_jwks_document(br#"{"keys":[]}"#));
        assert!(!is_jwks_document(br#"{"keys":[{"k":"x"}]}"#));
        assert!(!is_jwks_document(br#"{"keys":[{"kty":"oct"}]}"#));
        assert!(!is_jwks_document(
            br#"{"keys":[{"kty":"RSA","use":"enc","n":"x","e":"AQAB"}]}"#
        ));
        assert!(!is_jwks_document(br#"{"kty":"RSA"}"#));
        assert!(!is_jwks_document(b"-----BEGIN PUBLIC KEY-----"));
    }

    #[test]
    fn pem_certificates() {
        assert!(has_pem_certificate(
            b"# ca\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        ));
        assert!(!has_pem_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA"));
        assert!(!has_pem_certificate(b"not a certificate"));
    }

    #[test]
    fn file_keys_are_distinct_from_certificate_keys() {
        let f = LlmFile {
            source: FileSource::Secret,
            namespace: "llm".to_string(),
            name: "keys".to_string(),
            key: "crt".to_string(),
        };
        let (crt, key) = crate::certificate_keys("llm", "keys");
        assert_ne!(f.secret_key(), crt);
        assert_ne!(f.secret_key(), key);
        assert_eq!(f.path(), format!("{CERT_DIR}/llm_secret_llm_keys_crt"));
    }
}
