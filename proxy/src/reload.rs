//! Config sources and the swap: a new config is parsed, validated, its certificates loaded and
//! its router compiled entirely off the request path; only then is it stored with one atomic
//! pointer swap. Requests in flight keep the generation they started with.

use crate::backend::BreakerRegistry;
use crate::client_auth::ClientAuthTable;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::tls::CertTable;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use citoroute_config::{ListenerProtocol, ProxyConfig};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Where configs come from. The file source is the standalone default; the Kubernetes
/// ConfigMap watch implements the same trait.
#[async_trait]
pub trait ConfigSource: Send {
    /// Waits for the next version of the config's bytes. `None` ends the watch.
    async fn next(&mut self) -> Option<Result<Vec<u8>, String>>;
    /// For logs: where the config comes from.
    fn describe(&self) -> String;
}

/// Watches a file by polling its metadata (robust to editors' rename-on-save and to
/// Kubernetes' symlink swaps in mounted volumes); reads it only when that changed, and yields
/// it only when its bytes changed.
pub struct FileSource {
    path: PathBuf,
    interval: Duration,
    seen_meta: Option<(SystemTime, u64)>,
    seen_bytes: Option<Vec<u8>>,
}

impl FileSource {
    pub fn new(path: PathBuf, interval: Duration, initial: Vec<u8>) -> Self {
        let seen_meta = std::fs::metadata(&path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        FileSource {
            path,
            interval,
            seen_meta,
            seen_bytes: Some(initial),
        }
    }
}

#[async_trait]
impl ConfigSource for FileSource {
    async fn next(&mut self) -> Option<Result<Vec<u8>, String>> {
        loop {
            tokio::time::sleep(self.interval).await;
            let meta = match tokio::fs::metadata(&self.path).await {
                Ok(m) => m,
                Err(e) => {
                    if self.seen_meta.take().is_some() {
                        return Some(Err(format!("cannot read {}: {e}", self.path.display())));
                    }
                    continue;
                }
            };
            let stamp = (
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            );
            if self.seen_meta == Some(stamp) {
                continue;
            }
            self.seen_meta = Some(stamp);
            match tokio::fs::read(&self.path).await {
                Ok(bytes) if self.seen_bytes.as_ref() == Some(&bytes) => continue,
                Ok(bytes) => {
                    self.seen_bytes = Some(bytes.clone());
                    return Some(Ok(bytes));
                }
                Err(e) => return Some(Err(format!("cannot read {}: {e}", self.path.display()))),
            }
        }
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

/// The sockets a config needs: (address, port, speaks TLS).
pub fn sockets(cfg: &ProxyConfig) -> BTreeSet<(String, u16, bool)> {
    cfg.listeners
        .iter()
        .map(|l| {
            (
                l.address.clone(),
                l.port,
                l.protocol != ListenerProtocol::Http,
            )
        })
        .collect()
}

/// Holds the live state and swaps new generations in.
pub struct Reloader {
    pub router: Arc<ArcSwap<Router>>,
    pub certs: Arc<ArcSwap<CertTable>>,
    /// Client certificate policies per port (frontend mTLS).
    pub client_auth: Arc<ArcSwap<ClientAuthTable>>,
    pub metrics: Arc<Metrics>,
    /// Notified when the files a config loads were rewritten (the Secret watch): they are
    /// looked at right away instead of at the next poll.
    pub files_changed: Arc<tokio::sync::Notify>,
    breakers: BreakerRegistry,
    generation: AtomicU64,
    bound: BTreeSet<(String, u16, bool)>,
}

impl Reloader {
    /// Compiles the first config. Its listeners are the sockets the process opens.
    pub fn new(bytes: &[u8], metrics: Arc<Metrics>) -> Result<Reloader, String> {
        let cfg = Arc::new(ProxyConfig::from_bytes(bytes).map_err(|e| e.to_string())?);
        let breakers = BreakerRegistry::default();
        let certs = CertTable::load(&cfg).map_err(|e| e.to_string())?;
        let client_auth = ClientAuthTable::load(&cfg)?;
        let router =
            Router::compile(cfg.clone(), 1, &breakers, &metrics).map_err(|e| e.to_string())?;
        metrics.config_generation.set(1);
        Ok(Reloader {
            router: Arc::new(ArcSwap::from_pointee(router)),
            certs: Arc::new(ArcSwap::from_pointee(certs)),
            client_auth: Arc::new(ArcSwap::from_pointee(client_auth)),
            metrics,
            files_changed: Arc::new(tokio::sync::Notify::new()),
            breakers,
            generation: AtomicU64::new(1),
            bound: sockets(&cfg),
        })
    }

    pub fn config(&self) -> Arc<ProxyConfig> {
        self.router.load().config.clone()
    }

    /// Applies new config bytes; on any error the current generation keeps serving.
    pub fn apply(&self, bytes: &[u8]) -> Result<u64, String> {
        let parsed = ProxyConfig::from_bytes(bytes).map_err(|e| e.to_string());
        self.record(parsed.and_then(|cfg| self.try_apply(Arc::new(cfg))))
    }

    /// Applies a parsed config; on any error the current generation keeps serving.
    pub fn apply_config(&self, cfg: Arc<ProxyConfig>) -> Result<u64, String> {
        self.record(self.try_apply(cfg))
    }

    fn record(&self, result: Result<u64, String>) -> Result<u64, String> {
        match &result {
            Ok(g) => {
                self.metrics.config_reloads.inc();
                self.metrics.config_generation.set(*g as i64);
                tracing::info!(generation = g, "config applied");
            }
            Err(e) => {
                self.metrics.config_reload_failures.inc();
                tracing::error!(error = %e, "config refused; the last good config keeps serving");
            }
        }
        result
    }

    fn try_apply(&self, cfg: Arc<ProxyConfig>) -> Result<u64, String> {
        let certs = CertTable::load(&cfg).map_err(|e| e.to_string())?;
        let client_auth = ClientAuthTable::load(&cfg)?;
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let router = Router::compile(cfg.clone(), generation, &self.breakers, &self.metrics)
            .map_err(|e| e.to_string())?;
        let wanted = sockets(&cfg);
        let pending = wanted != self.bound;
        if pending {
            tracing::warn!(
                "the config changes listener sockets; routes are updated now, new ports open after a restart"
            );
        }
        self.metrics
            .listeners_pending_restart
            .set(i64::from(pending));
        // Certificates first: a route on a new hostname never meets the old certificate table.
        self.certs.store(Arc::new(certs));
        self.client_auth.store(Arc::new(client_auth));
        self.router.store(Arc::new(router));
        self.generation.store(generation, Ordering::Relaxed);
        Ok(generation)
    }

    /// Applies every update from `source` until it ends. Between updates it also watches the
    /// certificate and client CA files of the newest config: in Kubernetes their content
    /// changes (a rotated Secret or CA ConfigMap) while the config text stays the same, and a
    /// config refused for a file not written yet is retried once the file appears.
    pub async fn watch(&self, mut source: Box<dyn ConfigSource>) {
        tracing::info!(source = %source.describe(), "watching config");
        // A task of its own, so that the file poll below never cancels a source mid-read.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while let Some(update) = source.next().await {
                if tx.send(update).await.is_err() {
                    break;
                }
            }
        });
        let mut wanted = self.config();
        let mut stamp = file_stamps(&wanted);
        loop {
            tokio::select! {
                update = rx.recv() => match update {
                    None => break,
                    Some(Ok(bytes)) => match ProxyConfig::from_bytes(&bytes) {
                        Ok(cfg) => {
                            wanted = Arc::new(cfg);
                            stamp = file_stamps(&wanted);
                            let _ = self.apply_config(wanted.clone());
                        }
                        Err(e) => {
                            let _ = self.record(Err(e.to_string()));
                        }
                    },
                    Some(Err(e)) => {
                        self.metrics.config_reload_failures.inc();
                        tracing::error!(error = %e, "config source error; the last good config keeps serving");
                    }
                },
                _ = tokio::time::sleep(FILES_POLL) => {
                    let now = file_stamps(&wanted);
                    if now != stamp {
                        stamp = now;
                        tracing::info!("certificate or CA files changed; reloading the config");
                        let _ = self.apply_config(wanted.clone());
                    }
                }
                // Any of the config's files may have changed (credentials too): reload all.
                _ = self.files_changed.notified() => {
                    stamp = file_stamps(&wanted);
                    tracing::info!("the Secret's files changed; reloading the config");
                    let _ = self.apply_config(wanted.clone());
                }
            }
        }
    }
}

/// How often the certificate and CA files of the config are looked at.
const FILES_POLL: Duration = Duration::from_secs(1);

/// Modification time and length of a file (`None`: unreadable), per file.
type FileStamps = Vec<(String, Option<(SystemTime, u64)>)>;

/// The stamps of the files a config loads at reload: listener certificates and keys, client
/// and backend CA bundles. Metadata follows symlinks, so a Kubernetes volume's atomic swap
/// shows.
fn file_stamps(cfg: &ProxyConfig) -> FileStamps {
    let certs = cfg
        .certificates
        .values()
        .flat_map(|c| [c.cert_file.clone(), c.key_file.clone()]);
    let cas = cfg
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref()?.client_validation.as_ref())
        .flat_map(|v| v.ca_files.iter().cloned());
    let backend_cas = cfg
        .backends
        .values()
        .filter_map(|b| b.tls.as_ref())
        .flat_map(|t| t.ca_files.iter().cloned());
    let files: BTreeSet<String> = certs.chain(cas).chain(backend_cas).collect();
    files
        .into_iter()
        .map(|f| {
            let stamp = std::fs::metadata(&f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (f, stamp)
        })
        .collect()
}
