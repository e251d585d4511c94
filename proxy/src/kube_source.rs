//! The proxy's config straight from its ConfigMap through the Kubernetes API: a watch on that
//! one object delivers a change in well under a second, where a mounted ConfigMap waits for
//! the kubelet's next pod sync (a minute by default). The mounted file stays the fallback:
//! it serves until the API has answered once, and again whenever the watch cannot start.
//!
//! A config too large for one ConfigMap comes in parts (see `citoroute_config::configmap`):
//! the main ConfigMap announces them, and they are read with one GET each when it changes.

use crate::reload::{ConfigSource, FileSource};
use async_trait::async_trait;
use citoroute_config::configmap::{self, Part};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use std::time::Duration;

/// How long the file fallback is polled before the API is tried again.
const RETRY_API: Duration = Duration::from_secs(5);
/// How soon parts that did not join (not all written yet) are read again.
const RETRY_PARTS: Duration = Duration::from_secs(1);

type Events = BoxStream<'static, Result<Event<ConfigMap>, watcher::Error>>;

pub struct KubeSource {
    namespace: String,
    name: String,
    key: String,
    file: FileSource,
    events: Option<Events>,
    api: Option<Api<ConfigMap>>,
    /// A split config whose parts did not join yet: read them again soon.
    pending: Option<ConfigMap>,
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
            api: None,
            pending: None,
            api_seen: false,
            last: None,
        }
    }
}

async fn connect(namespace: &str, name: &str) -> Result<(Api<ConfigMap>, Events), String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client: {e}"))?;
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher::watcher(api.clone(), cfg).default_backoff().boxed();
    Ok((api, events))
}

/// What a main ConfigMap holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Content {
    /// The whole config.
    Whole(Vec<u8>),
    /// A config in this many parts, with this hash.
    Parts { count: usize, hash: String },
}

/// Reads a main ConfigMap: the whole config under `key`, or the announcement of its parts.
pub fn content(cm: &ConfigMap, key: &str) -> Result<Content, String> {
    let ann = cm.metadata.annotations.as_ref();
    let parts = configmap::parts_count(
        ann.and_then(|a| a.get(configmap::PARTS_ANNOTATION))
            .map(String::as_str),
    )
    .map_err(|e| e.to_string())?;
    match parts {
        Some(count) => {
            let hash = ann
                .and_then(|a| a.get(configmap::HASH_ANNOTATION))
                .cloned()
                .ok_or_else(|| format!("a split config without {}", configmap::HASH_ANNOTATION))?;
            Ok(Content::Parts { count, hash })
        }
        None => config_bytes(cm, key)
            .map(Content::Whole)
            .ok_or_else(|| format!("the ConfigMap has no config under key {key}")),
    }
}

/// One part as its ConfigMap holds it (`None`: no part bytes).
pub fn part_of(cm: &ConfigMap) -> Option<Part> {
    let ann = cm.metadata.annotations.as_ref();
    Some(Part {
        hash: ann
            .and_then(|a| a.get(configmap::HASH_ANNOTATION))
            .cloned()
            .unwrap_or_default(),
        index: ann
            .and_then(|a| a.get(configmap::PART_INDEX_ANNOTATION))
            .and_then(|i| i.parse().ok()),
        bytes: cm
            .binary_data
            .as_ref()
            .and_then(|d| d.get(configmap::PART_KEY))?
            .0
            .clone(),
    })
}

/// Reads the `count` parts of config `hash` from the API and joins them.
async fn read_parts(
    api: &Api<ConfigMap>,
    base: &str,
    count: usize,
    hash: &str,
) -> Result<Vec<u8>, String> {
    let mut parts = Vec::with_capacity(count);
    for i in 0..count {
        let name = configmap::part_name(base, i);
        let cm = api
            .get_opt(&name)
            .await
            .map_err(|e| format!("cannot read ConfigMap {name}: {e}"))?;
        parts.push(cm.as_ref().and_then(part_of));
    }
    configmap::join(hash, &parts).map_err(|e| e.to_string())
}

