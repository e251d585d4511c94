//! Golden tests: every `tests/golden/<case>/input.yaml` (Gateway API and core objects, many
//! documents) is translated; the config of each Gateway must equal `<ns>_<gateway>.toml` and
//! all statuses `status.yaml`. `UPDATE_GOLDEN=1 cargo test -p citoroute-translate` rewrites
//! the expected files; review them as diffs. Every golden TOML must load in the proxy's
//! config crate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use citoroute_config::ProxyConfig;
use citoroute_translate::*;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Reads a multi-document YAML file into a snapshot. Namespaced objects without a namespace
/// land in `default`, as `kubectl apply` would put them.
fn load(path: &Path) -> Snapshot {
    let text = fs::read_to_string(path).unwrap();
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut s = Snapshot::default();
    for mut doc in docs {
        if doc.is_null() {
            continue;
        }
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        if !matches!(kind.as_str(), "GatewayClass" | "Namespace")
            && doc["metadata"]["namespace"].is_null()
        {
            doc["metadata"]["namespace"] = Value::from("default");
        }
        let what = format!("{}: {kind} {}", path.display(), doc["metadata"]["name"]);
        fn typed<T: serde::de::DeserializeOwned>(doc: Value, what: &str) -> T {
            serde_json::from_value(doc).unwrap_or_else(|e| panic!("{what}: {e}"))
        }
        match kind.as_str() {
            "GatewayClass" => s.gateway_classes.push(typed(doc, &what)),
            "Gateway" => s.gateways.push(typed(doc, &what)),
            "HTTPRoute" => s.http_routes.push(typed(doc, &what)),
            "GRPCRoute" => s.grpc_routes.push(typed(doc, &what)),
            "TLSRoute" => s.tls_routes.push(typed(doc, &what)),
            "ReferenceGrant" => s.reference_grants.push(typed(doc, &what)),
            "Service" => s.services.push(typed(doc, &what)),
            "EndpointSlice" => s.endpoint_slices.push(typed(doc, &what)),
            "Namespace" => s.namespaces.push(typed(doc, &what)),
            "ConfigMap" => {
                let cm: k8s_openapi::api::core::v1::ConfigMap = typed(doc, &what);
                s.config_maps
                    .push(ConfigMapInfo::from_config_map(&cm).unwrap());
            }
            "LLMBackend" => s.llm_backends.push(typed(doc, &what)),
            "LLMRoute" => s.llm_routes.push(typed(doc, &what)),
            "Consumer" => s.consumers.push(typed(doc, &what)),
            "JWTValidationPolicy" => s.jwt_policies.push(typed(doc, &what)),
            "BackendTLSPolicy" => s.backend_tls_policies.push(typed(doc, &what)),
            "Secret" => {
                // The I/O layer parses the certificate; here a non-empty tls.crt that is not
                // base64 of "-----BEGIN" stands for a malformed one.
                let crt = doc["data"]["tls.crt"].as_str().unwrap_or_default();
                let problem = (!crt.is_empty() && !crt.starts_with("LS0tLS1CRUdJT"))
                    .then(|| "tls.crt is not a PEM certificate".to_string());
                let secret: k8s_openapi::api::core::v1::Secret = typed(doc, &what);
                let mut info = SecretInfo::from_secret(&secret).unwrap();
                info.certificate_problem = problem;
                s.secrets.push(info);
            }
            other => panic!("{what}: unexpected kind {other}"),
        }
    }
    s
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusDoc {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    gateway_classes: Vec<Named<GatewayClassStatus>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    gateways: Vec<Namespaced<GatewayStatus>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<RouteEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    backend_tls_policies: Vec<Namespaced<PolicyStatus>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secrets_needed: Vec<SecretsEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    citoroute_objects: Vec<LlmEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    llm_files: Vec<LlmFilesEntry>,
}

#[derive(Serialize)]
struct LlmEntry {
    kind: LlmKind,
    namespace: String,
    name: String,
    conditions: Vec<Condition>,
}

#[derive(Serialize)]
struct LlmFilesEntry {
    gateway: String,
    files: Vec<LlmFileEntry>,
}

/// A file of the proxy's Secret: where its content comes from and the path the config names.
#[derive(Serialize)]
struct LlmFileEntry {
    from: String,
    path: String,
}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    status: T,
}

#[derive(Serialize)]
struct Namespaced<T> {
    namespace: String,
    name: String,
    status: T,
}

#[derive(Serialize)]
struct RouteEntry {
    kind: RouteKind,
    namespace: String,
    name: String,
    status: RouteStatus,
}

#[derive(Serialize)]
struct SecretsEntry {
    gateway: String,
    secrets: Vec<String>,
}

