//! Reflectors: one watch per kind the translation reads, each feeding an in-memory store and
//! waking the reconcile loop on every event. [`Stores::snapshot`] turns the stores into the
//! translation's [`Snapshot`].

use citoroute_crds::{Consumer, JwtValidationPolicy, LlmBackend, LlmRoute};
use citoroute_translate::{ConfigMapInfo, SecretInfo, Snapshot};
use futures::StreamExt;
use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::experimental::gatewayclasses::GatewayClass;
use gateway_api::experimental::gateways::Gateway;
use gateway_api::experimental::grpcroutes::GrpcRoute;
use gateway_api::experimental::httproutes::HttpRoute;
use gateway_api::experimental::referencegrants::ReferenceGrant;
use gateway_api::experimental::tlsroutes::TlsRoute;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use tokio::sync::Notify;

/// Label every object the controller creates carries; the ConfigMap reflector selects on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "citoroute-controller";

/// Annotation the Secret reflector sets (in memory only) when a TLS Secret's certificate or
/// key does not parse.
const CERT_PROBLEM: &str = "citoroute.io/certificate-problem";

/// In-memory annotations the Secret and ConfigMap reflectors set before dropping values: the
/// keys holding a JWKS document, and (ConfigMaps) the keys holding PEM certificates.
const JWKS_KEYS: &str = "citoroute.io/jwks-keys";
const PEM_CERTIFICATE_KEYS: &str = "citoroute.io/pem-certificate-keys";

/// The reflector stores. Optional kinds are `None` when their CRD is not installed.
#[derive(Clone)]
pub struct Stores {
    pub gateway_classes: Store<GatewayClass>,
    pub gateways: Store<Gateway>,
    pub http_routes: Store<HttpRoute>,
    pub grpc_routes: Option<Store<GrpcRoute>>,
    pub tls_routes: Option<Store<TlsRoute>>,
    pub reference_grants: Option<Store<ReferenceGrant>>,
    pub backend_tls_policies: Option<Store<BackendTlsPolicy>>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    /// Secrets with their values removed: only names of keys remain (plus the in-memory
    /// certificate-problem annotation). The apply step reads the few Secrets a proxy needs.
    pub secrets: Store<Secret>,
    pub namespaces: Store<Namespace>,
    /// The ConfigMaps this controller wrote (to skip unchanged config writes).
    pub config_maps: Store<ConfigMap>,
    /// The proxy Deployments this controller wrote (to skip unchanged object writes).
    pub deployments: Store<Deployment>,
    /// Every ConfigMap, values removed (key names and the JWKS/certificate checks remain),
    /// for the JWKS documents and CA bundles the `citoroute.io` objects name.
    pub referenced_config_maps: Store<ConfigMap>,
    /// The `citoroute.io` kinds; `None` when their CRDs are not installed.
    pub llm_backends: Option<Store<LlmBackend>>,
    pub llm_routes: Option<Store<LlmRoute>>,
    pub consumers: Option<Store<Consumer>>,
    pub jwt_policies: Option<Store<JwtValidationPolicy>>,
}

/// Starts one reflector task; every event (including the initial list) wakes `notify`.
fn reflect<K>(api: Api<K>, cfg: watcher::Config, notify: Arc<Notify>, strip: fn(&mut K)) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream = watcher(api, cfg)
        .default_backoff()
        .modify(strip)
        .reflect(writer)
        .boxed();
    tokio::spawn(async move {
        let mut stream = stream;
        let mut seen = Seen::default();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    if seen.matters(&ev) {
                        notify.notify_one();
                    }
                }
                Err(e) => tracing::warn!(%kind, error = %e, "watch error (retrying)"),
            }
        }
    });
    reader
}

/// What a change of an object must touch to need a reconcile. Objects with a
/// `metadata.generation` (our status-bearing kinds, Deployments) count only when it or their
/// labels or annotations change: a status write, ours included, needs none (the translation
/// never reads a status, and the store behind the status writer is updated regardless).
/// Without this, every status write woke a reconcile that changed nothing but held back the
/// next real one. Objects without a generation (Services, EndpointSlices, Secrets,
/// ConfigMaps, Namespaces) count on every change, except the proxy objects we write ourselves
/// (only their deletion counts).
#[derive(Default)]
struct Seen {
    signatures: std::collections::HashMap<(Option<String>, String), u64>,
}

fn signature(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<u64> {
    use std::hash::Hasher;
    let generation = meta.generation?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    generation.hash(&mut h);
    meta.labels.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut h);
    Some(h.finish())
}

