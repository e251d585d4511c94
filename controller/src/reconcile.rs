//! The reconcile loop: wait for a cluster event, let more arrive for the debounce interval,
//! snapshot the stores, translate (pure), apply every proxy, write statuses.

use crate::apply::Applier;
use crate::error::Error;
use crate::llm_files::LlmFileReader;
use crate::metrics::Metrics;
use crate::status::StatusWriter;
use crate::watch::Stores;
use citoroute_translate::{ObjectKey, translate};
use kube::runtime::reflector::ObjectRef;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// Loop settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long to wait for more events after the first before reconciling.
    pub debounce: Duration,
    /// Retry delay after a failed reconcile.
    pub retry: Duration,
    /// Every this often, re-apply every proxy object (repairs hand edits).
    pub resync: Duration,
}

pub struct Reconciler {
    pub stores: Stores,
    pub applier: Applier,
    pub status: StatusWriter,
    /// Values of the LLM credential, JWKS and CA files each proxy's Secret carries.
    pub llm_files: LlmFileReader,
    pub metrics: Arc<Metrics>,
    pub notify: Arc<Notify>,
    pub settings: Settings,
}

impl Reconciler {
    /// One reconcile of the whole snapshot. Returns the errors seen (each Gateway and status
    /// is tried even when another failed).
    pub async fn reconcile_once(&mut self) -> Vec<Error> {
        self.metrics.reconciles.inc();
        let snapshot = self.stores.snapshot();
        let started = Instant::now();
        let t = translate(&snapshot);
        self.metrics
            .translate_seconds
            .observe(started.elapsed().as_secs_f64());

        let mut errors = Vec::new();
        let mut addresses: BTreeMap<ObjectKey, Option<String>> = BTreeMap::new();
        let empty = BTreeSet::new();
        for (key, cfg) in &t.proxies {
            let Some(gw) = self
                .stores
                .gateways
                .get(&ObjectRef::new(&key.1).within(&key.0))
            else {
                continue;
            };
            let secrets = t.secrets_needed.get(key).unwrap_or(&empty);
            let llm_data = match self
                .llm_files
                .data(t.llm_files.get(key), &self.stores)
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    // Without its files the proxy would refuse the new config: keep the old.
                    addresses.insert(key.clone(), self.applier.address(key));
                    errors.push(e);
                    continue;
                }
            };
            match self
                .applier
                .apply(&gw, cfg, secrets, llm_data, &self.stores)
                .await
            {
                Ok(addr) => {
                    addresses.insert(key.clone(), addr);
                }
                Err(e) => {
                    // Status is never gated on the rollout: keep the last known address.
                    addresses.insert(key.clone(), self.applier.address(key));
                    errors.push(e);
                }
            }
        }
        let keep: BTreeSet<ObjectKey> = t.proxies.keys().cloned().collect();
        let needed: BTreeSet<ObjectKey> = t.secrets_needed.values().flatten().cloned().collect();
        self.applier.retain(&keep, &needed);
        let llm_needed = t.llm_files.values().flatten().cloned().collect();
        self.llm_files.retain(&llm_needed);
        self.applier.end_pass();
        errors.extend(self.status.write(&t, &self.stores, &addresses).await);
        errors
    }

    /// Runs until `shutdown` turns true. A reconcile in progress finishes first.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut next_resync = tokio::time::Instant::now() + self.settings.resync;
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = self.notify.notified() => {}
                _ = retry => {}
                _ = tokio::time::sleep_until(next_resync) => {
                    self.applier.forget();
                    next_resync = tokio::time::Instant::now() + self.settings.resync;
                }
            }
            if *shutdown.borrow() {
                break;
            }
            // Debounce: let a burst of events settle into one reconcile.
            tokio::time::sleep(self.settings.debounce).await;
            let errors = self.reconcile_once().await;
            if errors.is_empty() {
                retry_at = None;
            } else {
                for e in &errors {
                    self.metrics.error(e);
                    tracing::warn!(error = %e, reason = e.reason(), "reconcile error");
                }
                retry_at = Some(tokio::time::Instant::now() + self.settings.retry);
            }
        }
        tracing::info!("reconcile loop stopped");
    }
}
