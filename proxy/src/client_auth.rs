//! Frontend mTLS (listener `tls.client_validation`): the CAs and the mode of each TLS port are
//! loaded on every reload into a table swapped atomically, and every TLS socket carries one
//! [`PortClientVerifier`] that reads the current table at each handshake, so CA and mode
//! changes need no restart and the handshake path takes no lock.

use arc_swap::ArcSwap;
use citoroute_config::{ListenerProtocol, ProxyConfig, TlsMode};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::sync::Arc;

/// How one port checks client certificates.
#[derive(Debug)]
struct PortPolicy {
    /// Chain verification against the port's CAs.
    chains: Arc<dyn ClientCertVerifier>,
    /// `AllowInsecureFallback`: a missing or failing certificate is accepted too.
    insecure_fallback: bool,
}

/// The client certificate policy of every port that has one.
#[derive(Debug, Default)]
pub struct ClientAuthTable {
    ports: HashMap<u16, PortPolicy>,
}

impl ClientAuthTable {
    /// Reads the CA files of every terminating listener's `client_validation`. A port takes
    /// the union of its listeners' CAs; it falls back to insecure only if every listener on it
    /// that validates asks for that (the stricter setting wins).
    pub fn load(cfg: &ProxyConfig) -> Result<ClientAuthTable, String> {
        let mut per_port: HashMap<u16, (RootCertStore, bool)> = HashMap::new();
        for l in &cfg.listeners {
            let Some(tls) = &l.tls else { continue };
            if l.protocol == ListenerProtocol::Http || tls.mode == TlsMode::Passthrough {
                continue;
            }
            let Some(v) = &tls.client_validation else {
                continue;
            };
            let (roots, fallback) = per_port
                .entry(l.port)
                .or_insert_with(|| (RootCertStore::empty(), true));
            *fallback &= v.allow_insecure_fallback;
            for file in &v.ca_files {
                add_ca_file(roots, file)?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut ports = HashMap::new();
        for (port, (roots, insecure_fallback)) in per_port {
            let chains =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("client certificate validation on port {port}: {e}"))?;
            ports.insert(
                port,
                PortPolicy {
                    chains,
                    insecure_fallback,
                },
            );
        }
        Ok(ClientAuthTable { ports })
    }
}

fn add_ca_file(roots: &mut RootCertStore, file: &str) -> Result<(), String> {
    let pem = std::fs::read(file).map_err(|e| format!("client CA file {file}: {e}"))?;
    let mut found = false;
    for der in rustls_pemfile::certs(&mut pem.as_slice()) {
        let der = der.map_err(|e| format!("client CA file {file}: {e}"))?;
        roots
            .add(der)
            .map_err(|e| format!("client CA file {file}: {e}"))?;
        found = true;
    }
    if !found {
        return Err(format!("client CA file {file}: holds no PEM certificate"));
    }
    Ok(())
}

/// The client certificate verifier of one TLS port. Each call reads the current table, so a
/// port without a policy neither asks for nor checks client certificates.
///
/// It sends no CA names in its certificate request: clients then offer any certificate they
/// have (the conformance suite checks that a wrong one is presented and refused), and the
/// names cannot be borrowed out of a table that may be swapped meanwhile.
#[derive(Debug)]
pub struct PortClientVerifier {
    port: u16,
    table: Arc<ArcSwap<ClientAuthTable>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PortClientVerifier {
    pub fn new(port: u16, table: Arc<ArcSwap<ClientAuthTable>>) -> PortClientVerifier {
        let provider: CryptoProvider = rustls::crypto::ring::default_provider();
        PortClientVerifier {
            port,
            table,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for PortClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.table.load().ports.contains_key(&self.port)
    }

    fn client_auth_mandatory(&self) -> bool {
        self.table
            .load()
            .ports
            .get(&self.port)
            .is_some_and(|p| !p.insecure_fallback)
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let table = self.table.load();
        // No policy any more (a reload removed it mid-handshake): nothing to enforce.
        let Some(policy) = table.ports.get(&self.port) else {
            return Ok(ClientCertVerified::assertion());
        };
        match policy
            .chains
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(v) => Ok(v),
            Err(e) if policy.insecure_fallback => {
                tracing::debug!(port = self.port, error = %e, "client certificate not valid; accepted (insecure fallback)");
                Ok(ClientCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    // The handshake signatures prove the client holds the certificate's key; they are checked
    // in every mode.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn config(dir: &std::path::Path, listeners: &[(u16, &str, Option<bool>)]) -> ProxyConfig {
        let mut toml = String::from("version = 1\n");
        for (i, (port, protocol, validation)) in listeners.iter().enumerate() {
            toml.push_str(&format!(
                "[[listeners]]\nname = \"l{i}\"\nport = {port}\nprotocol = \"{protocol}\"\nhostname = \"h{i}.test\"\n"
            ));
            if *protocol == "HTTP" {
                continue;
            }
            toml.push_str("[listeners.tls]\ncertificates = [\"c\"]\n");
            if let Some(fallback) = validation {
                let ca = dir.join(format!("ca{i}.pem"));
                std::fs::write(&ca, ca_pem()).unwrap();
                toml.push_str(&format!(
                    "[listeners.tls.client_validation]\nca_files = [{:?}]\nallow_insecure_fallback = {fallback}\n",
                    ca.display().to_string()
                ));
            }
        }
        toml.push_str("[certificates.c]\ncert_file = \"c.crt\"\nkey_file = \"c.key\"\n");
        ProxyConfig::from_toml(&toml).unwrap()
    }

    fn verifier(table: ClientAuthTable, port: u16) -> PortClientVerifier {
        PortClientVerifier::new(port, Arc::new(ArcSwap::from_pointee(table)))
    }

    #[test]
    fn ports_without_validation_ask_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &[(443, "HTTPS", None), (80, "HTTP", None)]);
        let v = verifier(ClientAuthTable::load(&cfg).unwrap(), 443);
        assert!(!v.offer_client_auth());
        assert!(!v.client_auth_mandatory());
    }

    #[test]
    fn the_stricter_mode_of_a_port_wins() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            &[
                (443, "HTTPS", Some(true)),
                (443, "HTTPS", Some(false)),
                (8443, "HTTPS", Some(true)),
            ],
        );
        let table = Arc::new(ArcSwap::from_pointee(ClientAuthTable::load(&cfg).unwrap()));
        let strict = PortClientVerifier::new(443, table.clone());
        assert!(strict.offer_client_auth() && strict.client_auth_mandatory());
        let fallback = PortClientVerifier::new(8443, table);
        assert!(fallback.offer_client_auth() && !fallback.client_auth_mandatory());
    }

