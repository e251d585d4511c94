//! The schema as a user meets it: every bundled example loads, configs round-trip, and a bad
//! file is refused with the offending key named.

use citoroute_config::{ConfigError, ProxyConfig};
use std::path::Path;

fn examples() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_loads_and_round_trips() {
    let files = examples();
    assert!(
        files.len() >= 2,
        "expected the bundled examples, found {files:?}"
    );
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        let cfg =
            ProxyConfig::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let again = ProxyConfig::from_toml(&cfg.to_toml().expect("serialize")).expect("reparse");
        assert_eq!(cfg, again, "{} does not round-trip", path.display());
    }
}

fn invalid(text: &str) -> String {
    match ProxyConfig::from_toml(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const BASE: &str = r#"
version = 1
[[listeners]]
name = "http"
port = 8080
protocol = "HTTP"
[backends.b]
endpoints = ["127.0.0.1:9000"]
"#;

#[test]
fn unknown_key_is_named_with_its_line() {
    let err = invalid(&format!(
        "{BASE}\n[[http_routes]]\nname = \"r\"\nlisteners = [\"http\"]\nrulez = []\n"
    ));
    assert!(err.contains("rulez"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn newer_schema_version_is_refused() {
    let err = invalid("version = 2\n");
    assert!(
        err.contains("version: unsupported schema version 2"),
        "{err}"
    );
}

#[test]
fn semantic_problems_name_their_path() {
    let route = r#"
[[http_routes]]
name = "r"
listeners = ["http", "nope"]
hostnames = ["Bad_Host"]
[[http_routes.rules]]
matches = [{ path = { type = "RegularExpression", value = "(" } }, { path = { value = "no-slash" }, method = "G ET" }]
filters = [{ type = "RequestRedirect", status_code = 305 }, { type = "URLRewrite", hostname = "x.com" }]
backends = [{ backend = "missing" }]
"#;
    let err = invalid(&format!("{BASE}{route}"));
    for expected in [
        "http_routes[0].listeners[1]: no listener named \"nope\"",
        "http_routes[0].hostnames[0]",
        "http_routes[0].rules[0].matches[0].path.value: invalid regular expression",
        "http_routes[0].rules[0].matches[1].path.value: must start with '/'",
        "http_routes[0].rules[0].matches[1].method",
        "http_routes[0].rules[0].filters[0].status_code",
        "http_routes[0].rules[0].filters: RequestRedirect and URLRewrite cannot be combined",
        "http_routes[0].rules[0].backends[0].backend: no backend named \"missing\"",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in\n{err}");
    }
}

#[test]
fn listener_conflicts_are_caught() {
    let text = r#"
version = 1
[[listeners]]
name = "a"
port = 443
protocol = "HTTPS"
tls = { certificates = ["nope"] }
[[listeners]]
name = "b"
port = 443
protocol = "HTTP"
[[listeners]]
name = "a"
port = 80
protocol = "TLS"
tls = { mode = "Passthrough", certificates = ["x"] }
[backends.b]
endpoints = ["not-an-address"]
load_balancing = { policy = "Maglev", table_size = 65536 }
"#;
    let err = invalid(text);
    for expected in [
        "listeners[0].tls.certificates[0]: no certificate named \"nope\"",
        "port 443 mixes plaintext HTTP with TLS listeners",
        "listeners[2].name: duplicate listener name",
        "listeners[2].tls.certificates: a passthrough listener does not use certificates",
        "backends.\"b\".endpoints[0]",
        "65536 is not prime",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in\n{err}");
    }
}

#[test]
fn route_kind_must_fit_listener_protocol() {
    let text = format!(
        "{BASE}\n[[tls_routes]]\nname = \"t\"\nlisteners = [\"http\"]\nbackends = [{{ backend = \"b\" }}]\n"
    );
    let err = invalid(&text);
    assert!(
        err.contains("a TLS route cannot attach to listener \"http\""),
        "{err}"
    );
}

#[test]
fn parse_errors_are_distinguished_from_invalid_configs() {
    assert!(matches!(
        ProxyConfig::from_toml("version = "),
        Err(ConfigError::Parse(_))
    ));
    assert!(matches!(
        ProxyConfig::from_toml("version = 7"),
        Err(ConfigError::Invalid(_))
    ));
}

#[test]
fn five_thousand_routes_stay_compact() {
    let mut cfg = ProxyConfig::from_toml(BASE).expect("base");
    let rule: citoroute_config::HttpRule = toml::from_str(
        "matches = [{ path = { value = \"/x\" } }]\nbackends = [{ backend = \"b\" }]",
    )
    .expect("rule");
    for i in 0..5000 {
        cfg.http_routes.push(citoroute_config::HttpRoute {
            name: format!("team-{}/route-{i}", i % 50),
            listeners: vec!["http".into()],
            hostnames: vec![format!("svc-{i}.example.com")],
            rules: vec![rule.clone()],
        });
    }
    let text = cfg.to_toml().expect("serialize");
    let packed = citoroute_config::compress(text.as_bytes());
    // The controller ships configs gzip-compressed; 5,000 routes must fit one object (1 MiB)
    // with room to spare, and unpack to the same config.
    assert!(
        packed.len() < 256 * 1024,
        "{} bytes packed ({} plain)",
        packed.len(),
        text.len()
    );
    let back = ProxyConfig::from_bytes(&packed).expect("unpack");
    assert_eq!(back, cfg);
}

#[test]
fn backend_tls_names_are_checked() {
    let tls = r#"
[backends.t]
endpoints = ["127.0.0.1:9443"]
tls = { sni = "*.wild.test", subject_alt_names = ["ok.test", "spiffe://td/ns/a", "*.x.test", "no scheme:", "Bad_Name"] }
"#;
    let err = invalid(&format!("{BASE}{tls}"));
    for expected in [
        "backends.\"t\".tls.sni: \"*.wild.test\": a wildcard is not a server name",
        "backends.\"t\".tls.subject_alt_names[2]",
        "backends.\"t\".tls.subject_alt_names[3]: \"no scheme:\" is not a URI",
        "backends.\"t\".tls.subject_alt_names[4]",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in\n{err}");
    }
    for ok in ["subject_alt_names[0]", "subject_alt_names[1]"] {
        assert!(!err.contains(ok), "{ok} refused in\n{err}");
    }
    let good = r#"
[backends.t]
endpoints = ["127.0.0.1:9443"]
tls = { sni = "10.0.0.1", subject_alt_names = ["urn:example:a"] }
"#;
    ProxyConfig::from_toml(&format!("{BASE}{good}")).expect("an IP SNI and a URN SAN load");
}
