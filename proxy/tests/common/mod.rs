//! Helpers shared by the integration tests: the proxy binary as a child process with a
//! temporary config, in-test echo backends (HTTP/1.1, h2c, WebSocket), clients (HTTP/1.1, h2c,
//! TLS with SNI and ALPN, raw TCP) and a Prometheus text reader.
//!
//! Every wait is bounded; every child is killed (through its own handle) when its guard drops.

#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const BIN: &str = env!("CARGO_BIN_EXE_citoroute-proxy");

/// How long a proxy may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Ports

/// A loopback port that was free a moment ago (Pingora cannot bind port 0, so we pick one,
/// drop the socket and hand the number to the proxy). Never hands out the same port twice in
/// one test process.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Default::default);
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = l.local_addr().expect("local addr").port();
        drop(l);
        if given.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no free port found");
}

/// A loopback address nothing listens on (for connect failures).
pub fn closed_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

// ---------------------------------------------------------------------------------------------
// The proxy process

/// The `version` and `[runtime]` head every test config starts with.
pub fn config_head(admin_port: u16) -> String {
    format!(
        r#"version = 1

[runtime]
admin_address = "127.0.0.1:{admin_port}"
worker_threads = 2
grace_period = "0s"
shutdown_timeout = "1s"
access_log = false

"#
    )
}

/// Replaces each `(placeholder, value)` in `template`.
pub fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    // Longest placeholders first, so `@B10` is not eaten by `@B1`.
    let mut vars: Vec<_> = vars.iter().collect();
    vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    for (k, v) in vars {
        out = out.replace(k, v);
    }
    out
}

/// A running `citoroute-proxy`, killed when dropped.
pub struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub admin: SocketAddr,
    log_path: PathBuf,
    rewrites: u64,
}

impl Proxy {
    /// Starts the proxy on `body` (listeners, certificates, backends, routes) behind a fresh
    /// runtime head, and waits until `/readyz` answers and every port in `ports` accepts.
    pub async fn start(body: &str, ports: &[u16]) -> Proxy {
        Self::start_in(tempfile::tempdir().expect("tempdir"), body, ports).await
    }

    /// Like [`Proxy::start`], in a directory the caller already filled (certificates).
    pub async fn start_in(dir: tempfile::TempDir, body: &str, ports: &[u16]) -> Proxy {
        Self::start_with_env(dir, body, ports, &[]).await
    }

    /// Like [`Proxy::start_in`], with extra environment variables (`None` removes one).
    /// Every proxy runs with EC2 instance metadata off and no AWS variables of the caller's:
    /// tests never reach for credentials outside the machine.
    pub async fn start_with_env(
        dir: tempfile::TempDir,
        body: &str,
        ports: &[u16],
        env: &[(&str, Option<String>)],
    ) -> Proxy {
        let admin_port = free_port();
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, format!("{}{body}", config_head(admin_port)))
            .expect("write config");
        let log_path = dir.path().join("proxy.log");
        let log = std::fs::File::create(&log_path).expect("create log");
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", dir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("no-aws-credentials"),
            );
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let child = cmd
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn citoroute-proxy");
        let mut proxy = Proxy {
            child,
            dir,
            config_path,
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            log_path,
            rewrites: 0,
        };
        proxy.wait_ready(ports).await;
        proxy
    }

    async fn wait_ready(&mut self, ports: &[u16]) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut ready = false;
        while Instant::now() < deadline {
            self.assert_alive();
            if let Ok(r) = h1_get(self.admin, "admin", "/readyz").await
                && r.status == 200
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(ready, "proxy not ready in time; log:\n{}", self.log());
        // The admin side starts before Pingora binds the data sockets.
        for &port in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut up = false;
            while Instant::now() < deadline {
                self.assert_alive();
                if TcpStream::connect(addr).await.is_ok() {
                    up = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            assert!(up, "port {port} never opened; log:\n{}", self.log());
        }
    }

    /// Panics (with the proxy's log) if the process exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("citoroute-proxy exited with {status}; log:\n{}", self.log());
        }
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the proxy wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Replaces the config with the same head and a new body, atomically (temp file + rename).
    pub fn rewrite(&mut self, body: &str) {
        let text = format!("{}{body}", config_head(self.admin.port()));
        self.rewrite_raw(&text);
    }

    /// Replaces the whole config file with `text`, atomically.
    pub fn rewrite_raw(&mut self, text: &str) {
        self.rewrites += 1;
        let tmp = self
            .dir
            .path()
            .join(format!("config.toml.{}.tmp", self.rewrites));
        std::fs::write(&tmp, text).expect("write temp config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    pub async fn metrics(&self) -> String {
        let r = h1_get(self.admin, "admin", "/metrics")
            .await
            .expect("GET /metrics");
        assert_eq!(r.status, 200);
        r.text()
    }

    /// A metric's value, 0 when the series does not exist yet.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics().await, name, labels).unwrap_or(0.0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the first series of `name` carrying all `labels` in Prometheus text.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, label_part) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let pairs: Vec<&str> = label_part.split(',').collect();
        let all = labels.iter().all(|(k, v)| {
            let want = format!("{k}=\"{v}\"");
            pairs.iter().any(|p| *p == want)
        });
        if all {
            return value.parse().ok();
        }
    }
    None
}

