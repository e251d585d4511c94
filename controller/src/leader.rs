//! Leader election with a `coordination.k8s.io/v1` Lease, so that several replicas can run
//! and only one writes. Expiry is judged the way client-go does: by how long this process has
//! seen the Lease's record unchanged (its own clock), not by comparing `renewTime` with its
//! clock, so clock skew between replicas does not matter.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The Lease record last seen (holder, renewTime) and when it was first seen.
    observed: Option<((String, String), Instant)>,
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElection {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: String,
        duration: Duration,
    ) -> Self {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity,
            duration,
            observed: None,
        }
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(15).max(1)
    }

    /// One attempt to take or renew the Lease. `Ok(true)`: we hold it now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let seconds = self.seconds();
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = (
            holder.clone(),
            spec.renew_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
        );
        let held_for = i64::from(spec.lease_duration_seconds.unwrap_or(seconds).max(1));
        let seen_since = match &self.observed {
            Some((r, at)) if *r == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record, at));
                at
            }
        };
        let expired = seen_since.elapsed().as_secs() as i64 > held_for;
        if holder != self.identity {
            if !holder.is_empty() && !expired {
                return Ok(false);
            }
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until we hold the Lease. `false` if `stop` turned true first.
    pub async fn acquire(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let retry = self.duration / 5;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, lease = %self.name, "became leader");
                    return true;
                }
                Ok(false) => tracing::debug!("lease held by another replica"),
                Err(e) => tracing::warn!(error = %e, "leader election failed (retrying)"),
            }
            tokio::select! {
                _ = stop.changed() => return false,
                _ = tokio::time::sleep(retry) => {}
            }
            if *stop.borrow() {
                return false;
            }
        }
    }

    /// Renews the Lease until `stop` turns true (then releases it) or a renewal fails for
    /// longer than the lease lasts (then returns `false`: leadership is lost).
    pub async fn hold(mut self, mut stop: watch::Receiver<bool>) -> bool {
        let period = self.duration / 3;
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(period) => {}
            }
            if *stop.borrow() {
                self.release().await;
                return true;
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => {
                    tracing::error!("lease taken by another replica");
                    return false;
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
            // Stop writing before another replica may take over.
            if last_ok.elapsed() + period > self.duration {
                tracing::error!("lease not renewed in time");
                return false;
            }
        }
    }

    /// Gives the Lease up so another replica takes over at once.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "could not release the lease");
        } else {
            tracing::info!("lease released");
        }
    }
}