impl Seen {
    fn matters<K: Resource>(&mut self, ev: &watcher::Event<K>) -> bool {
        match ev {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                let meta = o.meta();
                // Our own proxy objects change when we write them; a deletion still counts.
                if meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(MANAGED_BY_LABEL))
                    .is_some_and(|v| v == MANAGED_BY)
                {
                    return false;
                }
                let key = (
                    meta.namespace.clone(),
                    meta.name.clone().unwrap_or_default(),
                );
                match signature(meta) {
                    Some(sig) => self.signatures.insert(key, sig) != Some(sig),
                    None => true,
                }
            }
            watcher::Event::Delete(o) => {
                let meta = o.meta();
                self.signatures.remove(&(
                    meta.namespace.clone(),
                    meta.name.clone().unwrap_or_default(),
                ));
                true
            }
            watcher::Event::Init | watcher::Event::InitDone => true,
        }
    }
}

/// Drops what the controller never reads and what must not sit in memory: managed fields
/// everywhere, and Secret values (replaced by empty values under the same keys, after the
/// certificate check).
fn strip_managed_fields<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

fn strip_secret(s: &mut Secret) {
    s.metadata.managed_fields = None;
    let jwks_keys = citoroute_translate::secret_jwks_keys(s);
    annotate_keys(&mut s.metadata, JWKS_KEYS, jwks_keys);
    if s.type_.as_deref() == Some("kubernetes.io/tls") {
        let data = s.data.as_ref();
        let problem = certificate_problem(
            data.and_then(|d| d.get("tls.crt")).map(|b| b.0.as_slice()),
            data.and_then(|d| d.get("tls.key")).map(|b| b.0.as_slice()),
        );
        if let Some(p) = problem {
            s.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(CERT_PROBLEM.to_string(), p);
        }
    }
    if let Some(d) = s.data.as_mut() {
        for v in d.values_mut() {
            *v = ByteString(Vec::new());
        }
    }
    s.string_data = None;
}

/// Keeps only key names of a ConfigMap, after noting which keys hold a JWKS document or PEM
/// certificates.
fn strip_config_map(cm: &mut ConfigMap) {
    cm.metadata.managed_fields = None;
    if let Some(info) = ConfigMapInfo::from_config_map(cm) {
        annotate_keys(&mut cm.metadata, JWKS_KEYS, info.jwks_keys);
        annotate_keys(
            &mut cm.metadata,
            PEM_CERTIFICATE_KEYS,
            info.certificate_keys,
        );
    }
    if let Some(d) = cm.data.as_mut() {
        for v in d.values_mut() {
            v.clear();
        }
    }
    if let Some(d) = cm.binary_data.as_mut() {
        for v in d.values_mut() {
            *v = ByteString(Vec::new());
        }
    }
}

/// Records a set of keys in an annotation (keys never contain a comma).
fn annotate_keys(
    meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    annotation: &str,
    keys: std::collections::BTreeSet<String>,
) {
    if keys.is_empty() {
        return;
    }
    let list: Vec<String> = keys.into_iter().collect();
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(annotation.to_string(), list.join(","));
}

/// The keys an [`annotate_keys`] annotation lists.
fn annotated_keys(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    annotation: &str,
) -> std::collections::BTreeSet<String> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(annotation))
        .map(|v| {
            v.split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Why a `tls.crt`/`tls.key` pair is unusable, if it is: the certificate must hold at least
/// one PEM certificate and the key one PEM private key.
pub fn certificate_problem(crt: Option<&[u8]>, key: Option<&[u8]>) -> Option<String> {
    let (Some(crt), Some(key)) = (crt, key) else {
        return None; // missing keys are the translation's to report
    };
    let mut reader = crt;
    let mut certs = 0;
    for item in rustls_pemfile::certs(&mut reader) {
        match item {
            Ok(_) => certs += 1,
            Err(e) => return Some(format!("tls.crt does not parse: {e}")),
        }
    }
    if certs == 0 {
        return Some("tls.crt holds no PEM certificate".to_string());
    }
    let mut reader = key;
    match rustls_pemfile::private_key(&mut reader) {
        Ok(Some(_)) => None,
        Ok(None) => Some("tls.key holds no PEM private key".to_string()),
        Err(e) => Some(format!("tls.key does not parse: {e}")),
    }
}

/// Whether the API server serves `K` (its CRD may be missing).
async fn served<K>(api: &Api<K>) -> bool
where
    K: Resource + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            tracing::warn!(
                kind = %K::kind(&K::DynamicType::default()),
                "not served by the API server (CRD missing?): not watched"
            );
            false
        }
        // Any other error: watch it anyway, the watcher retries.
        Err(_) => true,
    }
}

async fn optional<K>(client: &Client, notify: &Arc<Notify>) -> Option<Store<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let api = Api::<K>::all(client.clone());
    if served(&api).await {
        Some(reflect(
            api,
            watcher::Config::default().any_semantic(),
            notify.clone(),
            strip_managed_fields::<K>,
        ))
    } else {
        None
    }
}

