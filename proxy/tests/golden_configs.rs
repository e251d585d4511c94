//! Every config the controller's golden tests expect (`controller/translate/tests/golden`)
//! loads and compiles into a router here, so the two sides of the TOML contract cannot drift.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use citoroute_config::ProxyConfig;
use citoroute_proxy::backend::BreakerRegistry;
use citoroute_proxy::client_auth::ClientAuthTable;
use citoroute_proxy::metrics::Metrics;
use citoroute_proxy::router::Router;
use std::path::Path;
use std::sync::Arc;

/// A JWKS with one HS256 key, standing in for the controller's mounted JWKS files.
const STAND_IN_JWKS: &str =
    r#"{"keys":[{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0","alg":"HS256"}]}"#;

/// A CA certificate standing in for the controller's mounted CA bundles.
fn stand_in_ca() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["ca.test".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

/// The AI gateway part of a controller config names credential, JWKS and CA files that exist
/// only in the proxy's pod (its mounted Secret). Points them at stand-ins in `dir`, keeping
/// everything else, so the LLM routes compile here too.
fn with_stand_in_files(cfg: &mut ProxyConfig, dir: &Path) {
    let mut n = 0;
    let mut stand_in = |content: &str| {
        n += 1;
        let path = dir.join(format!("file-{n}"));
        std::fs::write(&path, content).unwrap();
        path.to_string_lossy().to_string()
    };
    for b in cfg.llm_backends.values_mut() {
        for f in [
            &mut b.api_key_file,
            &mut b.aws_access_key_id_file,
            &mut b.aws_secret_access_key_file,
            &mut b.aws_session_token_file,
        ] {
            if f.is_some() {
                *f = Some(stand_in("stand-in-credential"));
            }
        }
        if b.ca_file.is_some() {
            b.ca_file = Some(stand_in(&stand_in_ca()));
        }
    }
    // Frontend mTLS: the CA bundles copied from ConfigMaps.
    for l in &mut cfg.listeners {
        if let Some(v) = l.tls.as_mut().and_then(|t| t.client_validation.as_mut()) {
            for f in &mut v.ca_files {
                *f = stand_in(&stand_in_ca());
            }
        }
    }
    // BackendTLSPolicy: the backends' CA bundles copied from ConfigMaps.
    for b in cfg.backends.values_mut() {
        for f in b.tls.iter_mut().flat_map(|t| t.ca_files.iter_mut()) {
            *f = stand_in(&stand_in_ca());
        }
    }
    // A JWKS URL becomes a file too: tests talk to no one.
    if let Some(jwt) = cfg.jwt.as_mut() {
        jwt.jwks_file = stand_in(STAND_IN_JWKS);
        jwt.jwks_url.clear();
        jwt.jwks_refresh_interval = None;
        jwt.jwks_ca_file = None;
    }
}

#[test]
fn controller_golden_configs_compile() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/translate/tests/golden");
    let Ok(cases) = std::fs::read_dir(&root) else {
        panic!("no golden directory at {}", root.display());
    };
    let breakers = BreakerRegistry::default();
    let mut seen = 0;
    for case in cases {
        for file in std::fs::read_dir(case.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let mut cfg =
                ProxyConfig::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let dir = tempfile::tempdir().unwrap();
            with_stand_in_files(&mut cfg, dir.path());
            if let Err(e) = ClientAuthTable::load(&cfg) {
                panic!("{}: {e}", path.display());
            }
            if let Err(e) = Router::compile(Arc::new(cfg), 1, &breakers, &Metrics::new()) {
                panic!("{}: {e}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen > 0, "no golden configs found");
}
