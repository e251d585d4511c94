//! The CRD YAML the Helm chart ships is exactly what the Rust types generate.
//! After changing a type: `cargo run -p citoroute-crds --bin gen-crds -- charts/citoroute/crds`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn chart_crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/citoroute/crds")
}

#[test]
fn committed_crd_yaml_matches_the_types() {
    let dir = chart_crds();
    let mut stale = Vec::new();
    for (name, yaml) in citoroute_crds::crd_files().unwrap() {
        match std::fs::read_to_string(dir.join(&name)) {
            Ok(committed) if committed == yaml => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(e) => stale.push(format!("{name}: {e}")),
        }
    }
    assert!(
        stale.is_empty(),
        "regenerate with `cargo run -p citoroute-crds --bin gen-crds -- charts/citoroute/crds`: {stale:?}"
    );
}

/// No file of ours lingers in the chart after a CRD is renamed or dropped.
#[test]
fn no_stale_crd_files() {
    let want: BTreeSet<String> = citoroute_crds::crd_files()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for e in std::fs::read_dir(chart_crds()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        if name.starts_with("citoroute.io_") {
            assert!(want.contains(&name), "{name} is not generated any more");
        }
    }
}

#[test]
fn every_crd_is_namespaced_v1alpha1_with_status() {
    let crds = citoroute_crds::crds();
    let kinds: Vec<&str> = crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["LLMBackend", "LLMRoute", "Consumer", "JWTValidationPolicy"]
    );
    for crd in &crds {
        assert_eq!(crd.spec.group, "citoroute.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.versions.len(), 1);
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.served && v.storage);
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{} has no status subresource",
            crd.spec.names.kind
        );
        let columns: Vec<&str> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert!(columns.contains(&"Accepted"), "{columns:?}");
        assert!(columns.contains(&"Age"), "{columns:?}");
    }
}
