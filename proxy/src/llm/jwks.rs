//! Where JWT keys come from at run time: a file re-read when it changes (a mounted Secret
//! rotates) or a URL fetched at start and again on an interval. The last good key set stays
//! in use through failed reads; a token with an unknown `kid` asks for one early refresh
//! (rate limited), so a newly published key works without waiting for the interval.
//!
//! A URL is fetched trusting the system roots plus, when `jwks_ca_file` is set, that PEM bundle
//! (read at each config load, like a backend's `ca_file`).
//!
//! Sources live in a process-wide registry keyed by where they read from (for a URL: with its
//! interval and CA file), so a config reload that keeps `[jwt]` keeps its source (no refetch);
//! a source nobody uses any more stops.

use crate::llm::{client, side};
use arc_swap::ArcSwapOption;
use citoroute_llm::jwt::JwkSet;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, watch};

/// Default time between fetches of a JWKS URL.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// How often a JWKS file's metadata is looked at.
const FILE_POLL: Duration = Duration::from_secs(1);
/// How long the first fetch of a URL may hold up a config load.
const FIRST_FETCH_WAIT: Duration = Duration::from_secs(10);
/// Time allowed for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS document read.
const MAX_JWKS: usize = 1 << 20;
/// Least time between two refreshes asked for by requests (unknown `kid`s).
const ASKED_REFRESH_GAP: Duration = Duration::from_secs(5);
/// How long a request waits for the refresh it asked for.
const ASKED_REFRESH_WAIT: Duration = Duration::from_secs(3);
/// First retry delay after a failed fetch; doubles up to the refresh interval.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Where a key set is read from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    File(PathBuf),
    /// `ca_file`: a PEM bundle trusted in addition to the system roots. Part of the key, so
    /// sources trusting different CAs are never shared.
    Url {
        url: String,
        every: Duration,
        ca_file: Option<String>,
    },
}