fn status_yaml(t: &Translation) -> String {
    let doc = StatusDoc {
        gateway_classes: t
            .gateway_class_statuses
            .iter()
            .map(|(name, status)| Named {
                name: name.clone(),
                status: status.clone(),
            })
            .collect(),
        gateways: t
            .gateway_statuses
            .iter()
            .map(|((ns, name), status)| Namespaced {
                namespace: ns.clone(),
                name: name.clone(),
                status: status.clone(),
            })
            .collect(),
        routes: t
            .route_statuses
            .iter()
            .map(|(k, status)| RouteEntry {
                kind: k.kind,
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                status: status.clone(),
            })
            .collect(),
        backend_tls_policies: t
            .backend_tls_policy_statuses
            .iter()
            .map(|((ns, name), status)| Namespaced {
                namespace: ns.clone(),
                name: name.clone(),
                status: status.clone(),
            })
            .collect(),
        secrets_needed: t
            .secrets_needed
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|((ns, name), v)| SecretsEntry {
                gateway: format!("{ns}/{name}"),
                secrets: v.iter().map(|(ns, n)| format!("{ns}/{n}")).collect(),
            })
            .collect(),
        citoroute_objects: t
            .llm_statuses
            .iter()
            .map(|(k, conditions)| LlmEntry {
                kind: k.kind,
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                conditions: conditions.clone(),
            })
            .collect(),
        llm_files: t
            .llm_files
            .iter()
            .map(|((ns, name), files)| LlmFilesEntry {
                gateway: format!("{ns}/{name}"),
                files: files
                    .iter()
                    .map(|f| {
                        let kind = match f.source {
                            FileSource::Secret => "Secret",
                            FileSource::ConfigMap => "ConfigMap",
                        };
                        LlmFileEntry {
                            from: format!("{kind} {}/{}[{}]", f.namespace, f.name, f.key),
                            path: f.path(),
                        }
                    })
                    .collect(),
            })
            .collect(),
    };
    serde_saphyr::to_string(&doc).unwrap()
}

/// The expected files of a case: file name -> content.
fn render(t: &Translation) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for ((ns, name), cfg) in &t.proxies {
        out.push((format!("{ns}_{name}.toml"), cfg.to_toml().unwrap()));
    }
    out.push(("status.yaml".to_string(), status_yaml(t)));
    out
}

fn cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.yaml").exists())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn golden() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let cases = cases();
    assert!(!cases.is_empty(), "no golden cases found");
    let mut failures = Vec::new();
    for dir in &cases {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let t = translate(&load(&dir.join("input.yaml")));
        let files = render(&t);
        let expected_names: BTreeSet<String> = files.iter().map(|(n, _)| n.clone()).collect();
        // Stale outputs (a Gateway that no longer gets a config) are failures too.
        for e in fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            if name != "input.yaml" && !expected_names.contains(&name) {
                if update {
                    fs::remove_file(dir.join(&name)).unwrap();
                } else {
                    failures.push(format!("{case}/{name}: not produced any more"));
                }
            }
        }
        for (name, content) in &files {
            let path = dir.join(name);
            if name.ends_with(".toml") {
                let parsed = ProxyConfig::from_toml(content)
                    .unwrap_or_else(|e| panic!("{case}/{name} does not load: {e}"));
                let (ns, gw) = name.trim_end_matches(".toml").split_once('_').unwrap();
                assert_eq!(
                    Some(&parsed),
                    t.proxies.get(&(ns.to_string(), gw.to_string()))
                );
            }
            if update {
                fs::write(&path, content).unwrap();
                continue;
            }
            match fs::read_to_string(&path) {
                Ok(old) if &old == content => {}
                Ok(old) => failures.push(format!(
                    "{case}/{name} differs (UPDATE_GOLDEN=1 to accept):\n--- expected\n{old}\n--- got\n{content}"
                )),
                Err(_) => failures.push(format!("{case}/{name}: missing (UPDATE_GOLDEN=1 to create)")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The committed golden TOML files all load in the proxy's config crate.
#[test]
fn golden_toml_files_load() {
    for dir in cases() {
        for e in fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                let text = fs::read_to_string(&path).unwrap();
                if let Err(e) = ProxyConfig::from_toml(&text) {
                    panic!("{} does not load: {e}", path.display());
                }
            }
        }
    }
}

/// The order of objects in the snapshot does not change the output.
#[test]
fn input_order_does_not_matter() {
    for dir in cases() {
        let s = load(&dir.join("input.yaml"));
        let mut r = s.clone();
        r.gateway_classes.reverse();
        r.gateways.reverse();
        r.http_routes.reverse();
        r.grpc_routes.reverse();
        r.tls_routes.reverse();
        r.reference_grants.reverse();
        r.services.reverse();
        r.endpoint_slices.reverse();
        r.secrets.reverse();
        r.namespaces.reverse();
        r.config_maps.reverse();
        r.llm_backends.reverse();
        r.llm_routes.reverse();
        r.consumers.reverse();
        r.jwt_policies.reverse();
        r.backend_tls_policies.reverse();
        assert_eq!(translate(&s), translate(&r), "{}", dir.display());
    }
}
