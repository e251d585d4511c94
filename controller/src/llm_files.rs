//! The values of the Secret and ConfigMap keys an AI gateway config names as files (API keys,
//! AWS keys, JWKS documents, CA bundles), read on demand because the reflectors keep no
//! values, cached by resourceVersion, and handed to the apply step for the proxy's Secret.

use crate::error::Error;
use crate::watch::Stores;
use citoroute_translate::{FileSource, LlmFile, ObjectKey};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};

/// Values of one object by key, with the resourceVersion they were read at.
type Cached = (String, BTreeMap<String, ByteString>);

/// Reads and caches the objects behind [`LlmFile`]s.
pub struct LlmFileReader {
    client: Client,
    cache: BTreeMap<(FileSource, ObjectKey), Cached>,
}

impl LlmFileReader {
    pub fn new(client: Client) -> LlmFileReader {
        LlmFileReader {
            client,
            cache: BTreeMap::new(),
        }
    }

    /// The data of a Gateway's proxy Secret for `files`, keyed by [`LlmFile::secret_key`].
    /// A file whose object or key vanished since the translation is left out: the proxy then
    /// keeps its last good config until the next reconcile.
    pub async fn data(
        &mut self,
        files: Option<&BTreeSet<LlmFile>>,
        stores: &Stores,
    ) -> Result<BTreeMap<String, ByteString>, Error> {
        let mut out = BTreeMap::new();
        for f in files.into_iter().flatten() {
            if let Some(v) = self.value(f, stores).await? {
                out.insert(f.secret_key(), v);
            }
        }
        Ok(out)
    }

    /// Forgets objects no Gateway needs any more.
    pub fn retain(&mut self, needed: &BTreeSet<LlmFile>) {
        let keep: BTreeSet<(FileSource, ObjectKey)> = needed
            .iter()
            .map(|f| (f.source, (f.namespace.clone(), f.name.clone())))
            .collect();
        self.cache.retain(|k, _| keep.contains(k));
    }

    async fn value(&mut self, f: &LlmFile, stores: &Stores) -> Result<Option<ByteString>, Error> {
        let rv = match f.source {
            FileSource::Secret => stores
                .secrets
                .get(&ObjectRef::new(&f.name).within(&f.namespace))
                .map(|s| s.resource_version()),
            FileSource::ConfigMap => stores
                .referenced_config_maps
                .get(&ObjectRef::new(&f.name).within(&f.namespace))
                .map(|c| c.resource_version()),
        };
        let Some(rv) = rv.map(Option::unwrap_or_default) else {
            return Ok(None); // the translation reports it unresolved
        };
        let key = (f.source, (f.namespace.clone(), f.name.clone()));
        if self.cache.get(&key).is_none_or(|(v, _)| *v != rv) {
            let read = match f.source {
                FileSource::Secret => self.read_secret(&f.namespace, &f.name).await?,
                FileSource::ConfigMap => self.read_config_map(&f.namespace, &f.name).await?,
            };
            match read {
                Some(c) => {
                    self.cache.insert(key.clone(), c);
                }
                None => {
                    self.cache.remove(&key);
                    return Ok(None);
                }
            }
        }
        Ok(self
            .cache
            .get(&key)
            .and_then(|(_, values)| values.get(&f.key).cloned()))
    }

    async fn read_secret(&self, ns: &str, name: &str) -> Result<Option<Cached>, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = api.get_opt(name).await.map_err(|e| Error::Read {
            kind: "Secret",
            namespace: ns.to_string(),
            name: name.to_string(),
            source: Box::new(e),
        })?;
        Ok(secret.map(|s| {
            let mut values = s.data.clone().unwrap_or_default();
            for (k, v) in s.string_data.iter().flatten() {
                values.insert(k.clone(), ByteString(v.clone().into_bytes()));
            }
            (s.resource_version().unwrap_or_default(), values)
        }))
    }

    async fn read_config_map(&self, ns: &str, name: &str) -> Result<Option<Cached>, Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let cm = api.get_opt(name).await.map_err(|e| Error::Read {
            kind: "ConfigMap",
            namespace: ns.to_string(),
            name: name.to_string(),
            source: Box::new(e),
        })?;
        Ok(cm.map(|c| {
            (
                c.resource_version().unwrap_or_default(),
                config_map_values(&c),
            )
        }))
    }
}

/// A ConfigMap's `data` and `binaryData` as bytes.
fn config_map_values(cm: &ConfigMap) -> BTreeMap<String, ByteString> {
    let text = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())));
    let binary = cm
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()));
    text.chain(binary).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_map_text_and_binary_values() {
        let cm = ConfigMap {
            data: Some([("a".to_string(), "text".to_string())].into()),
            binary_data: Some([("b".to_string(), ByteString(vec![0, 1]))].into()),
            ..Default::default()
        };
        let v = config_map_values(&cm);
        assert_eq!(v.get("a").map(|b| b.0.as_slice()), Some(&b"text"[..]));
        assert_eq!(v.get("b").map(|b| b.0.as_slice()), Some(&[0u8, 1][..]));
    }
}