/// Polls `f` every `every` until it returns true or `limit` passes; returns whether it did.
pub async fn eventually<F, Fut>(limit: Duration, every: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

// ---------------------------------------------------------------------------------------------
// Echo backends

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2c,
}

/// An in-test HTTP server answering every request with JSON describing it:
/// `{backend, method, path, query, authority, version, headers: {name: [values]}, body,
/// body_len, body_sum}`.
/// Request headers steer it: `x-echo-sleep-ms` delays the answer, `x-echo-status` sets the
/// status. Every request seen is kept for inspection.
pub struct Backend {
    pub addr: SocketAddr,
    pub id: String,
    seen: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Backend {
    pub async fn start(id: &str, proto: Proto) -> Backend {
        Self::start_with(id, proto, None).await
    }

    /// A backend answering every request with `status` (still echoing it as JSON).
    pub async fn start_failing(id: &str, status: u16) -> Backend {
        Self::start_with(id, Proto::H1, Some(status)).await
    }

    async fn start_with(id: &str, proto: Proto, fixed_status: Option<u16>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (id_s, seen_s) = (id.to_string(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (id, seen) = (id_s.clone(), seen_s.clone());
                tokio::spawn(async move {
                    let svc =
                        service_fn(move |req| echo(id.clone(), seen.clone(), fixed_status, req));
                    let io = TokioIo::new(stream);
                    let _ = match proto {
                        Proto::H1 => {
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, svc)
                                .await
                        }
                        Proto::H2c => {
                            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, svc)
                                .await
                        }
                    };
                });
            }
        });
        Backend {
            addr,
            id: id.to_string(),
            seen,
        }
    }

    pub fn seen(&self) -> Vec<serde_json::Value> {
        self.seen.lock().unwrap().clone()
    }

    pub fn seen_count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn echo(
    id: String,
    seen: Arc<Mutex<Vec<serde_json::Value>>>,
    fixed_status: Option<u16>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for (n, v) in &parts.headers {
        let entry = headers
            .entry(n.as_str().to_string())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(a) = entry {
            a.push(String::from_utf8_lossy(v.as_bytes()).into_owned().into());
        }
    }
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(ms) = header("x-echo-sleep-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = fixed_status
        .or_else(|| header("x-echo-status").and_then(|v| v.parse().ok()))
        .unwrap_or(200u16);
    let json = serde_json::json!({
        "backend": id,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        // Large bodies are summarized: their length and a checksum.
        "body": if body.len() <= 4096 { String::from_utf8_lossy(&body).into_owned() } else { String::new() },
        "body_len": body.len(),
        "body_sum": body.iter().map(|&b| u64::from(b)).sum::<u64>(),
    });
    seen.lock().unwrap().push(json.clone());
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    let h = resp.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("x-backend", id.parse().unwrap());
    h.insert("x-remove-me", "yes".parse().unwrap());
    Ok(resp)
}

/// A WebSocket server echoing every text and binary message back.
pub async fn ws_echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
    let addr = listener.local_addr().expect("ws addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            return;
                        }
                    } else if msg.is_close() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The echo backend's JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not an echo response ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Which echo backend answered.
    pub fn backend(&self) -> String {
        self.json()["backend"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first value of a request header as the echo backend saw it.
    pub fn seen_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name][0].as_str().map(str::to_string)
    }

    /// Every value of a request header as the echo backend saw it.
    pub fn seen_headers(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn read_resp(r: Response<hyper::body::Incoming>) -> Result<Resp, String> {
    let (parts, body) = r.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .map_err(|_| "body timed out".to_string())?
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Resp {
        status: parts.status.as_u16(),
        version: parts.version,
        headers: parts.headers,
        body,
    })
}

/// A request with an origin-form URI and a `Host` header, for HTTP/1.1.
pub fn h1_req(method: &str, host: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
}

/// A keep-alive HTTP/1.1 client connection.
pub struct H1Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1Conn {
    pub async fn connect(addr: SocketAddr) -> Result<H1Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        Self::over(stream).await
    }

    pub async fn over<T>(io: T) -> Result<H1Conn, String>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(H1Conn { send })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Resp, String> {
        self.send
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let r = tokio::time::timeout(Duration::from_secs(10), self.send.send_request(req))
            .await
            .map_err(|_| "request timed out".to_string())?
            .map_err(|e| format!("request: {e}"))?;
        read_resp(r).await
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Result<Resp, String> {
        self.send(h1_req("GET", host, path).body(Full::default()).unwrap())
            .await
    }
}

/// One request on a fresh HTTP/1.1 connection.
pub async fn h1_send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Resp, String> {
    H1Conn::connect(addr).await?.send(req).await
}

/// `GET path` with `Host: host` on a fresh HTTP/1.1 connection.
pub async fn h1_get(addr: SocketAddr, host: &str, path: &str) -> Result<Resp, String> {
    H1Conn::connect(addr).await?.get(host, path).await
}