impl Stores {
    /// Starts every reflector. Call [`Stores::wait_ready`] before the first snapshot.
    pub async fn start(client: &Client, notify: Arc<Notify>) -> Stores {
        let cfg = || watcher::Config::default().any_semantic();
        Stores {
            gateway_classes: reflect(
                Api::all(client.clone()),
                cfg(),
                notify.clone(),
                strip_managed_fields::<GatewayClass>,
            ),
            gateways: reflect(
                Api::all(client.clone()),
                cfg(),
                notify.clone(),
                strip_managed_fields::<Gateway>,
            ),
            http_routes: reflect(
                Api::all(client.clone()),
                cfg(),
                notify.clone(),
                strip_managed_fields::<HttpRoute>,
            ),
            grpc_routes: optional(client, &notify).await,
            tls_routes: optional(client, &notify).await,
            reference_grants: optional(client, &notify).await,
            backend_tls_policies: optional(client, &notify).await,
            services: reflect(
                Api::all(client.clone()),
                cfg(),
                notify.clone(),
                strip_managed_fields::<Service>,
            ),
            endpoint_slices: reflect(
                Api::all(client.clone()),
                cfg(),
                notify.clone(),
                strip_managed_fields::<EndpointSlice>,
            ),
            secrets: reflect(
                Api::all(client.clone()),
                cfg(),
                notify.clone(),
                strip_secret,
            ),
            namespaces: reflect(
                Api::all(client.clone()),
                cfg(),
                notify.clone(),
                strip_managed_fields::<Namespace>,
            ),
            config_maps: reflect(
                Api::all(client.clone()),
                cfg().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
                notify.clone(),
                strip_managed_fields::<ConfigMap>,
            ),
            deployments: reflect(
                Api::all(client.clone()),
                cfg().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
                notify.clone(),
                strip_managed_fields::<Deployment>,
            ),
            referenced_config_maps: reflect(
                Api::all(client.clone()),
                cfg(),
                notify.clone(),
                strip_config_map,
            ),
            llm_backends: optional(client, &notify).await,
            llm_routes: optional(client, &notify).await,
            consumers: optional(client, &notify).await,
            jwt_policies: optional(client, &notify).await,
        }
    }

