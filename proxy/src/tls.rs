//! Listener certificates: loaded from PEM files on every reload and served through a rustls
//! resolver whose table is swapped atomically, so certificate changes need no restart.

use arc_swap::ArcSwap;
use citoroute_config::{ListenerProtocol, ProxyConfig, TlsMode, hostname};
use rustls::SignatureScheme;
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// A listener hostname (None = any) and its certificates, in the order of the listener's
/// `certificates` (Gateway API lets a listener carry several, e.g. an RSA and an ECDSA one).
type HostCert = (Option<String>, Vec<Arc<CertifiedKey>>);

/// Certificates per port, each list ordered most specific listener hostname first; the last
/// entry doubles as the default for clients that send no (or an unknown) SNI.
#[derive(Debug, Default)]
pub struct CertTable {
    ports: HashMap<u16, Vec<HostCert>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate {name:?}: cannot read {file}: {source}")]
    Read {
        name: String,
        file: String,
        source: std::io::Error,
    },
    #[error("certificate {name:?}: {reason}")]
    Bad { name: String, reason: String },
}

fn load(name: &str, cert_file: &str, key_file: &str) -> Result<Arc<CertifiedKey>, CertError> {
    let read = |file: &str| {
        std::fs::read(file).map_err(|source| CertError::Read {
            name: name.to_string(),
            file: file.to_string(),
            source,
        })
    };
    let bad = |reason: String| CertError::Bad {
        name: name.to_string(),
        reason,
    };
    let cert_pem = read(cert_file)?;
    let key_pem = read(key_file)?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(bad(format!("{cert_file} holds no certificate")));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| bad(format!("bad key PEM: {e}")))?
        .ok_or_else(|| bad(format!("{key_file} holds no private key")))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| bad(format!("unsupported private key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

impl CertTable {
    /// Loads every certificate the config's terminating listeners use.
    pub fn load(cfg: &ProxyConfig) -> Result<CertTable, CertError> {
        let mut loaded: HashMap<&str, Arc<CertifiedKey>> = HashMap::new();
        let mut table = CertTable::default();
        for l in &cfg.listeners {
            let Some(tls) = &l.tls else { continue };
            if l.protocol == ListenerProtocol::Http || tls.mode == TlsMode::Passthrough {
                continue;
            }
            let mut keys = Vec::with_capacity(tls.certificates.len());
            for name in &tls.certificates {
                let key = match loaded.get(name.as_str()) {
                    Some(k) => k.clone(),
                    None => {
                        let c = cfg.certificates.get(name).ok_or_else(|| CertError::Bad {
                            name: name.clone(),
                            reason: "not defined in [certificates]".into(),
                        })?;
                        let k = load(name, &c.cert_file, &c.key_file)?;
                        loaded.insert(name, k.clone());
                        k
                    }
                };
                keys.push(key);
            }
            if keys.is_empty() {
                continue;
            }
            table
                .ports
                .entry(l.port)
                .or_default()
                .push((l.hostname.clone(), keys));
        }
        for list in table.ports.values_mut() {
            list.sort_by_key(|(h, _)| match h {
                Some(h) if !h.starts_with('*') => (0, std::cmp::Reverse(h.len())),
                Some(h) => (1, std::cmp::Reverse(h.len())),
                None => (2, std::cmp::Reverse(0)),
            });
        }
        Ok(table)
    }

    /// The listener is chosen by SNI (most specific hostname first); among its certificates,
    /// the first one that names the SNI and whose key the client can verify, else the first
    /// the client can verify, else the first.
    fn pick(
        &self,
        port: u16,
        sni: Option<&str>,
        schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let list = self.ports.get(&port)?;
        let keys = sni
            .and_then(|sni| {
                list.iter()
                    .find(|(h, _)| h.as_deref().is_none_or(|h| hostname::covers(h, sni)))
            })
            .or(list.last())
            .map(|(_, keys)| keys)?;
        if let [only] = keys.as_slice() {
            return Some(only.clone());
        }
        let usable = |k: &&Arc<CertifiedKey>| k.key.choose_scheme(schemes).is_some();
        sni.and_then(|sni| keys.iter().filter(usable).find(|k| names_host(k, sni)))
            .or_else(|| keys.iter().find(usable))
            .or(keys.first())
            .cloned()
    }
}

/// Whether the end-entity certificate of `key` is valid for the DNS name `host`.
fn names_host(key: &CertifiedKey, host: &str) -> bool {
    let (Some(cert), Ok(name)) = (key.end_entity_cert().ok(), ServerName::try_from(host)) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
}

/// The resolver one TLS port's listener uses; all share one swappable table.
#[derive(Debug)]
pub struct PortResolver {
    pub port: u16,
    pub table: Arc<ArcSwap<CertTable>>,
}

impl ResolvesServerCert for PortResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table
            .load()
            .pick(self.port, hello.server_name(), hello.signature_schemes())
    }
}

/// The SNI a client sent, kept on its connection (Pingora's TLS digest extension) so that
/// each request can be checked against it: a request whose Host belongs to another listener
/// than the one its certificate was chosen for is misdirected (HTTP 421).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sni(pub String);

/// Records the SNI at the end of every TLS handshake.
pub struct RecordSni;

#[async_trait::async_trait]
impl pingora_core::listeners::TlsAccept for RecordSni {
    async fn handshake_complete_callback(
        &self,
        ssl: &pingora_core::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let sni = ssl.server_name()?;
        Some(Arc::new(Sni(sni.to_ascii_lowercase())))
    }
}
