//! The TOML contract between the CitoRoute controller and its proxies.
//!
//! One [`ProxyConfig`] per Gateway, written by the controller or by hand for standalone use.
//! [`ProxyConfig::from_toml`] parses and validates in one step: anything it accepts, the proxy
//! can compile; anything it refuses comes back with the offending key's path and the reason.
//! No Pingora and no Kubernetes types here: both sides depend on this crate only.

#![forbid(unsafe_code)]

pub mod configmap;
pub mod duration;
pub mod hostname;
pub mod llm;
mod types;
pub mod validate;

pub use duration::GatewayDuration;
pub use llm::{
    ClaimMatch, Consumer, JwtSettings, LlmBackend, LlmBackendRef, LlmPath, LlmProvider, LlmRoute,
};
pub use types::*;
pub use validate::{Problem, Problems};

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, or not our schema (unknown key, wrong type). The message carries the line,
    /// column and key.
    #[error("config does not parse: {0}")]
    Parse(String),
    /// Parsed, but not usable.
    #[error("config is invalid: {0}")]
    Invalid(Problems),
}

impl ProxyConfig {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<ProxyConfig, ConfigError> {
        let cfg: ProxyConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        validate::validate(&cfg).map_err(ConfigError::Invalid)?;
        Ok(cfg)
    }

    /// Serializes to TOML. Defaults are omitted, so generated files stay small.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// An empty config of the current schema version.
    pub fn empty() -> ProxyConfig {
        ProxyConfig {
            version: SCHEMA_VERSION,
            runtime: RuntimeSettings::default(),
            listeners: Vec::new(),
            certificates: Default::default(),
            backends: Default::default(),
            http_routes: Vec::new(),
            grpc_routes: Vec::new(),
            tls_routes: Vec::new(),
            llm_backends: Default::default(),
            llm_routes: Vec::new(),
            consumers: Default::default(),
            jwt: None,
        }
    }
}

/// Largest config accepted after unpacking: a guard against compression bombs.
const MAX_UNPACKED: u64 = 64 << 20;

/// gzip magic: a config starting with it is compressed.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Compresses a serialized config for shipping in a size-limited object (a ConfigMap's
/// `binaryData`): TOML of many similar routes shrinks about twentyfold.
pub fn compress(toml: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(toml);
    enc.finish().unwrap_or_default()
}

impl ProxyConfig {
    /// Parses a config given as raw bytes: TOML, or TOML compressed with [`compress`].
    pub fn from_bytes(bytes: &[u8]) -> Result<ProxyConfig, ConfigError> {
        if bytes.starts_with(&GZIP_MAGIC) {
            use std::io::Read;
            let mut text = String::new();
            flate2::read::GzDecoder::new(bytes)
                .take(MAX_UNPACKED + 1)
                .read_to_string(&mut text)
                .map_err(|e| {
                    ConfigError::Parse(format!("compressed config does not unpack: {e}"))
                })?;
            if text.len() as u64 > MAX_UNPACKED {
                return Err(ConfigError::Parse(format!(
                    "compressed config unpacks to more than {MAX_UNPACKED} bytes"
                )));
            }
            ProxyConfig::from_toml(&text)
        } else {
            let text = std::str::from_utf8(bytes)
                .map_err(|e| ConfigError::Parse(format!("config is not UTF-8: {e}")))?;
            ProxyConfig::from_toml(text)
        }
    }
}
