//! The reconcile loop: wait for a cluster event, let the rest of its burst arrive (a few
//! milliseconds), snapshot the stores, translate (pure), apply every proxy, write statuses.
//!
//! A change after a quiet spell is served at once; under a sustained stream of changes,
//! reconciles start at most once per `min_interval`, each taking in everything that arrived.

use crate::apply::Applier;
use crate::error::Error;
use crate::events::{self, GatewayEvents};
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
    /// How long to let a burst of events (one `kubectl apply` of many objects) settle.
    pub settle: Duration,
    /// The shortest time between the starts of two reconciles: bounds the work under churn.
    pub min_interval: Duration,
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
    pub events: GatewayEvents,
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
                Ok(applied) => {
                    addresses.insert(key.clone(), applied.address);
                    if let Some((hash, parts)) = applied.config_written {
                        self.events
                            .publish(&gw, events::config_written(&hash, parts))
                            .await;
                    }
                }
                Err(e) => {
                    // Status is never gated on the rollout: keep the last known address.
                    addresses.insert(key.clone(), self.applier.address(key));
                    self.events.publish(&gw, events::apply_failed(&e)).await;
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
        let mut last_start: Option<tokio::time::Instant> = None;
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
            let start = next_start(last_start, tokio::time::Instant::now(), &self.settings);
            tokio::time::sleep_until(start).await;
            last_start = Some(tokio::time::Instant::now());
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

/// When the next reconcile may start, given the start of the previous one and an event now.
fn next_start<I>(last_start: Option<I>, now: I, s: &Settings) -> I
where
    I: Copy + Ord + std::ops::Add<Duration, Output = I>,
{
    let settled = now + s.settle;
    match last_start {
        Some(last) => settled.max(last + s.min_interval),
        None => settled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            settle: Duration::from_millis(5),
            min_interval: Duration::from_millis(100),
            retry: Duration::from_secs(2),
            resync: Duration::from_secs(300),
        }
    }

    #[test]
    fn a_change_after_a_quiet_spell_waits_only_to_settle() {
        let t0 = Instant::now();
        let s = settings();
        assert_eq!(next_start(None, t0, &s), t0 + s.settle);
        let long_ago = t0;
        let now = t0 + Duration::from_secs(1);
        assert_eq!(next_start(Some(long_ago), now, &s), now + s.settle);
    }

    #[test]
    fn changes_under_churn_wait_for_the_min_interval() {
        let t0 = Instant::now();
        let s = settings();
        let now = t0 + Duration::from_millis(20);
        assert_eq!(next_start(Some(t0), now, &s), t0 + s.min_interval);
    }
}
