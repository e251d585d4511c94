//! Process assembly: the Pingora server with one service for the plaintext HTTP ports, one for
//! the HTTPS-only ports and one per port with TLS listeners (the SNI router), plus a side
//! runtime for the admin listener and the config watch.

use crate::client_auth::PortClientVerifier;
use crate::engine::Engine;
use crate::h1_proxy::H1Proxy;
use crate::https::HttpsMux;
use crate::metrics::Metrics;
use crate::reload::{ConfigSource, FileSource, Reloader};
use crate::router::Router;
use crate::sniff::PlainMux;
use crate::tls::PortResolver;
use crate::tlsroute::TlsMux;
use citoroute_config::ListenerProtocol;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the file source looks at the config file.
const FILE_POLL: Duration = Duration::from_millis(200);

/// Where, in Kubernetes, the proxy follows its config and files through the API.
#[derive(Debug, Default, Clone)]
pub struct KubeOptions {
    /// `NAMESPACE/NAME` of the config ConfigMap.
    pub config_map: Option<String>,
    /// `NAMESPACE/NAME` of the Secret whose keys become files in `secret_dir`.
    pub secret: Option<String>,
    pub secret_dir: Option<PathBuf>,
    /// The mounted copy of the Secret, copied into `secret_dir` at start.
    pub secret_seed: Option<PathBuf>,
}

/// How long a proxy without a start-up file (a split config) waits for the API at start.
const FIRST_CONFIG_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the proxy on `config_path` until SIGTERM/SIGINT. Returns only on a startup error.
/// With a ConfigMap in `kube`, later configs come from it through the API, the file being
/// the start-up config and the fallback; with a Secret, its files follow it too.
pub fn run(config_path: PathBuf, kube: KubeOptions) -> Result<(), String> {
    let secret_sync = match (&kube.secret, &kube.secret_dir) {
        (Some(r), Some(dir)) => {
            let (namespace, name) = crate::kube_source::parse_ref(r)?;
            if let Some(seed) = &kube.secret_seed {
                seed_files(seed, dir)?;
            }
            Some(crate::kube_secret::SecretSync {
                namespace,
                name,
                dir: dir.clone(),
            })
        }
        (Some(_), None) => return Err("--kube-secret needs --secret-dir".to_string()),
        _ => None,
    };
    let key = config_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let config_map = kube
        .config_map
        .as_deref()
        .map(crate::kube_source::parse_ref)
        .transpose()?;
    let bytes = match (std::fs::read(&config_path), &config_map) {
        (Ok(b), _) => b,
        // A config split over several ConfigMaps has no mounted file: ask the API.
        (Err(e), Some((ns, name))) => {
            tracing::info!(error = %e, "no start-up config file; reading the config through the API");
            first_config(ns, name, &key)?
        }
        (Err(e), None) => return Err(format!("cannot read {}: {e}", config_path.display())),
    };
    let metrics = Arc::new(Metrics::new());
    let reloader = Arc::new(Reloader::new(&bytes, metrics.clone())?);
    let file = FileSource::new(config_path, FILE_POLL, bytes);
    let source: Box<dyn ConfigSource> = match config_map {
        Some((ns, name)) => Box::new(crate::kube_source::KubeSource::new(ns, name, key, file)),
        None => Box::new(file),
    };
    run_with(reloader, source, secret_sync)
}

/// Copies the mounted Secret into the private directory.
fn seed_files(seed: &std::path::Path, dir: &std::path::Path) -> Result<(), String> {
    let data = crate::kube_secret::read_dir(seed)
        .map_err(|e| format!("cannot read the mounted Secret {}: {e}", seed.display()))?;
    crate::kube_secret::write_dir(dir, &data)
        .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
    Ok(())
}