/// A key set that changes at run time.
pub struct JwksSource {
    origin: Origin,
    keys: ArcSwapOption<JwkSet>,
    /// Counts finished read attempts (good or bad), for requests waiting on a refresh.
    attempts: watch::Sender<u64>,
    wake: Arc<Notify>,
    last_asked: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    /// What a URL is fetched with: the system roots, plus the CA file when there is one.
    clients: Mutex<client::Clients>,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn registry() -> &'static Mutex<HashMap<Origin, Weak<JwksSource>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Origin, Weak<JwksSource>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl JwksSource {
    /// The source for `origin`: the running one, or a new one after its first read. A file
    /// that cannot be read or parsed is an error (the config is refused); a URL that cannot
    /// be fetched is not (keys arrive when the URL answers; until then tokens are refused).
    /// A URL's CA file that cannot be read or holds no certificate is an error too.
    pub fn get(origin: Origin) -> Result<Arc<JwksSource>, String> {
        let clients = match &origin {
            Origin::Url {
                ca_file: Some(f), ..
            } => client::clients_with_ca(f).map_err(|e| format!("jwt: jwks_ca_file: {e}"))?,
            _ => client::default_clients(),
        };
        let existing = registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&origin)
            .and_then(Weak::upgrade);
        if let Some(src) = existing {
            if let Origin::File(path) = &src.origin {
                // A config reload re-reads the file at once, as it always did.
                src.keys.store(Some(Arc::new(read_file(path)?)));
            }
            // A reload re-reads the CA file too (it may have been replaced under its name).
            *src.clients.lock().unwrap_or_else(|e| e.into_inner()) = clients;
            return Ok(src);
        }
        let src = Arc::new(JwksSource {
            origin: origin.clone(),
            keys: ArcSwapOption::empty(),
            attempts: watch::Sender::new(0),
            wake: Arc::new(Notify::new()),
            last_asked: Mutex::new(None),
            last_error: Mutex::new(None),
            clients: Mutex::new(clients),
        });
        match &origin {
            Origin::File(path) => {
                src.keys.store(Some(Arc::new(read_file(path)?)));
                let stamp = stamp(path);
                side::spawn(watch_file(Arc::downgrade(&src), src.wake.clone(), stamp))?;
            }
            Origin::Url { url, every, .. } => {
                let uri: http::Uri = url
                    .parse()
                    .map_err(|_| format!("jwt: {url:?} is not a URL"))?;
                let mut done = src.attempts.subscribe();
                side::spawn(poll_url(
                    Arc::downgrade(&src),
                    src.wake.clone(),
                    uri,
                    *every,
                ))?;
                let first = side::run_and_wait(
                    async move {
                        let _ = done.changed().await;
                    },
                    FIRST_FETCH_WAIT,
                )?;
                match (first, src.keys.load().as_ref()) {
                    (Some(()), Some(set)) => {
                        tracing::info!(url = %url, keys = set.len(), "JWKS fetched")
                    }
                    _ => tracing::warn!(
                        url = %url,
                        error = src.last_error().unwrap_or_else(|| "no answer yet".into()),
                        "JWKS not fetched yet; tokens are refused until it is (retrying)"
                    ),
                }
            }
        }
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(origin, Arc::downgrade(&src));
        Ok(src)
    }

    /// The current key set (`None` until the first good read of a URL).
    pub fn keys(&self) -> Option<Arc<JwkSet>> {
        self.keys.load_full()
    }

    /// Why the last read failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks for a read now (a token named a `kid` the set lacks) and waits a little for it.
    /// Returns false, without waiting, when another request asked less than
    /// [`ASKED_REFRESH_GAP`] ago.
    pub async fn refresh_now(&self) -> bool {
        {
            let mut last = self.last_asked.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < ASKED_REFRESH_GAP) {
                return false;
            }
            *last = Some(now);
        }
        let mut done = self.attempts.subscribe();
        self.wake.notify_one();
        tokio::time::timeout(ASKED_REFRESH_WAIT, done.changed())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The clients the next fetch uses.
    fn fetch_clients(&self) -> client::Clients {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn finished(&self, result: Result<JwkSet, String>) -> bool {
        let ok = result.is_ok();
        match result {
            Ok(set) => {
                let before = self.keys.load_full();
                let changed = before.as_ref().is_none_or(|b| !same_kids(b, &set));
                if changed && before.is_some() {
                    tracing::info!(origin = ?self.origin, keys = set.len(), "JWKS changed");
                }
                self.keys.store(Some(Arc::new(set)));
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            Err(e) => {
                tracing::warn!(origin = ?self.origin, error = %e, "JWKS read failed; keeping the last good keys");
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            }
        }
        self.attempts.send_modify(|n| *n += 1);
        ok
    }
}

fn same_kids(a: &JwkSet, b: &JwkSet) -> bool {
    let mut x: Vec<&str> = a.kids().collect();
    let mut y: Vec<&str> = b.kids().collect();
    x.sort_unstable();
    y.sort_unstable();
    x == y && a.len() == b.len()
}

fn read_file(path: &PathBuf) -> Result<JwkSet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("jwt: cannot read {}: {e}", path.display()))?;
    JwkSet::parse(&text).map_err(|e| format!("jwt: {}: {e}", path.display()))
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// Re-reads the file when its modification time or size changes, or when asked.
async fn watch_file(src: Weak<JwksSource>, wake: Arc<Notify>, mut seen: Option<(SystemTime, u64)>) {
    loop {
        let asked = tokio::select! {
            () = tokio::time::sleep(FILE_POLL) => false,
            () = wake.notified() => true,
        };
        let Some(src) = src.upgrade() else { return };
        let Origin::File(path) = &src.origin else {
            return;
        };
        let now = stamp(path);
        if !asked && now == seen {
            continue;
        }
        seen = now;
        src.finished(read_file(path));
    }
}

/// Fetches the URL now, then every `every`; after a failure, sooner (backing off).
async fn poll_url(src: Weak<JwksSource>, wake: Arc<Notify>, url: http::Uri, every: Duration) {
    let mut delay = Duration::ZERO;
    let mut backoff = FIRST_BACKOFF;
    loop {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = wake.notified() => {}
        }
        let clients = match src.upgrade() {
            Some(s) => s.fetch_clients(),
            None => return,
        };
        let result = match client::get(&clients, &url, MAX_JWKS, FETCH_TIMEOUT).await {
            Ok(body) => std::str::from_utf8(&body)
                .map_err(|_| "the JWKS is not UTF-8".to_string())
                .and_then(|t| JwkSet::parse(t).map_err(|e| e.to_string())),
            Err(e) => Err(format!("GET {url}: {e}")),
        };
        let Some(src) = src.upgrade() else { return };
        if src.finished(result) {
            delay = every;
            backoff = FIRST_BACKOFF;
        } else {
            delay = backoff.min(every);
            backoff = (backoff * 2).min(every);
        }
    }
}