/// The config as the API holds it now (whole or joined from its parts): for a proxy starting
/// from a split config, which has no mounted file.
pub async fn fetch(namespace: &str, name: &str, key: &str) -> Result<Vec<u8>, String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client: {e}"))?;
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let cm = api
        .get(name)
        .await
        .map_err(|e| format!("cannot read ConfigMap {namespace}/{name}: {e}"))?;
    match content(&cm, key)? {
        Content::Whole(b) => Ok(b),
        Content::Parts { count, hash } => read_parts(&api, name, count, &hash).await,
    }
}

impl KubeSource {
    /// The bytes of a main ConfigMap's config, joining parts when it is split. `Ok(None)`:
    /// nothing new.
    async fn resolve(&mut self, cm: ConfigMap) -> Result<Option<Vec<u8>>, String> {
        let bytes = match content(&cm, &self.key)? {
            Content::Whole(b) => b,
            Content::Parts { count, hash } => {
                let Some(api) = self.api.as_ref() else {
                    return Err("no API client for the parts".to_string());
                };
                match read_parts(api, &self.name, count, &hash).await {
                    Ok(b) => b,
                    Err(e) => {
                        self.pending = Some(cm);
                        return Err(e);
                    }
                }
            }
        };
        self.pending = None;
        self.api_seen = true;
        if self.last.as_ref() == Some(&bytes) {
            return Ok(None);
        }
        self.last = Some(bytes.clone());
        Ok(Some(bytes))
    }
}

#[async_trait]
impl ConfigSource for KubeSource {
    async fn next(&mut self) -> Option<Result<Vec<u8>, String>> {
        loop {
            if self.events.is_none() {
                match connect(&self.namespace, &self.name).await {
                    Ok((api, ev)) => {
                        self.api = Some(api);
                        self.events = Some(ev);
                    }
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
            let retry_parts = self.pending.is_some();
            let cm = tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(Event::Apply(cm) | Event::InitApply(cm))) => cm,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        // The watcher retries with backoff by itself; the last good config serves.
                        tracing::warn!(error = %e, "config watch error");
                        continue;
                    }
                    None => {
                        self.events = None;
                        self.api_seen = false;
                        continue;
                    }
                },
                update = self.file.next(), if use_file => return update,
                _ = tokio::time::sleep(RETRY_PARTS), if retry_parts => match self.pending.take() {
                    Some(cm) => cm,
                    None => continue,
                },
            };
            match self.resolve(cm).await {
                Ok(Some(bytes)) => return Some(Ok(bytes)),
                Ok(None) => {}
                // Parts not all written yet: tried again shortly, or on the next change.
                Err(e) => tracing::warn!(error = %e, "config not read from the API yet"),
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

    fn annotated(pairs: &[(&str, &str)]) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.annotations = Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        cm
    }

    #[test]
    fn a_main_config_map_holds_the_config_or_announces_its_parts() {
        let mut whole = annotated(&[(configmap::HASH_ANNOTATION, "h")]);
        whole.binary_data = Some([("k".to_string(), ByteString(vec![1, 2]))].into());
        assert_eq!(content(&whole, "k"), Ok(Content::Whole(vec![1, 2])));
        assert!(content(&whole, "other").is_err());
        let split = annotated(&[
            (configmap::HASH_ANNOTATION, "h"),
            (configmap::PARTS_ANNOTATION, "3"),
        ]);
        assert_eq!(
            content(&split, "k"),
            Ok(Content::Parts {
                count: 3,
                hash: "h".to_string()
            })
        );
        let unhashed = annotated(&[(configmap::PARTS_ANNOTATION, "3")]);
        assert!(content(&unhashed, "k").is_err());
        let bad = annotated(&[
            (configmap::HASH_ANNOTATION, "h"),
            (configmap::PARTS_ANNOTATION, "lots"),
        ]);
        assert!(content(&bad, "k").is_err());
    }

    #[test]
    fn a_part_carries_its_hash_index_and_bytes() {
        let mut cm = annotated(&[
            (configmap::HASH_ANNOTATION, "h"),
            (configmap::PART_INDEX_ANNOTATION, "2"),
        ]);
        assert_eq!(part_of(&cm), None);
        cm.binary_data = Some([(configmap::PART_KEY.to_string(), ByteString(vec![9]))].into());
        assert_eq!(
            part_of(&cm),
            Some(Part {
                hash: "h".to_string(),
                index: Some(2),
                bytes: vec![9]
            })
        );
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