    #[test]
    fn a_swapped_table_changes_the_policy_of_a_live_verifier() {
        let dir = tempfile::tempdir().unwrap();
        let table = Arc::new(ArcSwap::from_pointee(ClientAuthTable::default()));
        let v = PortClientVerifier::new(443, table.clone());
        assert!(!v.offer_client_auth());
        let cfg = config(dir.path(), &[(443, "HTTPS", Some(false))]);
        table.store(Arc::new(ClientAuthTable::load(&cfg).unwrap()));
        assert!(v.offer_client_auth() && v.client_auth_mandatory());
    }

    #[test]
    fn unusable_ca_files_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), &[(443, "HTTPS", Some(false))]);
        let not_pem = dir.path().join("not-pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let path = not_pem.display().to_string();
        if let Some(v) = cfg.listeners[0]
            .tls
            .as_mut()
            .and_then(|t| t.client_validation.as_mut())
        {
            v.ca_files = vec![path.clone()];
        }
        let e = ClientAuthTable::load(&cfg).unwrap_err();
        assert!(e.contains(&path) && e.contains("no PEM certificate"), "{e}");
        let missing = dir.path().join("missing").display().to_string();
        if let Some(v) = cfg.listeners[0]
            .tls
            .as_mut()
            .and_then(|t| t.client_validation.as_mut())
        {
            v.ca_files = vec![missing.clone()];
        }
        let e = ClientAuthTable::load(&cfg).unwrap_err();
        assert!(e.contains(&missing), "{e}");
    }
}