/// An HTTP/2 client connection (h2c prior knowledge over TCP, or over TLS after ALPN); clones
/// share the connection.
#[derive(Clone)]
pub struct H2Conn {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl H2Conn {
    pub async fn connect(addr: SocketAddr) -> Result<H2Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        Self::over(stream).await
    }

    pub async fn over<T>(io: T) -> Result<H2Conn, String>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2Conn { send })
    }

    /// `uri` must be absolute (`http://host/path`): it carries `:scheme` and `:authority`.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Resp, String> {
        self.send
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let r = tokio::time::timeout(Duration::from_secs(10), self.send.send_request(req))
            .await
            .map_err(|_| "request timed out".to_string())?
            .map_err(|e| format!("request: {e}"))?;
        read_resp(r).await
    }

    pub async fn get(&mut self, uri: &str) -> Result<Resp, String> {
        self.send(
            Request::builder()
                .uri(uri)
                .version(http::Version::HTTP_2)
                .body(Full::default())
                .unwrap(),
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A CA and leaf certificates it signs, written as PEM files into a directory.
pub struct Pki {
    ca: rcgen::CertifiedKey<rcgen::KeyPair>,
    ca_params: rcgen::CertificateParams,
}

/// A leaf certificate on disk.
pub struct Leaf {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

impl Leaf {
    /// A TLS server presenting this leaf and offering `alpn` (for test servers).
    pub fn server_config(&self, alpn: &[&[u8]]) -> rustls::ServerConfig {
        let certs = rustls_pemfile::certs(&mut std::fs::read(&self.cert_file).unwrap().as_slice())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls_pemfile::private_key(&mut std::fs::read(&self.key_file).unwrap().as_slice())
                .unwrap()
                .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg
    }
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "citoroute test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        Pki {
            ca: rcgen::CertifiedKey {
                cert,
                signing_key: key,
            },
            ca_params: params,
        }
    }

    pub fn root(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.ca.cert.der().clone()
    }

    /// The CA certificate as PEM.
    pub fn root_pem(&self) -> String {
        self.ca.cert.pem()
    }

    /// A leaf for `name` (also its CN), written to `dir/<file>.crt` and `dir/<file>.key`.
    pub fn leaf(&self, dir: &std::path::Path, file: &str, name: &str) -> Leaf {
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
        self.sign_leaf(dir, file, name, params)
    }

    /// A leaf with CN `cn` carrying exactly `dns` and `uris` as subject alternative names.
    pub fn leaf_with_sans(
        &self,
        dir: &std::path::Path,
        file: &str,
        cn: &str,
        dns: &[&str],
        uris: &[&str],
    ) -> Leaf {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        let ia5 = |s: &str| rcgen::string::Ia5String::try_from(s.to_string()).expect("ia5");
        params.subject_alt_names = dns
            .iter()
            .map(|d| rcgen::SanType::DnsName(ia5(d)))
            .chain(uris.iter().map(|u| rcgen::SanType::URI(ia5(u))))
            .collect();
        self.sign_leaf(dir, file, cn, params)
    }

    fn sign_leaf(
        &self,
        dir: &std::path::Path,
        file: &str,
        cn: &str,
        mut params: rcgen::CertificateParams,
    ) -> Leaf {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca.signing_key);
        let cert = params.signed_by(&key, &issuer).expect("sign leaf");
        let cert_file = dir.join(format!("{file}.crt"));
        let key_file = dir.join(format!("{file}.key"));
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        Leaf {
            cert_file,
            key_file,
            der: cert.der().clone(),
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

/// A TLS client connection to `addr` sending `sni`, trusting `root`, offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    root: &rustls::pki_types::CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string())
        .map_err(|e| format!("server name: {e}"))?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_string())?
    .map_err(|e| format!("TLS handshake: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Raw TCP

/// What came back for raw bytes written to the proxy.
#[derive(Debug)]
pub struct RawReply {
    /// The status of the first response line, if any response came.
    pub status: Option<u16>,
    pub bytes: Vec<u8>,
    /// The proxy closed (or reset) the connection.
    pub closed: bool,
}

/// Writes `request` on a fresh connection and reads until the proxy closes it, `limit` passes,
/// or (when `stop_after_head`) one response head arrived.
pub async fn raw_exchange(
    addr: SocketAddr,
    request: &[u8],
    limit: Duration,
    stop_after_head: bool,
) -> RawReply {
    let mut stream = TcpStream::connect(addr).await.expect("connect proxy");
    let write_failed = stream.write_all(request).await.is_err();
    let _ = stream.flush().await;
    let mut bytes = Vec::new();
    let mut closed = write_failed;
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                bytes.extend_from_slice(&buf[..n]);
                if stop_after_head && bytes.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let status = std::str::from_utf8(&bytes)
        .ok()
        .or_else(|| {
            let end = bytes.iter().position(|&b| b == b'\r').unwrap_or(0);
            std::str::from_utf8(&bytes[..end]).ok()
        })
        .and_then(|s| s.strip_prefix("HTTP/1."))
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse().ok());
    RawReply {
        status,
        bytes,
        closed,
    }
}
