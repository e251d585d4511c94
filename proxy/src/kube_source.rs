//! The proxy's config straight from its ConfigMap through the Kubernetes API: a watch on that
//! one object delivers a change in well under a second, where a mounted ConfigMap waits for
//! the kubelet's next pod sync (a minute by default). The mounted file stays the fallback:
//! it serves until the API has answered once, and again whenever the watch cannot start.

use crate::reload::{ConfigSource, FileSource};
use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use std::time::Duration;

/// How long the file fallback is polled before the API is tried again.
const RETRY_API: Duration = Duration::from_secs(5);

type Events = BoxStream<'static, Result<Event<ConfigMap>, watcher::Error>>;

pub struct KubeSource {
    namespace: String,
    name: String,
    key: String,
    file: FileSource,
    events: Option<Events>,
    /// Once the API has delivered the config, the file (older by the kubelet's delay) is
    /// never used again while the watch runs.
    api_seen: bool,
    last: Option<Vec<u8>>,
}

/// `NAMESPACE/NAME` of the ConfigMap.
pub fn parse_ref(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("{s:?}: expected NAMESPACE/NAME")),
    }
}

/// The config bytes a ConfigMap carries under `key` (binaryData, or data for plain TOML).
pub fn config_bytes(cm: &ConfigMap, key: &str) -> Option<Vec<u8>> {
    if let Some(b) = cm.binary_data.as_ref().and_then(|d| d.get(key)) {
        return Some(b.0.clone());
    }
    cm.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.as_bytes().to_vec())
}

impl KubeSource {
    pub fn new(namespace: String, name: String, key: String, file: FileSource) -> Self {
        KubeSource {
            namespace,
            name,
            key,
            file,
            events: None,
            api_seen: false,
            last: None,
        }
    }
}

async fn connect(namespace: String, name: String) -> Result<Events, String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client: {e}"))?;
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    Ok(watcher::watcher(api, cfg).default_backoff().boxed())
}

#[async_trait]
impl ConfigSource for KubeSource {
    async fn next(&mut self) -> Option<Result<Vec<u8>, String>> {
        loop {
            if self.events.is_none() {
                match connect(self.namespace.clone(), self.name.clone()).await {
                    Ok(ev) => self.events = Some(ev),
                    Err(e) => {
                        tracing::warn!(error = %e, "config watch through the API unavailable; using the mounted file");
                        if let Ok(update) = tokio::time::timeout(RETRY_API, self.file.next()).await
                        {
                            return update;
                        }
                        continue;
                    }
                }
            }
            let Some(events) = self.events.as_mut() else {
                continue;
            };
            let use_file = !self.api_seen;
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(Event::Apply(cm) | Event::InitApply(cm))) => {
                        let Some(bytes) = config_bytes(&cm, &self.key) else {
                            tracing::warn!(key = %self.key, "the ConfigMap has no config under this key");
                            continue;
                        };
                        self.api_seen = true;
                        if self.last.as_ref() != Some(&bytes) {
                            self.last = Some(bytes.clone());
                            return Some(Ok(bytes));
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        // The watcher retries with backoff by itself; the last good config serves.
                        tracing::warn!(error = %e, "config watch error");
                    }
                    None => {
                        self.events = None;
                        self.api_seen = false;
                    }
                },
                update = self.file.next(), if use_file => return update,
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "ConfigMap {}/{} (key {}) through the API, falling back to {}",
            self.namespace,
            self.name,
            self.key,
            self.file.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn refs_are_namespace_slash_name() {
        assert_eq!(
            parse_ref("ns/gw-citoroute"),
            Ok(("ns".to_string(), "gw-citoroute".to_string()))
        );
        for bad in ["gw", "/gw", "ns/", "a/b/c", ""] {
            assert!(parse_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_comes_from_binary_data_or_data() {
        let mut cm = ConfigMap::default();
        assert_eq!(config_bytes(&cm, "config.toml.gz"), None);
        cm.data = Some([("config.toml".to_string(), "version = 1".to_string())].into());
        assert_eq!(
            config_bytes(&cm, "config.toml"),
            Some(b"version = 1".to_vec())
        );
        cm.binary_data = Some([("config.toml.gz".to_string(), ByteString(vec![31, 139]))].into());
        assert_eq!(config_bytes(&cm, "config.toml.gz"), Some(vec![31, 139]));
    }
}
