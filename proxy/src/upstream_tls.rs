//! TLS to backends (BackendTLSPolicy). We open these connections ourselves and hand them to
//! Pingora as plaintext streams over which it speaks HTTP/1.1 or HTTP/2: Pingora's own TLS
//! connector can only match the certificate against the SNI name, while a policy's
//! `subject_alt_names` replace that check, and its connection pool would not tell apart two
//! backends that share an address and SNI but trust different CAs. Here every backend gets
//! its own verifier and its own pool key.

use crate::router::CompileError;
use async_trait::async_trait;
use citoroute_config::BackendTls;
use pingora_core::connectors::L4Connect;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora_error::{Error, ErrorSource, ErrorType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connector Pingora calls for each new connection to an endpoint.
pub type Connector = Arc<dyn L4Connect + Send + Sync>;

/// The TLS side of one backend: a connector offering ALPN `http/1.1`, one offering `h2`, and
/// the pool keys that keep their connections apart from every other backend's.
#[derive(Debug)]
pub struct UpstreamTls {
    h1: (Connector, u64),
    h2: (Connector, u64),
}

impl UpstreamTls {
    /// Builds the verifier of `tls` (reading its CA files now, so a bad file refuses the
    /// config instead of failing every request).
    pub fn new(
        backend: &str,
        tls: &BackendTls,
        connect_timeout: Duration,
    ) -> Result<UpstreamTls, CompileError> {
        let bad = |m: String| CompileError::Invalid(format!("backend {backend:?}: {m}"));
        let name = ServerName::try_from(tls.sni.clone())
            .map_err(|_| bad(format!("{:?} is not a TLS server name", tls.sni)))?;
        let (roots, identity) = if tls.ca_files.is_empty() {
            (system_roots().clone(), Vec::new())
        } else {
            load_roots(&tls.ca_files).map_err(bad)?
        };
        let names = tls
            .subject_alt_names
            .iter()
            .map(|n| ExpectedName::parse(n).map_err(bad))
            .collect::<Result<Vec<_>, _>>()?;
        let verifier = Arc::new(BackendVerifier {
            roots: Arc::new(roots),
            names,
            algorithms: provider().signature_verification_algorithms,
        });
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (backend, &tls.sni, &tls.subject_alt_names, identity).hash(&mut hasher);
        let key = hasher.finish();
        let connector = |alpn: &[u8]| -> Result<Connector, CompileError> {
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| bad(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(TlsConnect {
                config: Arc::new(config),
                name: name.clone(),
                timeout: connect_timeout,
            }))
        };
        Ok(UpstreamTls {
            h1: (connector(b"http/1.1")?, key),
            // Never zero, and never the HTTP/1.1 key.
            h2: (connector(b"h2")?, key.wrapping_add(1) | 1),
        })
    }

    /// The connector and pool key for one connection speaking HTTP/2 (`h2`) or HTTP/1.1.
    pub fn connector(&self, h2: bool) -> (Connector, u64) {
        let (c, key) = if h2 { &self.h2 } else { &self.h1 };
        (c.clone(), *key)
    }
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The system's trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured), read once.
pub(crate) fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        match rustls_native_certs::load_native_certs() {
            Ok(certs) => {
                let _ = roots.add_parsable_certificates(certs);
            }
            Err(e) => tracing::warn!(error = %e, "cannot load the system's root certificates"),
        }
        roots
    })
}

/// Reads PEM CA bundles into a trust store, with the certificates' DER (to tell trust sets
/// apart). Every certificate must parse: a bad file is a config error.
fn load_roots(files: &[String]) -> Result<(RootCertStore, Vec<Vec<u8>>), String> {
    let mut roots = RootCertStore::empty();
    let mut ders = Vec::new();
    for file in files {
        let pem = std::fs::read(file).map_err(|e| format!("cannot read CA file {file}: {e}"))?;
        for der in rustls_pemfile::certs(&mut pem.as_slice()) {
            let der = der.map_err(|e| format!("bad PEM in {file}: {e}"))?;
            if x509_parser::parse_x509_certificate(der.as_ref()).is_err() {
                return Err(format!("{file} holds an unparsable certificate"));
            }
            ders.push(der.as_ref().to_vec());
            roots
                .add(der)
                .map_err(|e| format!("{file}: not a usable CA certificate: {e}"))?;
        }
    }
    if ders.is_empty() {
        return Err("CA files hold no certificate".to_string());
    }
    Ok((roots, ders))
}

