//! Backends at run time: endpoints with their breakers, the load-balancing choice, and the
//! Pingora peer each attempt is sent to.

use crate::router::CompileError;
use crate::router::HeaderView;
use crate::upstream_tls::UpstreamTls;
use citoroute_config::{self as cfg, BackendProtocol, LbPolicy, RuntimeSettings};
use citoroute_core::hash::hash_bytes;
use citoroute_core::{Admission, BreakerConfig, CircuitBreaker, Maglev, TriedSet};
use pingora_core::upstreams::peer::HttpPeer;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Monotonic nanoseconds since the process started: the clock the core's breakers run on.
pub fn now_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `ip:port` as configured, for metrics labels.
    pub label: Arc<str>,
    pub breaker: Option<Arc<CircuitBreaker>>,
}

#[derive(Debug)]
pub struct BackendSet {
    pub name: Arc<str>,
    pub endpoints: Vec<Endpoint>,
    policy: LbPolicy,
    hash_on: HashOn,
    maglev: Option<Maglev>,
    next: AtomicUsize,
    pub protocol: BackendProtocol,
    /// TLS to the endpoints (BackendTLSPolicy).
    tls: Option<UpstreamTls>,
    /// The backend's `connect_timeout`; TLS routes use it too.
    pub connect_timeout: Option<Duration>,
    max_h2_streams: usize,
}

/// An attempt's endpoint (an index into `endpoints`) and its breaker admission, if any.
pub type Chosen = (usize, Option<(Arc<CircuitBreaker>, Admission)>);

/// A breaker admission resolved exactly once: as a success or failure, or as cancelled (the
/// request ended without an outcome) when it is dropped unresolved.
#[derive(Debug, Default)]
pub struct Admitted(Option<(Arc<CircuitBreaker>, Admission)>);

impl Admitted {
    pub fn new(admission: Option<(Arc<CircuitBreaker>, Admission)>) -> Self {
        Admitted(admission)
    }

    /// Whether an outcome is still owed to a breaker.
    pub fn is_pending(&self) -> bool {
        self.0.is_some()
    }

    pub fn resolve(&mut self, success: bool) {
        if let Some((b, adm)) = self.0.take() {
            if success {
                b.on_success(adm, now_nanos());
            } else {
                b.on_failure(adm, now_nanos());
            }
        }
    }

    /// Frees the admission without counting an outcome.
    pub fn cancel(&mut self) {
        if let Some((b, adm)) = self.0.take() {
            b.on_cancel(adm, now_nanos());
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.cancel();
    }
}

#[derive(Debug, Clone)]
pub enum HashOn {
    SourceIp,
    Header(http::HeaderName),
    Cookie(String),
}

/// Keeps breaker state across reloads: the same endpoint of the same backend with the same
/// breaker settings gets the same breaker after a config swap.
#[derive(Debug, Default)]
pub struct BreakerRegistry {
    map: Mutex<HashMap<(String, SocketAddr, String), Weak<CircuitBreaker>>>,
}

impl BreakerRegistry {
    fn get(
        &self,
        backend: &str,
        addr: SocketAddr,
        settings: &cfg::CircuitBreakerSettings,
    ) -> Arc<CircuitBreaker> {
        let key = (backend.to_string(), addr, format!("{settings:?}"));
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get(&key).and_then(Weak::upgrade) {
            return b;
        }
        let b = Arc::new(CircuitBreaker::new(BreakerConfig {
            consecutive_failures: settings.consecutive_failures,
            failure_ratio: settings.failure_ratio,
            min_requests: settings.min_requests,
            window_nanos: settings.window.0.as_nanos() as u64,
            open_nanos: settings.open_for.0.as_nanos() as u64,
            half_open_probes: settings.half_open_probes.max(1),
        }));
        map.insert(key, Arc::downgrade(&b));
        // Forget breakers whose endpoints left every live config.
        map.retain(|_, w| w.strong_count() > 0);
        b
    }
}

impl BackendSet {
    pub fn compile(
        name: &str,
        b: &cfg::Backend,
        runtime: &RuntimeSettings,
        breakers: &BreakerRegistry,
    ) -> Result<BackendSet, CompileError> {
        let mut endpoints = Vec::with_capacity(b.endpoints.len());
        for ep in &b.endpoints {
            let addr: SocketAddr = ep.parse().map_err(|_| {
                CompileError::Invalid(format!("backend {name:?}: bad endpoint {ep:?}"))
            })?;
            endpoints.push(Endpoint {
                addr,
                label: ep.as_str().into(),
                breaker: b
                    .circuit_breaker
                    .enabled
                    .then(|| breakers.get(name, addr, &b.circuit_breaker)),
            });
        }
        let maglev = if b.load_balancing.policy == LbPolicy::Maglev && !endpoints.is_empty() {
            let weighted: Vec<(&str, u32)> = b.endpoints.iter().map(|e| (e.as_str(), 1)).collect();
            let size = b
                .load_balancing
                .table_size
                .unwrap_or(citoroute_core::DEFAULT_TABLE_SIZE);
            Some(
                Maglev::new(&weighted, size)
                    .map_err(|e| CompileError::Invalid(format!("backend {name:?}: {e}")))?,
            )
        } else {
            None
        };
        let hash_on = match b.load_balancing.hash_on.as_deref() {
            None | Some("source_ip") => HashOn::SourceIp,
            Some(h) => match (h.strip_prefix("header:"), h.strip_prefix("cookie:")) {
                (Some(n), _) => HashOn::Header(
                    http::HeaderName::from_bytes(n.as_bytes())
                        .map_err(|_| CompileError::Invalid(format!("bad hash header {n:?}")))?,
                ),
                (_, Some(c)) => HashOn::Cookie(c.to_string()),
                _ => return Err(CompileError::Invalid(format!("bad hash_on {h:?}"))),
            },
        };
        let connect_timeout = b.connect_timeout.map(|d| d.0);
        let tls = b
            .tls
            .as_ref()
            .map(|t| UpstreamTls::new(name, t, connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)))
            .transpose()?;
        Ok(BackendSet {
            name: name.into(),
            endpoints,
            policy: b.load_balancing.policy,
            hash_on,
            maglev,
            next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
            protocol: b.protocol,
            tls,
            connect_timeout,
            max_h2_streams: runtime.max_h2_streams,
        })
    }

