//! AWS credentials for Bedrock backends that name no credential files: the standard chain of
//! the AWS SDKs (aws-config), in its order: environment variables, the shared credentials and
//! config files (`AWS_PROFILE`, default profile), web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` +
//! `AWS_ROLE_ARN` through STS), the container endpoint (`AWS_CONTAINER_CREDENTIALS_*_URI`), then
//! EC2 instance metadata (off with `AWS_EC2_METADATA_DISABLED=true`).
//!
//! A background loop keeps the current credentials: temporary ones are fetched again well
//! before they expire, static ones every few minutes (a rotated profile file is picked up);
//! after a failure the last good ones stay in use until they expire. Requests only read an
//! `ArcSwap`. One source per region, shared by backends and config generations.

use crate::llm::side;
use arc_swap::ArcSwapOption;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::ProvideCredentials;
use citoroute_llm::Credentials;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

/// How long the first lookup may hold up a config load.
const FIRST_LOOKUP_WAIT: Duration = Duration::from_secs(10);
/// Credentials without an expiry are looked up again this often.
const STATIC_REFRESH: Duration = Duration::from_secs(300);
/// Temporary credentials are renewed this long before they expire (when they last longer).
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// Shortest wait between two lookups.
const MIN_WAIT: Duration = Duration::from_secs(1);
/// Longest wait after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Credentials with their expiry.
struct Current {
    creds: Arc<Credentials>,
    expires: Option<SystemTime>,
}

/// The chain's current credentials for one region.
pub struct AwsCredentialSource {
    region: String,
    current: ArcSwapOption<Current>,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for AwsCredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentialSource")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

fn registry() -> &'static Mutex<HashMap<String, Weak<AwsCredentialSource>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Weak<AwsCredentialSource>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl AwsCredentialSource {
    /// The source for `region`: the running one, or a new one after its first lookup (which
    /// may fail: requests then fail over, and the loop retries).
    pub fn get(region: &str) -> Result<Arc<AwsCredentialSource>, String> {
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(src) = reg.get(region).and_then(Weak::upgrade) {
            return Ok(src);
        }
        let src = Arc::new(AwsCredentialSource {
            region: region.to_string(),
            current: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
        });
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        side::spawn(keep_fresh(Arc::downgrade(&src), first_tx))?;
        let first = side::run_and_wait(first_rx, FIRST_LOOKUP_WAIT)?;
        match (first, src.current.load().as_ref()) {
            (Some(_), Some(c)) => tracing::info!(
                region,
                expires = ?c.expires.map(humantime_secs),
                "AWS credentials from the default chain"
            ),
            _ => tracing::warn!(
                region,
                error = src.last_error().unwrap_or_else(|| "no answer yet".into()),
                "no AWS credentials from the default chain yet; Bedrock requests fail until there are (retrying)"
            ),
        }
        reg.insert(region.to_string(), Arc::downgrade(&src));
        Ok(src)
    }

    /// The credentials to sign with now; `None` when there are none (or they expired).
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        let c = self.current.load();
        let c = c.as_ref()?;
        if c.expires.is_some_and(|e| e <= SystemTime::now()) {
            return None;
        }
        Some(c.creds.clone())
    }

    /// Why the last lookup failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn humantime_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// When to look up again after getting credentials that expire at `expires`.
fn next_lookup(expires: Option<SystemTime>, now: SystemTime) -> Duration {
    let Some(expires) = expires else {
        return STATIC_REFRESH;
    };
    let left = expires.duration_since(now).unwrap_or(Duration::ZERO);
    let wait = if left > EXPIRY_MARGIN * 2 {
        left - EXPIRY_MARGIN
    } else {
        left / 2
    };
    wait.clamp(MIN_WAIT, Duration::from_secs(3600))
}

async fn keep_fresh(src: Weak<AwsCredentialSource>, first: tokio::sync::oneshot::Sender<()>) {
    let Some(region) = src.upgrade().map(|s| s.region.clone()) else {
        return;
    };
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = ProviderConfig::default()
        .with_http_client(http)
        .with_region(Some(aws_config::Region::new(region.clone())));
    let chain = DefaultCredentialsChain::builder()
        .configure(conf)
        .region(aws_config::Region::new(region))
        .build()
        .await;
    let mut first = Some(first);
    let mut backoff = MIN_WAIT;
    loop {
        let result = chain.provide_credentials().await;
        let Some(s) = src.upgrade() else { return };
        let wait = match result {
            Ok(c) => {
                let expires = c.expiry();
                let creds = Credentials::Aws {
                    access_key_id: c.access_key_id().to_string(),
                    secret_access_key: c.secret_access_key().to_string(),
                    session_token: c.session_token().map(str::to_string),
                };
                let changed = s
                    .current
                    .load()
                    .as_ref()
                    .is_none_or(|old| *old.creds != creds);
                if changed {
                    tracing::debug!(region = %s.region, expires = ?expires.map(humantime_secs), "AWS credentials renewed");
                }
                s.current.store(Some(Arc::new(Current {
                    creds: Arc::new(creds),
                    expires,
                })));
                *s.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                backoff = MIN_WAIT;
                next_lookup(expires, SystemTime::now())
            }
            Err(e) => {
                let mut msg = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    msg.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                tracing::warn!(region = %s.region, error = %msg, "AWS credential lookup failed; keeping the last good credentials until they expire");
                *s.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        drop(s);
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_credentials_are_renewed_before_they_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = now + Duration::from_secs(3600);
        assert_eq!(next_lookup(Some(hour), now), Duration::from_secs(3300));
        let soon = now + Duration::from_secs(60);
        assert_eq!(next_lookup(Some(soon), now), Duration::from_secs(30));
        assert_eq!(next_lookup(Some(now), now), MIN_WAIT);
        assert_eq!(next_lookup(None, now), STATIC_REFRESH);
        let day = now + Duration::from_secs(86_400);
        assert_eq!(next_lookup(Some(day), now), Duration::from_secs(3600));
    }
}
