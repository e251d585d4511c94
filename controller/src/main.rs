//! `citoroute-controller`: the CitoRoute Gateway API controller.

#![forbid(unsafe_code)]

mod apply;
mod error;
mod events;
mod leader;
mod llm_files;
mod metrics;
mod reconcile;
mod status;
mod watch;

use clap::Parser;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "citoroute-controller",
    version,
    about = "CitoRoute Gateway API controller"
)]
struct Cli {
    /// The proxy image of every Gateway's Deployment (its entrypoint is citoroute-proxy).
    /// Default: $CITOROUTE_PROXY_IMAGE, else localhost/citoroute/proxy:dev.
    #[arg(long)]
    proxy_image: Option<String>,
    /// Where /metrics and /healthz are served.
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics_address: SocketAddr,
    /// The controllerName of the GatewayClasses we handle.
    #[arg(long, default_value = citoroute_translate::CONTROLLER_NAME)]
    controller_name: String,
    /// How long a burst of cluster events may settle before a reconcile, in milliseconds.
    #[arg(long, default_value_t = 5)]
    settle_ms: u64,
    /// The shortest time between two reconciles while changes keep coming, in milliseconds.
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// Largest part of a config split over several ConfigMaps, in bytes (compressed). Lower
    /// only to test splitting: the default keeps each part well under the 1 MiB limit.
    #[arg(long, default_value_t = citoroute_config::configmap::MAX_PART_BYTES)]
    config_part_bytes: usize,
    /// Run only while holding the Lease `citoroute-controller` (for more than one replica).
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the Lease. Default: $POD_NAMESPACE, else citoroute-system.
    #[arg(long)]
    leader_election_namespace: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    json_logs: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.json_logs {
        builder.json().init();
    } else {
        builder.init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("citoroute-controller: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("citoroute-controller: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let proxy_image = cli
        .proxy_image
        .or_else(|| std::env::var("CITOROUTE_PROXY_IMAGE").ok())
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| "localhost/citoroute/proxy:dev".to_string());
    let metrics = Arc::new(metrics::Metrics::new().map_err(|e| e.to_string())?);
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client: {e}"))?;
    {
        let (m, addr) = (metrics.clone(), cli.metrics_address);
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, m).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_all = Arc::new(stop_tx);
    {
        let stop_tx = stop_all.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        });
    }

    let notify = Arc::new(tokio::sync::Notify::new());
    let stores = watch::Stores::start(&client, notify.clone()).await;
    tracing::info!("waiting for the initial lists");
    let mut ready_stop = stop_rx.clone();
    tokio::select! {
        r = stores.wait_ready() => r.map_err(|e| e.to_string())?,
        _ = ready_stop.changed() => return Ok(()),
    }
    // Followers keep their stores warm and wait for the Lease.
    let mut lost = None;
    if cli.leader_elect {
        let ns = cli
            .leader_election_namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "citoroute-system".to_string());
        let identity = std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| format!("{h}-{}", std::process::id()))
            .unwrap_or_else(|| format!("citoroute-controller-{}", std::process::id()));
        let mut election = leader::LeaderElection::new(
            client.clone(),
            &ns,
            "citoroute-controller",
            identity,
            Duration::from_secs(15),
        );
        let mut acquire_stop = stop_rx.clone();
        if !election.acquire(&mut acquire_stop).await {
            return Ok(());
        }
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel();
        let (hold_stop, stop_tx2) = (stop_rx.clone(), stop_all.clone());
        tokio::spawn(async move {
            let kept = election.hold(hold_stop).await;
            if !kept {
                let _ = stop_tx2.send(true);
            }
            let _ = lost_tx.send(!kept);
        });
        lost = Some(lost_rx);
    }
    tracing::info!(image = %proxy_image, "stores ready; reconciling");
    notify.notify_one();
    let reconciler = reconcile::Reconciler {
        applier: apply::Applier::new(
            client.clone(),
            proxy_image,
            metrics.clone(),
            cli.config_part_bytes,
        ),
        llm_files: llm_files::LlmFileReader::new(client.clone()),
        events: events::GatewayEvents::new(client.clone()),
        status: status::StatusWriter::new(client, metrics.clone(), cli.controller_name),
        stores,
        metrics,
        notify,
        settings: reconcile::Settings {
            settle: Duration::from_millis(cli.settle_ms),
            min_interval: Duration::from_millis(cli.debounce_ms),
            retry: Duration::from_secs(2),
            resync: Duration::from_secs(300),
        },
    };
    reconciler.run(stop_rx).await;
    if let Some(lost) = lost {
        // The holder task releases the Lease on a graceful stop.
        if lost.await.unwrap_or(false) {
            return Err("lost the leader lease".to_string());
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
