//! Server-Side Apply of one proxy per Gateway, in the Gateway's namespace, with one field
//! manager: the config ConfigMap (gzip TOML), the listener certificate Secret, a
//! ServiceAccount with a Role that may read only those two objects, the Deployment and the
//! Service. Every object is owned by its Gateway (deleting the Gateway removes them all) and
//! carries the Gateway's `spec.infrastructure` labels and annotations.
//!
//! Writes are skipped when nothing changed: the ConfigMap by its content-hash annotation (read
//! from the ConfigMap reflector, so a restart writes nothing), the other objects by a hash of
//! everything applied for the Gateway, kept in an annotation of the Deployment (read from the
//! Deployment reflector, so a restart writes nothing either). Every few minutes a resync
//! re-applies everything once (repairing hand edits; the API server ignores applies that
//! change nothing). A config change never touches the Deployment's pod template: only a
//! change of listener ports rolls pods.

use crate::error::Error;
use crate::metrics::Metrics;
use crate::watch::{MANAGED_BY, MANAGED_BY_LABEL, Stores};
use citoroute_config::{ProxyConfig, configmap};
use citoroute_translate::{CERT_DIR, ObjectKey, certificate_keys};
use gateway_api::experimental::gateways::Gateway;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, Secret, SecretVolumeSource, SecurityContext,
    Service, ServiceAccount, ServicePort, ServiceSpec, Sysctl, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;

/// The one field manager of every write.
pub const FIELD_MANAGER: &str = "citoroute-controller";
/// Annotation on the ConfigMap: SHA-256 of the TOML it carries.
pub const CONFIG_HASH: &str = configmap::HASH_ANNOTATION;
/// Deployment annotation: hash of every object applied for the Gateway except the ConfigMap.
pub const OBJECTS_HASH: &str = "citoroute.io/objects-hash";
/// Pod-template annotation: hash of the listener ports (a change rolls the pods).
pub const PORTS_HASH: &str = "citoroute.io/listener-ports-hash";
/// The key of the compressed config in the ConfigMap's `binaryData`.
pub const CONFIG_KEY: &str = configmap::CONFIG_KEY;
/// Where the config ConfigMap is mounted in the proxy container.
pub const CONFIG_DIR: &str = "/etc/citoroute/config";
/// Where the proxy's Secret is mounted: the seed of [`CERT_DIR`], which the proxy keeps
/// equal to the Secret through the API.
pub const CERT_SEED_DIR: &str = "/etc/citoroute/certs-seed";
/// The proxy's admin port (`/healthz`, `/readyz`, `/metrics`).
pub const ADMIN_PORT: u16 = 9091;

/// Applies proxies; remembers what it applied.
pub struct Applier {
    client: Client,
    image: String,
    metrics: Arc<Metrics>,
    /// Per Gateway: hash of the objects last applied and the Service address they gave.
    applied: BTreeMap<ObjectKey, (String, Option<String>)>,
    /// Listener certificates read for proxies, by Secret, with the resourceVersion read.
    certs: BTreeMap<ObjectKey, (String, BTreeMap<String, ByteString>)>,
    /// Re-apply everything in the next reconcile, whatever the hashes say.
    force: bool,
    /// Largest part of a config split over several ConfigMaps.
    max_part: usize,
}

/// What one apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The proxy Service's ClusterIP.
    pub address: Option<String>,
    /// The config written, if it changed: its hash (12 hex digits) and its number of parts.
    pub config_written: Option<(String, usize)>,
}

/// The names of a Gateway's proxy objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// ConfigMap, ServiceAccount, Role, RoleBinding, Deployment and Service.
    pub base: String,
    /// The listener certificate Secret.
    pub certs: String,
}