    /// Time allowed to open a connection to one endpoint.
    pub fn connect_timeout_or_default(&self) -> Duration {
        self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    /// Whether connections to the endpoints are TLS (BackendTLSPolicy).
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn hash_on(&self) -> Option<&HashOn> {
        (self.policy == LbPolicy::Maglev).then_some(&self.hash_on)
    }

    /// Picks an endpoint not yet tried by this request whose breaker lets traffic through.
    /// If every untried endpoint's breaker is open, an untried one is still returned: better
    /// a likely failure than a certain 503 (the breaker then only reorders).
    pub fn pick(&self, key_hash: Option<u64>, tried: &TriedSet, now: u64) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 || tried.len() >= n {
            return None;
        }
        let healthy = |i: usize| {
            !tried.contains(i)
                && self.endpoints[i]
                    .breaker
                    .as_ref()
                    .is_none_or(|b| b.is_available(now))
        };
        let untried = |i: usize| !tried.contains(i);
        if let (Some(m), Some(h)) = (&self.maglev, key_hash) {
            return m
                .get_skipping(h, |i| !healthy(i))
                .or_else(|| m.get_skipping(h, |i| !untried(i)));
        }
        let start = match self.policy {
            LbPolicy::Random => fastrand::usize(..n),
            _ => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| healthy(i))
            .or_else(|| (0..n).map(|k| (start + k) % n).find(|&i| untried(i)))
    }

    /// The Maglev key of a request: `None` when the backend does not hash.
    pub fn hash_key(&self, client: Option<IpAddr>, headers: HeaderView<'_>) -> Option<u64> {
        self.hash_on().map(|h| match h {
            HashOn::SourceIp => client
                .map(|ip| hash_bytes(ip.to_string().as_bytes()))
                .unwrap_or(0),
            HashOn::Header(name) => headers
                .first(name.as_str())
                .map(hash_bytes)
                .unwrap_or_else(|| fastrand::u64(..)),
            HashOn::Cookie(name) => headers
                .cookie(name)
                .map(|v| hash_bytes(v.as_bytes()))
                .unwrap_or_else(|| fastrand::u64(..)),
        })
    }

    /// The endpoint for a request's next attempt, marked tried, with its breaker admission.
    /// An endpoint whose breaker refuses admission (its half-open probe slots are taken) is
    /// skipped like a tried one, unless it is the last one left.
    pub fn choose(&self, key: Option<u64>, tried: &mut TriedSet, now: u64) -> Option<Chosen> {
        loop {
            let i = self.pick(key, tried, now)?;
            tried.insert(i);
            let Some(b) = &self.endpoints[i].breaker else {
                return Some((i, None));
            };
            let adm = b.admit(now);
            if matches!(adm, Admission::Rejected) && tried.len() < self.endpoints.len() {
                continue;
            }
            return Some((i, Some((b.clone(), adm))));
        }
    }

    /// The Pingora peer for one attempt at endpoint `i`. With TLS, Pingora sees a plaintext
    /// peer whose connections our connector opens (see [`crate::upstream_tls`]).
    pub fn peer(&self, i: usize, upgrade: bool, read_timeout: Option<Duration>) -> Box<HttpPeer> {
        let ep = &self.endpoints[i];
        let mut peer = HttpPeer::new(ep.addr, false, String::new());
        let h2 = !upgrade && matches!(self.protocol, BackendProtocol::H2c | BackendProtocol::H2);
        if let Some(tls) = &self.tls {
            let (connector, group) = tls.connector(h2);
            peer.options.custom_l4 = Some(connector);
            peer.group_key = group;
        }
        let opts = &mut peer.options;
        opts.connection_timeout = Some(self.connect_timeout_or_default());
        opts.read_timeout = read_timeout;
        opts.write_timeout = read_timeout;
        opts.idle_timeout = Some(Duration::from_secs(60));
        opts.max_h2_streams = self.max_h2_streams;
        if h2 {
            opts.set_http_version(2, 2);
        } else {
            opts.set_http_version(1, 1);
        }
        Box::new(peer)
    }
}

/// Time allowed to open a connection (and its TLS) to one endpoint when the config sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
