//! Every config the controller's golden tests expect (`controller/translate/tests/golden`)
//! loads and compiles into a router here, so the two sides of the TOML contract cannot drift.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use citoroute_config::ProxyConfig;
use citoroute_proxy::backend::BreakerRegistry;
use citoroute_proxy::router::Router;
use std::path::Path;
use std::sync::Arc;

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
            let cfg =
                ProxyConfig::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if let Err(e) = Router::compile(Arc::new(cfg), 1, &breakers) {
                panic!("{}: {e}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen > 0, "no golden configs found");
}