/// A name the backend certificate may carry in place of the SNI name.
#[derive(Debug)]
enum ExpectedName {
    Dns(ServerName<'static>),
    /// Compared exactly with the certificate's URI SANs (e.g. SPIFFE IDs).
    Uri(String),
}

impl ExpectedName {
    /// A URI when it has a `:` (the config's convention), else a DNS name.
    fn parse(name: &str) -> Result<ExpectedName, String> {
        if name.contains(':') {
            return Ok(ExpectedName::Uri(name.to_string()));
        }
        ServerName::try_from(name.to_string())
            .map(ExpectedName::Dns)
            .map_err(|_| format!("subject alt name {name:?} is not a DNS name"))
    }
}

/// Chain verification against the backend's own roots, then the name check: the SNI name, or
/// when `names` is set, any one of them (the SNI name is then not checked).
#[derive(Debug)]
struct BackendVerifier {
    roots: Arc<RootCertStore>,
    names: Vec<ExpectedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for BackendVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.names.is_empty() {
            verify_server_name(&cert, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        let uris = uri_names(end_entity);
        let matched = self.names.iter().any(|n| match n {
            ExpectedName::Dns(name) => verify_server_name(&cert, name).is_ok(),
            ExpectedName::Uri(uri) => uris.iter().any(|u| u == uri),
        });
        if matched {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The URI subject alternative names of a certificate (none if it does not parse; the chain
/// check has parsed it already).
fn uri_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

/// Opens TCP, then TLS, within the backend's connect timeout.
#[derive(Debug)]
struct TlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    timeout: Duration,
}

#[async_trait]
impl L4Connect for TlsConnect {
    async fn connect(&self, addr: &SocketAddr) -> pingora_error::Result<Stream> {
        let Some(inet) = addr.as_inet().copied() else {
            return Err(upstream(
                ErrorType::SocketError,
                "backend TLS needs an IP endpoint",
            ));
        };
        let handshake = async {
            let tcp = TcpStream::connect(inet).await.map_err(|e| {
                let kind = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
                    _ => ErrorType::ConnectError,
                };
                upstream(kind, format!("connect to {inet}: {e}"))
            })?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(self.name.clone(), tcp)
                .await
                .map_err(|e| {
                    upstream(
                        ErrorType::TLSHandshakeFailure,
                        format!("TLS to {inet} ({}): {e}", self.name.to_str()),
                    )
                })
        };
        match tokio::time::timeout(self.timeout, handshake).await {
            Ok(Ok(tls)) => Ok(Stream::from(VirtualSocketStream::new(Box::new(TlsSocket(
                tls,
            ))))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(upstream(
                ErrorType::ConnectTimedout,
                format!("connect with TLS to {inet}: timeout {:?}", self.timeout),
            )),
        }
    }
}

/// An upstream error: Pingora answers 502 for TLS failures, 503 for connect failures.
fn upstream(kind: ErrorType, context: impl Into<String>) -> Box<Error> {
    Error::create(
        kind,
        ErrorSource::Upstream,
        Some(context.into().into()),
        None,
    )
}

/// A TLS client connection as the "socket" under Pingora's HTTP.
struct TlsSocket(tokio_rustls::client::TlsStream<TcpStream>);

impl std::fmt::Debug for TlsSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TlsSocket")
            .field(&self.0.get_ref().0.peer_addr().ok())
            .finish()
    }
}

impl VirtualSocket for TlsSocket {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> std::io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.0.get_ref().0.set_nodelay(true),
            // Upstream keepalive is not configured by the proxy.
            _ => Ok(()),
        }
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