impl Names {
    /// `<gw>-citoroute` and `<gw>-citoroute-certs`, made valid as Service names (a DNS-1035
    /// label: at most 63 characters, starting with a letter, no dots).
    pub fn of(gateway: &str) -> Names {
        let mut clean: String = gateway
            .chars()
            .map(|c| if c == '.' { '-' } else { c })
            .collect();
        if !clean.starts_with(|c: char| c.is_ascii_lowercase()) {
            clean.insert_str(0, "gw-");
        }
        // 63 minus "-citoroute-certs" (16) leaves 47 for the Gateway part. A name that had
        // to change gets a hash of the original, so `a.b` and `a-b` stay apart.
        if clean.len() > 47 || clean != gateway {
            let h = hex(&Sha256::digest(gateway.as_bytes()))[..8].to_string();
            clean.truncate(38);
            let trimmed = clean.trim_end_matches('-').to_string();
            clean = format!("{trimmed}-{h}");
        }
        Names {
            base: format!("{clean}-citoroute"),
            certs: format!("{clean}-citoroute-certs"),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The config as the proxy in a pod runs it: the admin listener on all addresses, so the
/// kubelet's probes reach it.
pub fn pod_config(cfg: &ProxyConfig) -> ProxyConfig {
    let mut cfg = cfg.clone();
    cfg.runtime.admin_address = format!("0.0.0.0:{ADMIN_PORT}");
    cfg
}

/// The distinct listener ports of a config, sorted.
pub fn listener_ports(cfg: &ProxyConfig) -> BTreeSet<u16> {
    cfg.listeners.iter().map(|l| l.port).collect()
}

/// Hash of the listener ports: the only input of the pod template that changes with the config.
pub fn ports_hash(ports: &BTreeSet<u16>) -> String {
    let text: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    sha256_hex(text.join(",").as_bytes())[..16].to_string()
}

/// Everything applied for one Gateway, except the ConfigMap.
#[derive(Debug, Serialize)]
pub struct Objects {
    pub cert_secret: Secret,
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub deployment: Deployment,
    pub service: Service,
}

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The metadata every proxy object shares.
fn meta(
    gw: &Gateway,
    name: &str,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> ObjectMeta {
    let infra = gw.spec.infrastructure.as_ref();
    let mut labels = infra.and_then(|i| i.labels.clone()).unwrap_or_default();
    labels.extend(selector_labels(&gw.name_any()));
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    let annotations = infra
        .and_then(|i| i.annotations.clone())
        .unwrap_or_default();
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: gw.namespace(),
        labels: Some(labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

fn selector_labels(gateway: &str) -> BTreeMap<String, String> {
    // The Gateway name goes into a label value: at most 63 characters.
    let value: String = if gateway.len() > 63 {
        sha256_hex(gateway.as_bytes())[..16].to_string()
    } else {
        gateway.to_string()
    };
    let mut m = string_map(&[("app.kubernetes.io/name", "citoroute-proxy")]);
    m.insert("gateway.networking.k8s.io/gateway-name".to_string(), value);
    m
}

/// The ConfigMaps carrying the compressed config: the main one, and the parts when the config
/// is too large for one object (see [`configmap`]). Pure.
pub fn config_maps(
    gw: &Gateway,
    names: &Names,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    toml: &str,
    max_part: usize,
) -> (ConfigMap, Vec<ConfigMap>) {
    let hash = sha256_hex(toml.as_bytes());
    let gz = citoroute_config::compress(toml.as_bytes());
    let chunks = configmap::split(&gz, max_part);
    let with_annotations = |name: &str, extra: &[(&str, String)]| {
        let mut metadata = meta(gw, name, owner);
        let a = metadata.annotations.get_or_insert_with(Default::default);
        a.insert(CONFIG_HASH.to_string(), hash.clone());
        for (k, v) in extra {
            a.insert(k.to_string(), v.clone());
        }
        metadata
    };
    if chunks.len() == 1 {
        let main = ConfigMap {
            metadata: with_annotations(&names.base, &[]),
            binary_data: Some([(CONFIG_KEY.to_string(), ByteString(gz.clone()))].into()),
            ..Default::default()
        };
        return (main, Vec::new());
    }
    let parts = chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| ConfigMap {
            metadata: with_annotations(
                &configmap::part_name(&names.base, i),
                &[(configmap::PART_INDEX_ANNOTATION, i.to_string())],
            ),
            binary_data: Some(
                [(configmap::PART_KEY.to_string(), ByteString(chunk.to_vec()))].into(),
            ),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let main = ConfigMap {
        metadata: with_annotations(
            &names.base,
            &[(configmap::PARTS_ANNOTATION, parts.len().to_string())],
        ),
        // An empty map, so Server-Side Apply drops a whole config left from before.
        binary_data: Some(BTreeMap::new()),
        ..Default::default()
    };
    (main, parts)
}

/// The part ConfigMaps of `base` in the store whose index is `keep` or more: left over from
/// a config that had more parts.
fn stale_parts(stores: &Stores, ns: &str, base: &str, keep: usize) -> Vec<String> {
    let prefix = format!("{base}-part-");
    stores
        .config_maps
        .state()
        .iter()
        .filter(|cm| cm.namespace().as_deref() == Some(ns))
        .map(|cm| cm.name_any())
        .filter(|name| {
            name.strip_prefix(&prefix)
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i >= keep)
        })
        .collect()
}

/// Builds every object of a Gateway's proxy except the ConfigMap. Pure.
pub fn objects(
    gw: &Gateway,
    names: &Names,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    cfg: &ProxyConfig,
    image: &str,
    cert_data: BTreeMap<String, ByteString>,
    config_parts: usize,
) -> Objects {
    let gw_name = gw.name_any();
    let m = |name: &str| meta(gw, name, owner);
    let ports = listener_ports(cfg);

    let cert_secret = Secret {
        metadata: m(&names.certs),
        type_: Some("Opaque".to_string()),
        data: Some(cert_data),
        ..Default::default()
    };
    let service_account = ServiceAccount {
        metadata: m(&names.base),
        ..Default::default()
    };
    let verbs = vec!["get".to_string(), "list".to_string(), "watch".to_string()];
    let mut role = Role {
        metadata: m(&names.base),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["configmaps".to_string()]),
                resource_names: Some(vec![names.base.clone()]),
                verbs: verbs.clone(),
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["secrets".to_string()]),
                resource_names: Some(vec![names.certs.clone()]),
                verbs,
                ..Default::default()
            },
        ]),
    };
    // The parts of a split config are read once the main ConfigMap announces them. (Never
    // a rule without names: that would grant every ConfigMap of the namespace.)
    if config_parts > 0
        && let Some(rules) = role.rules.as_mut()
    {
        rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".to_string()]),
            resource_names: Some(
                (0..config_parts)
                    .map(|i| configmap::part_name(&names.base, i))
                    .collect(),
            ),
            verbs: vec!["get".to_string()],
            ..Default::default()
        });
    }
    let role_binding = RoleBinding {
        metadata: m(&names.base),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "Role".to_string(),
            name: names.base.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: names.base.clone(),
            namespace: gw.namespace(),
            ..Default::default()
        }]),
    };

    let selector = selector_labels(&gw_name);
    let infra = gw.spec.infrastructure.as_ref();
    let mut pod_labels = infra.and_then(|i| i.labels.clone()).unwrap_or_default();
    pod_labels.extend(selector.clone());
    let mut pod_annotations = infra
        .and_then(|i| i.annotations.clone())
        .unwrap_or_default();
    pod_annotations.insert(PORTS_HASH.to_string(), ports_hash(&ports));

    let mut container_ports: Vec<ContainerPort> = ports
        .iter()
        .map(|p| ContainerPort {
            container_port: i32::from(*p),
            protocol: Some("TCP".to_string()),
            ..Default::default()
        })
        .collect();
    container_ports.push(ContainerPort {
        name: Some("admin".to_string()),
        container_port: i32::from(ADMIN_PORT),
        protocol: Some("TCP".to_string()),
        ..Default::default()
    });
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(i32::from(ADMIN_PORT)),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    };
    let container = Container {
        name: "proxy".to_string(),
        image: Some(image.to_string()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        // The image's entrypoint is the proxy binary.
        // The mounted file starts the proxy; later configs come through the API (the
        // kubelet refreshes mounted ConfigMaps only on its pod sync, up to a minute late).
        args: Some(vec![
            "--config".to_string(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
            "--kube-config-map".to_string(),
            format!("$(POD_NAMESPACE)/{}", names.base),
            // Certificates and credentials follow the Secret through the API into an
            // in-memory directory; the mounted copy only seeds it at start.
            "--kube-secret".to_string(),
            format!("$(POD_NAMESPACE)/{}", names.certs),
            "--secret-dir".to_string(),
            CERT_DIR.to_string(),
            "--secret-seed".to_string(),
            CERT_SEED_DIR.to_string(),
        ]),
        env: Some(vec![EnvVar {
            name: "POD_NAMESPACE".to_string(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.namespace".to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(container_ports),
        readiness_probe: Some(probe("/readyz", 2)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_string(), Quantity("100m".to_string())),
                    ("memory".to_string(), Quantity("64Mi".to_string())),
                ]
                .into(),
            ),
            limits: Some([("memory".to_string(), Quantity("512Mi".to_string()))].into()),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".to_string(),
                mount_path: CONFIG_DIR.to_string(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "certs".to_string(),
                mount_path: CERT_DIR.to_string(),
                ..Default::default()
            },
            VolumeMount {
                name: "certs-seed".to_string(),
                mount_path: CERT_SEED_DIR.to_string(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".to_string(),
                mount_path: "/tmp".to_string(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: m(&names.base),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names.base.clone()),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        // Non-root may bind listener ports below 1024.
                        sysctls: Some(vec![Sysctl {
                            name: "net.ipv4.ip_unprivileged_port_start".to_string(),
                            value: "0".to_string(),
                        }]),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "config".to_string(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: names.base.clone(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        // tmpfs, like a Secret volume: keys never touch a disk.
                        Volume {
                            name: "certs".to_string(),
                            empty_dir: Some(EmptyDirVolumeSource {
                                medium: Some("Memory".to_string()),
                                size_limit: Some(Quantity("4Mi".to_string())),
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "certs-seed".to_string(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(names.certs.clone()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "tmp".to_string(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = Service {
        metadata: m(&names.base),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector),
            ports: Some(
                ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(format!("port-{p}")),
                        port: i32::from(*p),
                        target_port: Some(IntOrString::Int(i32::from(*p))),
                        protocol: Some("TCP".to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    Objects {
        cert_secret,
        service_account,
        role,
        role_binding,
        deployment,
        service,
    }
}

impl Applier {
    pub fn new(client: Client, image: String, metrics: Arc<Metrics>, max_part: usize) -> Applier {
        Applier {
            client,
            image,
            metrics,
            applied: BTreeMap::new(),
            certs: BTreeMap::new(),
            force: false,
            max_part: max_part.max(1),
        }
    }

    /// Forgets what was applied, so the next reconcile re-applies every object (repairing
    /// objects changed or deleted by hand; the API server ignores applies that change nothing).
    pub fn forget(&mut self) {
        self.applied.clear();
        self.force = true;
    }

    /// Ends a reconcile pass (a forced re-apply lasts one pass).
    pub fn end_pass(&mut self) {
        self.force = false;
    }

    /// The address last seen on a Gateway's proxy Service.
    pub fn address(&self, key: &ObjectKey) -> Option<String> {
        self.applied.get(key).and_then(|(_, a)| a.clone())
    }

    /// Drops what is remembered of Gateways that no longer have a proxy.
    pub fn retain(&mut self, keep: &BTreeSet<ObjectKey>, secrets: &BTreeSet<ObjectKey>) {
        self.applied.retain(|k, _| keep.contains(k));
        self.certs.retain(|k, _| secrets.contains(k));
    }

    async fn ssa<K>(&self, ns: &str, obj: &K) -> Result<K, Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + Debug,
        K::DynamicType: Default,
    {
        let dt = K::DynamicType::default();
        let kind = K::kind(&dt).to_string();
        let name = obj.meta().name.clone().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let res = api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await;
        self.metrics.write(&kind);
        res.map_err(|e| Error::Apply {
            kind: static_kind(&kind),
            namespace: ns.to_string(),
            name,
            source: Box::new(e),
        })
    }

    /// The listener certificates of a proxy, keyed as [`certificate_keys`] says. Secrets are
    /// read on demand (the reflector keeps no values) and cached by resourceVersion.
    async fn cert_data(
        &mut self,
        secrets: &BTreeSet<ObjectKey>,
        stores: &Stores,
    ) -> Result<BTreeMap<String, ByteString>, Error> {
        let mut out = BTreeMap::new();
        for key in secrets {
            let (ns, name) = key;
            let Some(stub) = stores.secrets.get(&ObjectRef::new(name).within(ns)) else {
                continue; // the translation reports it unresolved
            };
            let rv = stub.resource_version().unwrap_or_default();
            let cached = self.certs.get(key).is_some_and(|(v, _)| *v == rv);
            if !cached {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
                let secret = api.get_opt(name).await.map_err(|e| Error::Read {
                    kind: "Secret",
                    namespace: ns.clone(),
                    name: name.clone(),
                    source: Box::new(e),
                })?;
                let Some(secret) = secret else { continue };
                let data = secret.data.unwrap_or_default();
                let (crt_key, key_key) = certificate_keys(ns, name);
                let mut m = BTreeMap::new();
                if let Some(v) = data.get("tls.crt") {
                    m.insert(crt_key, v.clone());
                }
                if let Some(v) = data.get("tls.key") {
                    m.insert(key_key, v.clone());
                }
                self.certs.insert(
                    key.clone(),
                    (secret.metadata.resource_version.unwrap_or_default(), m),
                );
            }
            if let Some((_, m)) = self.certs.get(key) {
                out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        Ok(out)
    }

    /// Applies one Gateway's proxy. Returns the proxy Service's ClusterIP, if it has one, and
    /// what config was written, if one was.
    /// `llm_data` (LLM credentials, JWKS, CA bundles) joins the certificates in the proxy's
    /// Secret, where the config's `*_file` paths point.
    pub async fn apply(
        &mut self,
        gw: &Gateway,
        cfg: &ProxyConfig,
        secrets: &BTreeSet<ObjectKey>,
        llm_data: BTreeMap<String, ByteString>,
        stores: &Stores,
    ) -> Result<Applied, Error> {
        let ns = gw.namespace().ok_or(Error::Missing {
            kind: "Gateway",
            field: "metadata.namespace",
        })?;
        let key = (ns.clone(), gw.name_any());
        let owner = gw.controller_owner_ref(&()).ok_or(Error::Missing {
            kind: "Gateway",
            field: "metadata.uid",
        })?;
        let names = Names::of(&gw.name_any());
        let cfg = pod_config(cfg);
        let toml = cfg.to_toml().map_err(|e| Error::Encode {
            what: format!("config of Gateway {}/{}", key.0, key.1),
            message: e.to_string(),
        })?;

        // Compressing a large config costs milliseconds: only when its hash changed.
        let want_hash = sha256_hex(toml.as_bytes());
        let main_cm = stores
            .config_maps
            .get(&ObjectRef::new(&names.base).within(&ns));
        let have_hash = main_cm
            .as_ref()
            .and_then(|cm| cm.annotations().get(CONFIG_HASH).cloned());
        let config = (have_hash.as_deref() != Some(want_hash.as_str()))
            .then(|| config_maps(gw, &names, &owner, &toml, self.max_part));
        let config_parts = match &config {
            Some((_, parts)) => parts.len(),
            None => main_cm
                .as_ref()
                .and_then(|cm| {
                    configmap::parts_count(
                        cm.annotations()
                            .get(configmap::PARTS_ANNOTATION)
                            .map(String::as_str),
                    )
                    .ok()
                    .flatten()
                })
                .unwrap_or(0),
        };

        let mut cert_data = self.cert_data(secrets, stores).await?;
        cert_data.extend(llm_data);
        let mut objs = objects(
            gw,
            &names,
            &owner,
            &cfg,
            &self.image,
            cert_data,
            config_parts,
        );
        let objs_hash = sha256_hex(&serde_json::to_vec(&objs).map_err(|e| Error::Encode {
            what: "proxy objects".to_string(),
            message: e.to_string(),
        })?);
        let mut addr = self.unchanged_address(&key, &names, &objs_hash, stores);
        let objs_changed = addr.is_none();
        objs.deployment
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(OBJECTS_HASH.to_string(), objs_hash.clone());

        // Order: the files (Secret) and the right to read the parts before the config that
        // needs them; the config before a new Deployment, whose pods start from it.
        if objs_changed {
            self.ssa(&ns, &objs.cert_secret).await?;
            self.ssa(&ns, &objs.service_account).await?;
            self.ssa(&ns, &objs.role).await?;
            self.ssa(&ns, &objs.role_binding).await?;
        }
        if let Some((main, parts)) = &config {
            for part in parts {
                self.ssa(&ns, part).await?;
            }
            self.ssa(&ns, main).await?;
            for stale in stale_parts(stores, &ns, &names.base, parts.len()) {
                self.delete_config_map(&ns, &stale).await?;
            }
            tracing::info!(gateway = %format!("{}/{}", key.0, key.1), hash = %&want_hash[..12], parts = parts.len().max(1), "config written");
        }
        let config_written = config
            .as_ref()
            .map(|(_, parts)| (want_hash[..12].to_string(), parts.len().max(1)));
        if objs_changed {
            self.ssa(&ns, &objs.deployment).await?;
            let svc = self.ssa(&ns, &objs.service).await?;
            let ip = cluster_ip(&svc);
            self.applied.insert(key, (objs_hash, ip.clone()));
            addr = Some(ip);
        }
        Ok(Applied {
            address: addr.flatten(),
            config_written,
        })
    }

    /// When the objects hashed `objs_hash` were applied already (this process, or per the
    /// Deployment's annotation after a restart), the proxy Service's address.
    fn unchanged_address(
        &mut self,
        key: &ObjectKey,
        names: &Names,
        objs_hash: &str,
        stores: &Stores,
    ) -> Option<Option<String>> {
        if let Some((h, addr)) = self.applied.get(key)
            && h == objs_hash
        {
            return Some(addr.clone());
        }
        if self.force {
            return None;
        }
        let deployed = stores
            .deployments
            .get(&ObjectRef::new(&names.base).within(&key.0))
            .and_then(|d| d.annotations().get(OBJECTS_HASH).cloned());
        let svc = stores
            .services
            .get(&ObjectRef::new(&names.base).within(&key.0))?;
        if deployed.as_deref() != Some(objs_hash) {
            return None;
        }
        let addr = cluster_ip(&svc);
        self.applied
            .insert(key.clone(), (objs_hash.to_string(), addr.clone()));
        Some(addr)
    }

    async fn delete_config_map(&self, ns: &str, name: &str) -> Result<(), Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        self.metrics.write("ConfigMap");
        match api.delete(name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(Error::Apply {
                kind: "ConfigMap",
                namespace: ns.to_string(),
                name: name.to_string(),
                source: Box::new(e),
            }),
        }
    }
}

fn cluster_ip(svc: &Service) -> Option<String> {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .filter(|ip| !ip.is_empty() && ip != "None")
}

fn static_kind(kind: &str) -> &'static str {
    match kind {
        "ConfigMap" => "ConfigMap",
        "Secret" => "Secret",
        "ServiceAccount" => "ServiceAccount",
        "Role" => "Role",
        "RoleBinding" => "RoleBinding",
        "Deployment" => "Deployment",
        "Service" => "Service",
        _ => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use citoroute_config::{Listener, ListenerProtocol};

    fn gateway() -> Gateway {
        let mut gw: Gateway = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "ns", "uid": "u-1"},
            "spec": {
                "gatewayClassName": "citoroute",
                "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                "infrastructure": {"labels": {"team": "a"}, "annotations": {"note": "x"}}
            }
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        gw.metadata.generation = Some(1);
        gw
    }

    fn listener(name: &str, port: u16) -> Listener {
        Listener {
            name: name.to_string(),
            address: "0.0.0.0".to_string(),
            port,
            protocol: ListenerProtocol::Http,
            hostname: None,
            tls: None,
        }
    }

    #[test]
    fn names_are_valid_service_names() {
        assert_eq!(Names::of("gw").base, "gw-citoroute");
        assert!(Names::of("1.gw").base.starts_with("gw-1-gw-"));
        assert_ne!(Names::of("a.b"), Names::of("a-b"));
        let long = Names::of(&"a".repeat(200));
        assert!(long.certs.len() <= 63, "{}", long.certs);
        assert_ne!(long, Names::of(&"a".repeat(201)));
    }

    #[test]
    fn only_ports_change_the_pod_template() {
        let gw = gateway();
        let owner = gw.controller_owner_ref(&()).unwrap_or_default();
        let names = Names::of("gw");
        let mut a = ProxyConfig::empty();
        a.listeners.push(listener("http", 80));
        let mut b = a.clone();
        b.listeners.push(listener("other", 80));
        let tpl = |c: &ProxyConfig| {
            serde_json::to_value(
                objects(&gw, &names, &owner, c, "img", BTreeMap::new(), 0)
                    .deployment
                    .spec
                    .map(|s| s.template),
            )
            .unwrap_or_default()
        };
        assert_eq!(tpl(&a), tpl(&b));
        b.listeners.push(listener("https", 443));
        assert_ne!(tpl(&a), tpl(&b));
    }

    #[test]
    fn objects_carry_infrastructure_and_owner() {
        let gw = gateway();
        let owner = gw.controller_owner_ref(&()).unwrap_or_default();
        let mut cfg = ProxyConfig::empty();
        cfg.listeners.push(listener("http", 80));
        let objs = objects(
            &gw,
            &Names::of("gw"),
            &owner,
            &cfg,
            "img",
            BTreeMap::new(),
            0,
        );
        let md = &objs.service.metadata;
        assert_eq!(
            md.labels
                .as_ref()
                .and_then(|l| l.get("team"))
                .map(String::as_str),
            Some("a")
        );
        assert_eq!(
            md.annotations
                .as_ref()
                .and_then(|l| l.get("note"))
                .map(String::as_str),
            Some("x")
        );
        assert_eq!(
            md.owner_references.as_ref().map(|o| o[0].uid.as_str()),
            Some("u-1")
        );
        let ports = objs.service.spec.and_then(|s| s.ports).unwrap_or_default();
        assert_eq!(ports.len(), 1);
        let (cm, parts) = config_maps(
            &gw,
            &Names::of("gw"),
            &owner,
            "version = 1\n",
            configmap::MAX_PART_BYTES,
        );
        assert!(parts.is_empty());
        let gz = cm
            .binary_data
            .and_then(|d| d.get(CONFIG_KEY).cloned())
            .unwrap_or_default();
        assert!(ProxyConfig::from_bytes(&gz.0).is_ok());
    }

    /// A config larger than one part: parts that join into it, a main ConfigMap that only
    /// announces them, and a Role that may read exactly those parts.
    #[test]
    fn a_large_config_is_split_and_the_role_names_its_parts() {
        let gw = gateway();
        let owner = gw.controller_owner_ref(&()).unwrap_or_default();
        let names = Names::of("gw");
        let mut cfg = ProxyConfig::empty();
        cfg.listeners.push(listener("http", 80));
        let toml = cfg.to_toml().unwrap_or_default();
        let hash = sha256_hex(toml.as_bytes());
        let (main, parts) = config_maps(&gw, &names, &owner, &toml, 16);
        assert!(parts.len() > 1, "{} parts", parts.len());
        let ann = |cm: &ConfigMap, k: &str| cm.annotations().get(k).cloned();
        assert_eq!(
            ann(&main, configmap::PARTS_ANNOTATION),
            Some(parts.len().to_string())
        );
        assert_eq!(ann(&main, CONFIG_HASH), Some(hash.clone()));
        assert_eq!(main.binary_data.as_ref().map(BTreeMap::len), Some(0));
        let read: Vec<Option<configmap::Part>> = parts
            .iter()
            .map(|p| {
                Some(configmap::Part {
                    hash: ann(p, CONFIG_HASH).unwrap_or_default(),
                    index: ann(p, configmap::PART_INDEX_ANNOTATION).and_then(|i| i.parse().ok()),
                    bytes: p
                        .binary_data
                        .as_ref()
                        .and_then(|d| d.get(configmap::PART_KEY))
                        .map(|b| b.0.clone())
                        .unwrap_or_default(),
                })
            })
            .collect();
        let joined = configmap::join(&hash, &read).unwrap_or_default();
        assert_eq!(
            ProxyConfig::from_bytes(&joined)
                .ok()
                .map(|c| c.listeners.len()),
            Some(1)
        );

        let objs = objects(
            &gw,
            &names,
            &owner,
            &cfg,
            "img",
            BTreeMap::new(),
            parts.len(),
        );
        let rules = objs.role.rules.unwrap_or_default();
        let part_rule = rules
            .iter()
            .find(|r| r.verbs == ["get"])
            .and_then(|r| r.resource_names.clone())
            .unwrap_or_default();
        let names_of_parts: Vec<String> = parts.iter().map(|p| p.name_any()).collect();
        assert_eq!(part_rule, names_of_parts);
        let whole = objects(&gw, &names, &owner, &cfg, "img", BTreeMap::new(), 0);
        assert!(
            whole
                .role
                .rules
                .unwrap_or_default()
                .iter()
                .all(|r| r.resource_names.as_ref().is_some_and(|n| n.len() == 1)),
            "every rule of a whole config names one object"
        );
    }
}