/// The config through the API, retried for [`FIRST_CONFIG_TIMEOUT`].
fn first_config(ns: &str, name: &str, key: &str) -> Result<Vec<u8>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + FIRST_CONFIG_TIMEOUT;
        loop {
            match crate::kube_source::fetch(ns, name, key).await {
                Ok(b) => return Ok(b),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "config not readable through the API yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}

pub fn run_with(
    reloader: Arc<Reloader>,
    source: Box<dyn ConfigSource>,
    secret_sync: Option<crate::kube_secret::SecretSync>,
) -> Result<(), String> {
    let cfg = reloader.config();
    let rt = &cfg.runtime;
    let threads = match rt.worker_threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let pid = std::process::id();
    let tmp = std::env::temp_dir();
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(rt.grace_period.0.as_secs()),
        graceful_shutdown_timeout_seconds: Some(rt.shutdown_timeout.0.as_secs().max(1)),
        upstream_keepalive_pool_size: rt.upstream_keepalive_pool_size,
        pid_file: tmp
            .join(format!("citoroute-proxy-{pid}.pid"))
            .display()
            .to_string(),
        upgrade_sock: tmp
            .join(format!("citoroute-proxy-{pid}.sock"))
            .display()
            .to_string(),
        max_retries: 8,
        // One single-threaded runtime per worker, each connection pinned to one: no work-stealing
        // queue traffic on the request path (the way nginx workers run).
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // One socket per (address, port). Ports with a TLS listener go to the SNI router; plain
    // HTTPS ports use Pingora's TLS listener with our per-SNI certificate resolver.
    let sni_ports = Router::tls_router_ports(&cfg);
    let mut sockets: BTreeMap<(String, u16), ListenerProtocol> = BTreeMap::new();
    for l in &cfg.listeners {
        sockets.insert((l.address.clone(), l.port), l.protocol);
    }
    let mut muxes = Vec::new();
    let mut plain_addrs = Vec::new();
    let mut https_ports = Vec::new();
    for ((address, port), protocol) in sockets {
        let addr = if address.contains(':') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        };
        let tls_settings = |h2: bool| -> Result<TlsSettings, String> {
            let mut tls = TlsSettings::with_callbacks(Box::new(crate::tls::RecordSni))
                .map_err(|e| e.to_string())?;
            tls.set_cert_resolver(Arc::new(PortResolver {
                port,
                table: reloader.certs.clone(),
            }));
            if h2 {
                tls.enable_h2();
            }
            tls.set_client_cert_verifier(Arc::new(PortClientVerifier::new(
                port,
                reloader.client_auth.clone(),
            )));
            Ok(tls)
        };
        if sni_ports.contains(&port) {
            let mut http = HttpProxy::new(
                Engine::new(reloader.router.clone(), reloader.metrics.clone()),
                server.configuration.clone(),
            );
            http.handle_init_modules();
            let mux = TlsMux {
                port,
                router: reloader.router.clone(),
                acceptor: tls_settings(true)?.build(),
                raw_acceptor: tls_settings(false)?.build(),
                http: Arc::new(http),
                fast: H1Proxy::new(
                    reloader.router.clone(),
                    reloader.metrics.clone(),
                    rt.upstream_keepalive_pool_size,
                    threads,
                ),
                metrics: reloader.metrics.clone(),
            };
            let mut svc = Service::new(format!("citoroute-tls-{port}"), mux);
            svc.add_listener(listener(&addr));
            muxes.push(svc);
            continue;
        }
        match protocol {
            ListenerProtocol::Http => plain_addrs.push(addr),
            ListenerProtocol::Https | ListenerProtocol::Tls => {
                https_ports.push((addr, tls_settings(true)?))
            }
        }
    }
    if !plain_addrs.is_empty() {
        let make = |h2c: bool| {
            let mut http = HttpProxy::new(
                Engine::new(reloader.router.clone(), reloader.metrics.clone()),
                server.configuration.clone(),
            );
            let mut options = HttpServerOptions::default();
            options.h2c = h2c;
            http.server_options = Some(options);
            http.handle_init_modules();
            Arc::new(http)
        };
        let mut svc = Service::new(
            "citoroute-http".to_string(),
            PlainMux {
                fast: H1Proxy::new(
                    reloader.router.clone(),
                    reloader.metrics.clone(),
                    rt.upstream_keepalive_pool_size,
                    threads,
                ),
                h1: make(false),
                h2c: make(true),
            },
        );
        for addr in &plain_addrs {
            svc.add_listener(listener(addr));
        }
        server.add_service(svc);
    }
    if !https_ports.is_empty() {
        let mut http = HttpProxy::new(
            Engine::new(reloader.router.clone(), reloader.metrics.clone()),
            server.configuration.clone(),
        );
        http.handle_init_modules();
        let mut svc = Service::new(
            "citoroute-https".to_string(),
            HttpsMux {
                fast: H1Proxy::new(
                    reloader.router.clone(),
                    reloader.metrics.clone(),
                    rt.upstream_keepalive_pool_size,
                    threads,
                ),
                http: Arc::new(http),
            },
        );
        for (addr, tls) in https_ports {
            svc.add_listener(listener(&addr).tls(tls));
        }
        server.add_service(svc);
    }
    for svc in muxes {
        server.add_service(svc);
    }

    let admin = rt.admin_address.clone();
    let side = reloader.clone();
    std::thread::Builder::new()
        .name("citoroute-admin".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the admin runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                if !admin.is_empty() {
                    match admin.parse() {
                        Ok(addr) => {
                            let state = side.clone();
                            tokio::spawn(async move {
                                if let Err(e) = crate::admin::serve(addr, state).await {
                                    tracing::error!(error = %e, "admin listener failed");
                                }
                            });
                        }
                        Err(e) => tracing::error!(error = %e, "bad admin address"),
                    }
                }
                if let Some(sync) = secret_sync {
                    tokio::spawn(sync.run(side.files_changed.clone()));
                }
                side.watch(source).await;
                std::future::pending::<()>().await;
            });
        })
        .map_err(|e| format!("cannot start the admin thread: {e}"))?;

    tracing::info!(threads, "citoroute-proxy serving");
    server.run_forever()
}

/// A listening socket without Pingora's per-connection 64 KiB read buffer: every reader above
/// it (the plain path, Pingora's HTTP/1 and TLS) reads into buffers of its own, so that buffer
/// only cost memory (about 64 KiB per idle connection) and a copy per read. Pingora's small
/// write buffer stays: it joins a response head and body into one write.
fn listener(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::default().read(0))
}
