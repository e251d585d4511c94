//! The proxy's Secret (listener certificates and keys, CA bundles, LLM credentials) straight
//! from the Kubernetes API into a private in-memory directory: a mounted Secret changes only
//! on the kubelet's next pod sync (a minute or more), a watch delivers a rotation at once.
//!
//! The config names these files by path; this module keeps the directory equal to the
//! Secret's data (one file per key, written atomically), and says when it changed so the
//! reloader picks the new files up without waiting for its poll. At start the mounted copy
//! seeds the directory, so the first config finds its files before the API has answered.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long to wait before trying the API again after the client could not start.
const RETRY_API: Duration = Duration::from_secs(5);

/// Keeps `dir` equal to Secret `namespace/name`.
pub struct SecretSync {
    pub namespace: String,
    pub name: String,
    pub dir: PathBuf,
}

/// Whether `key` may name a file in the directory: what Kubernetes allows as a Secret key
/// (`[-._a-zA-Z0-9]+`), minus names starting with a dot (ours for temporary files, and the
/// kubelet's `..data` links in a mounted copy).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Makes `dir` hold exactly `data`: changed files replaced atomically (written aside, then
/// renamed, readable only by this user), files of removed keys deleted. Returns whether
/// anything changed.
pub fn write_dir(dir: &Path, data: &BTreeMap<String, Vec<u8>>) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let mut changed = false;
    for (key, bytes) in data {
        if !valid_key(key) {
            tracing::warn!(key = %key, "Secret key skipped: not a file name");
            continue;
        }
        let path = dir.join(key);
        if std::fs::read(&path).is_ok_and(|have| have == *bytes) {
            continue;
        }
        let tmp = dir.join(format!(".{key}.tmp"));
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        changed = true;
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if valid_key(&name) && !data.contains_key(&name) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            changed = true;
        }
    }
    Ok(changed)
}

/// The files of a mounted Secret (`seed`), by key; symlinks followed, hidden entries skipped.
pub fn read_dir(seed: &Path) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(seed)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !valid_key(&name) {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path)?.is_file() {
            out.insert(name, std::fs::read(&path)?);
        }
    }
    Ok(out)
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .as_ref()
        .map(|d| d.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
        .unwrap_or_default()
}

impl SecretSync {
    /// Follows the Secret until the process ends; `changed` is notified after each write.
    pub async fn run(self, changed: Arc<Notify>) {
        loop {
            let client = match Client::try_default().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "Secret watch through the API unavailable; the mounted copy serves");
                    tokio::time::sleep(RETRY_API).await;
                    continue;
                }
            };
            let api: Api<Secret> = Api::namespaced(client, &self.namespace);
            let cfg = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
            let mut events = watcher::watcher(api, cfg).default_backoff().boxed();
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(Event::Apply(s) | Event::InitApply(s)) => {
                        match write_dir(&self.dir, &secret_data(&s)) {
                            Ok(true) => {
                                tracing::info!(secret = %self.name, "files updated from the Secret");
                                changed.notify_one();
                            }
                            Ok(false) => {}
                            Err(e) => {
                                tracing::error!(error = %e, dir = %self.dir.display(), "cannot write the Secret's files")
                            }
                        }
                    }
                    Ok(_) => {}
                    // The watcher backs off and retries; the files on disk keep serving.
                    Err(e) => tracing::warn!(error = %e, "Secret watch error"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn the_directory_follows_the_secret() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().join("certs");
        let first = data(&[("a.crt", "A1"), ("a.key", "K1")]);
        assert!(write_dir(&dir, &first).unwrap_or(false));
        assert_eq!(read_dir(&dir).ok(), Some(first.clone()));
        // The same data again writes nothing.
        assert!(!write_dir(&dir, &first).unwrap_or(true));
        // A rotation replaces one file and drops a removed key.
        let second = data(&[("a.crt", "A2")]);
        assert!(write_dir(&dir, &second).unwrap_or(false));
        assert_eq!(read_dir(&dir).ok(), Some(second));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("a.crt"))
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn keys_that_are_not_plain_file_names_are_skipped() {
        for bad in ["", "../x", "a/b", ".hidden", "..data", "a b"] {
            assert!(!valid_key(bad), "{bad:?}");
        }
        for good in ["tls.crt", "llm_secret_ns_name_key", "a-b.c"] {
            assert!(valid_key(good), "{good}");
        }
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut d = data(&[("ok", "1")]);
        d.insert("../escape".to_string(), b"x".to_vec());
        assert!(write_dir(tmp.path(), &d).unwrap_or(false));
        assert!(!tmp.path().join("../escape").exists());
        assert_eq!(read_dir(tmp.path()).ok(), Some(data(&[("ok", "1")])));
    }

    /// A mounted Secret: files are links into a hidden `..data` directory.
    #[cfg(unix)]
    #[test]
    fn a_mounted_copy_reads_through_its_links() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let real = tmp.path().join("..2026_12_07");
        std::fs::create_dir(&real).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(real.join("tls.crt"), "C").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("..2026_12_07", tmp.path().join("..data"))
            .unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("..data/tls.crt", tmp.path().join("tls.crt"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_dir(tmp.path()).ok(), Some(data(&[("tls.crt", "C")])));
    }
}