    /// Waits until every store has its initial list: a snapshot before that would produce
    /// partial configs and wrong statuses.
    pub async fn wait_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.gateway_classes.wait_until_ready().await?;
        self.gateways.wait_until_ready().await?;
        self.http_routes.wait_until_ready().await?;
        if let Some(s) = &self.grpc_routes {
            s.wait_until_ready().await?;
        }
        if let Some(s) = &self.tls_routes {
            s.wait_until_ready().await?;
        }
        if let Some(s) = &self.reference_grants {
            s.wait_until_ready().await?;
        }
        if let Some(s) = &self.backend_tls_policies {
            s.wait_until_ready().await?;
        }
        self.services.wait_until_ready().await?;
        self.endpoint_slices.wait_until_ready().await?;
        self.secrets.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        self.config_maps.wait_until_ready().await?;
        self.deployments.wait_until_ready().await?;
        self.referenced_config_maps.wait_until_ready().await?;
        if let Some(s) = &self.llm_backends {
            s.wait_until_ready().await?;
        }
        if let Some(s) = &self.llm_routes {
            s.wait_until_ready().await?;
        }
        if let Some(s) = &self.consumers {
            s.wait_until_ready().await?;
        }
        if let Some(s) = &self.jwt_policies {
            s.wait_until_ready().await?;
        }
        Ok(())
    }

    /// What the translation reads, copied out of the stores.
    pub fn snapshot(&self) -> Snapshot {
        fn all<K: Resource + Clone>(s: &Store<K>) -> Vec<K>
        where
            K::DynamicType: Eq + Hash + Clone,
        {
            s.state().iter().map(|o| (**o).clone()).collect()
        }
        fn opt<K: Resource + Clone>(s: &Option<Store<K>>) -> Vec<K>
        where
            K::DynamicType: Eq + Hash + Clone,
        {
            s.as_ref().map(all).unwrap_or_default()
        }
        let secrets = self
            .secrets
            .state()
            .iter()
            .filter_map(|s| {
                let mut info = SecretInfo::from_secret(s)?;
                info.certificate_problem = s
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CERT_PROBLEM))
                    .cloned();
                info.jwks_keys = annotated_keys(&s.metadata, JWKS_KEYS);
                Some(info)
            })
            .collect();
        let config_maps = self
            .referenced_config_maps
            .state()
            .iter()
            .filter_map(|cm| {
                let mut info = ConfigMapInfo::from_config_map(cm)?;
                info.jwks_keys = annotated_keys(&cm.metadata, JWKS_KEYS);
                info.certificate_keys = annotated_keys(&cm.metadata, PEM_CERTIFICATE_KEYS);
                Some(info)
            })
            .collect();
        Snapshot {
            gateway_classes: all(&self.gateway_classes),
            gateways: all(&self.gateways),
            http_routes: all(&self.http_routes),
            grpc_routes: opt(&self.grpc_routes),
            tls_routes: opt(&self.tls_routes),
            reference_grants: opt(&self.reference_grants),
            services: all(&self.services),
            endpoint_slices: all(&self.endpoint_slices),
            secrets,
            namespaces: all(&self.namespaces),
            config_maps,
            llm_backends: opt(&self.llm_backends),
            llm_routes: opt(&self.llm_routes),
            consumers: opt(&self.consumers),
            jwt_policies: opt(&self.jwt_policies),
            backend_tls_policies: opt(&self.backend_tls_policies),
            ..Snapshot::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(generation: Option<i64>, status: &str) -> HttpRoute {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "ns", "generation": generation},
            "spec": {},
            "status": {"parents": [{"parentRef": {"name": status}, "controllerName": "x", "conditions": []}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn status_writes_wake_no_reconcile_but_spec_changes_do() {
        let mut seen = Seen::default();
        assert!(seen.matters(&watcher::Event::Apply(route(Some(1), "a"))));
        // Only the status changed (our own write): nothing to reconcile.
        assert!(!seen.matters(&watcher::Event::Apply(route(Some(1), "b"))));
        assert!(seen.matters(&watcher::Event::Apply(route(Some(2), "b"))));
        let mut labelled = route(Some(2), "b");
        labelled.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
        assert!(seen.matters(&watcher::Event::Apply(labelled)));
        assert!(seen.matters(&watcher::Event::Delete(route(Some(2), "b"))));
        assert!(seen.matters(&watcher::Event::<HttpRoute>::InitDone));
    }

    #[test]
    fn objects_without_generation_always_count_and_ours_only_when_deleted() {
        let mut seen = Seen::default();
        let svc = Service::default();
        assert!(seen.matters(&watcher::Event::Apply(svc.clone())));
        assert!(seen.matters(&watcher::Event::Apply(svc)));
        let mut ours = ConfigMap::default();
        ours.metadata.labels =
            Some([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())].into());
        assert!(!seen.matters(&watcher::Event::Apply(ours.clone())));
        assert!(seen.matters(&watcher::Event::Delete(ours)));
    }

    #[test]
    fn certificate_problems() {
        assert_eq!(certificate_problem(None, None), None);
        assert!(certificate_problem(Some(b"junk"), Some(b"junk")).is_some());
        let crt = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(
            certificate_problem(Some(crt), Some(b"nope")).is_some_and(|p| p.contains("tls.key"))
        );
    }

    #[test]
    fn config_map_values_are_stripped_after_the_checks() {
        let jwks = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let mut cm = ConfigMap {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("c".to_string()),
                namespace: Some("ns".to_string()),
                ..Default::default()
            },
            data: Some(
                [
                    ("jwks.json".to_string(), jwks.to_string()),
                    ("ca.crt".to_string(), pem.to_string()),
                    ("other".to_string(), "x".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        strip_config_map(&mut cm);
        assert!(cm.data.iter().flatten().all(|(_, v)| v.is_empty()));
        let keys = |a| {
            annotated_keys(&cm.metadata, a)
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(JWKS_KEYS), ["jwks.json"]);
        assert_eq!(keys(PEM_CERTIFICATE_KEYS), ["ca.crt"]);
    }

    #[test]
    fn secret_values_are_stripped() {
        let mut s = Secret {
            type_: Some("kubernetes.io/tls".to_string()),
            data: Some(
                [
                    ("tls.crt".to_string(), ByteString(b"x".to_vec())),
                    ("tls.key".to_string(), ByteString(b"y".to_vec())),
                ]
                .into(),
            ),
            ..Default::default()
        };
        s.data.get_or_insert_with(Default::default).insert(
            "jwks".to_string(),
            ByteString(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.to_vec()),
        );
        strip_secret(&mut s);
        assert_eq!(
            annotated_keys(&s.metadata, JWKS_KEYS)
                .into_iter()
                .collect::<Vec<_>>(),
            ["jwks"]
        );
        let data = s.data.unwrap_or_default();
        assert_eq!(data.len(), 3);
        assert!(data.values().all(|v| v.0.is_empty()));
        assert!(
            s.metadata
                .annotations
                .is_some_and(|a| a.contains_key(CERT_PROBLEM))
        );
    }
}
