//! The AI gateway part of the schema: LLM backends, LLM routes, consumers and JWT validation.
//!
//! Clients speak OpenAI chat completions to an LLM route; the proxy picks one of the route's
//! LLM backends by weight and speaks that provider's native protocol. Credentials are files
//! (in Kubernetes they are mounted from Secrets), never inline values.
//!
//! ```toml
//! [llm_backends.claude]
//! provider = "anthropic"
//! model = "claude-sonnet-4-5"
//! api_key_file = "/etc/citoroute/keys/anthropic"
//!
//! [[llm_routes]]
//! name = "chat"
//! listeners = ["http"]
//! backends = [{ backend = "claude" }]
//! ```

use crate::duration::GatewayDuration;
use crate::types::{ListenerProtocol, PathMatchType};
use crate::validate::{Checker, check_attachment, check_hostnames};
use serde::{Deserialize, Serialize};

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

/// The wire protocol of an LLM backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    /// OpenAI chat completions, or any server that speaks it.
    #[serde(rename = "openai")]
    OpenAi,
    /// The Anthropic Messages API.
    Anthropic,
    /// AWS Bedrock Runtime Converse / ConverseStream.
    Bedrock,
}

/// One model at one provider: `[llm_backends."name"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmBackend {
    pub provider: LlmProvider,
    /// The model sent upstream, whatever the client asked for (for Bedrock: a model id,
    /// inference profile or ARN).
    pub model: String,
    /// Base URL (`http://` or `https://`), e.g. `https://api.openai.com/v1`. Empty means the
    /// provider's public endpoint (Bedrock: `https://bedrock-runtime.<region>.amazonaws.com`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// File holding the API key (OpenAI, Anthropic, or a Bedrock API key). Surrounding
    /// whitespace is ignored. Absent: no key is sent (local OpenAI-compatible servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<String>,
    /// Files holding AWS credentials for SigV4 (Bedrock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_access_key_id_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_access_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_session_token_file: Option<String>,
    /// AWS region (Bedrock; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `anthropic-version` header (Anthropic only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_version: Option<String>,
    /// Time allowed for one upstream attempt, from connecting to the last body byte.
    /// Default 300s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GatewayDuration>,
    /// PEM bundle of CA certificates trusted for this backend's `https://` endpoint, in
    /// addition to the system roots (a private provider or an internal TLS-inspecting proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// The path an LLM route serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmPath {
    /// `PathPrefix` (default) or `Exact`.
    #[serde(rename = "type", default)]
    pub kind: PathMatchType,
    #[serde(default = "default_llm_path")]
    pub value: String,
}

/// The OpenAI chat completions path.
pub fn default_llm_path() -> String {
    "/v1/chat/completions".to_string()
}

impl Default for LlmPath {
    fn default() -> Self {
        LlmPath {
            kind: PathMatchType::PathPrefix,
            value: default_llm_path(),
        }
    }
}

/// A weighted reference to an LLM backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmBackendRef {
    /// Name in `[llm_backends]`.
    pub backend: String,
    #[serde(default = "one")]
    pub weight: u32,
}

/// An LLM route (`[[llm_routes]]`): `POST <path>` on its listeners and hostnames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmRoute {
    pub name: String,
    pub listeners: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub path: LlmPath,
    /// Names in `[consumers]` allowed to use the route; empty means open to anyone (no
    /// token needed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<String>,
    pub backends: Vec<LlmBackendRef>,
    /// On a connect error, a timeout before the response head, 429 or 5xx, try the next
    /// backend (never on 400/401/403 or once the client got a byte).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub failover: bool,
}

/// A claim a token must carry: equal to `value`, or a list containing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMatch {
    pub key: String,
    pub value: String,
}

/// A consumer (`[consumers."name"]`): who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    pub jwt_claim: ClaimMatch,
    /// Prompt plus completion tokens per minute (a fixed window); over it, requests get
    /// 429 until the next minute. Absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_limit_per_minute: Option<u64>,
}

fn default_jwt_header() -> String {
    "authorization".to_string()
}

/// JWT validation for LLM routes that name consumers (`[jwt]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// Required `iss`; empty means not checked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    /// Accepted `aud` values; empty means not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// File holding the JWKS document (`{"keys":[...]}`); re-read when it changes (a mounted
    /// Secret may rotate). Exactly one of `jwks_file` and `jwks_url`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwks_file: String,
    /// URL the JWKS document is fetched from (`https://`; `http://` only to a loopback
    /// address), at start and then every `jwks_refresh_interval`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwks_url: String,
    /// How often `jwks_url` is fetched again. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_refresh_interval: Option<GatewayDuration>,
    /// PEM bundle of CA certificates trusted for an `https://` `jwks_url`, in addition to the
    /// system roots (an in-cluster identity provider with a private CA). Only with `jwks_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_ca_file: Option<String>,
    /// A claim every token must carry (e.g. `sub`), logged as the principal; empty: none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub claim: String,
    /// Header carrying the token; `Bearer ` is stripped when present.
    #[serde(default = "default_jwt_header")]
    pub header: String,
}

/// A JWKS URL must be `https://`, or `http://` to a loopback address (tests, a local sidecar):
/// keys fetched in clear text over a network could be swapped.
fn check_jwks_url(url: &str) -> Result<(), String> {
    let u = url
        .parse::<http::Uri>()
        .map_err(|_| format!("{url:?} is not a URL"))?;
    let host = u
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{url:?} has no host"))?;
    match u.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err(format!(
            "{url:?}: http:// only to a loopback address; use https://"
        )),
        _ => Err(format!("{url:?} is not an https:// URL")),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(crate) fn check(c: &mut Checker) {
    let cfg = c.cfg;
    for (name, b) in &cfg.llm_backends {
        let at = format!("llm_backends.{name}");
        if b.model.trim().is_empty() {
            c.report(format!("{at}.model"), "must not be empty");
        }
        if !b.endpoint.is_empty() {
            match b.endpoint.parse::<http::Uri>() {
                Ok(u)
                    if matches!(u.scheme_str(), Some("http" | "https"))
                        && u.host().is_some_and(|h| !h.is_empty())
                        && u.query().is_none() => {}
                _ => c.report(
                    format!("{at}.endpoint"),
                    format!("{:?} is not an http:// or https:// base URL", b.endpoint),
                ),
            }
        }
        let aws = b.aws_access_key_id_file.is_some()
            || b.aws_secret_access_key_file.is_some()
            || b.aws_session_token_file.is_some();
        if aws && b.provider != LlmProvider::Bedrock {
            c.report(
                format!("{at}.aws_access_key_id_file"),
                "AWS credentials are for provider \"bedrock\" only",
            );
        }
        if aws && b.api_key_file.is_some() {
            c.report(
                format!("{at}.api_key_file"),
                "give either api_key_file or AWS credential files, not both",
            );
        }
        if aws && (b.aws_access_key_id_file.is_none() || b.aws_secret_access_key_file.is_none()) {
            c.report(
                format!("{at}.aws_secret_access_key_file"),
                "AWS credentials need both aws_access_key_id_file and aws_secret_access_key_file",
            );
        }
        for (key, f) in [
            ("api_key_file", &b.api_key_file),
            ("aws_access_key_id_file", &b.aws_access_key_id_file),
            ("aws_secret_access_key_file", &b.aws_secret_access_key_file),
            ("aws_session_token_file", &b.aws_session_token_file),
        ] {
            if f.as_deref().is_some_and(str::is_empty) {
                c.report(format!("{at}.{key}"), "must not be empty");
            }
        }
        match (b.provider, b.region.as_deref()) {
            (LlmProvider::Bedrock, None | Some("")) => {
                c.report(format!("{at}.region"), "a bedrock backend needs a region")
            }
            (LlmProvider::Bedrock, Some(r))
                if !r
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                c.report(
                    format!("{at}.region"),
                    format!("{r:?} is not an AWS region"),
                )
            }
            (LlmProvider::Bedrock, _) | (_, None) => {}
            (_, Some(_)) => c.report(format!("{at}.region"), "region is for bedrock only"),
        }
        if b.anthropic_version.is_some() && b.provider != LlmProvider::Anthropic {
            c.report(
                format!("{at}.anthropic_version"),
                "anthropic_version is for provider \"anthropic\" only",
            );
        }
        if b.timeout.is_some_and(|t| t.0.is_zero()) {
            c.report(format!("{at}.timeout"), "must be more than 0s");
        }
        if b.ca_file.as_deref().is_some_and(str::is_empty) {
            c.report(format!("{at}.ca_file"), "must not be empty");
        }
    }

    for (name, consumer) in &cfg.consumers {
        let at = format!("consumers.{name}");
        if consumer.jwt_claim.key.is_empty() {
            c.report(format!("{at}.jwt_claim.key"), "must not be empty");
        }
        if consumer.token_limit_per_minute == Some(0) {
            c.report(
                format!("{at}.token_limit_per_minute"),
                "must be at least 1 (omit it for no limit)",
            );
        }
    }

    if let Some(jwt) = &cfg.jwt {
        match (jwt.jwks_file.is_empty(), jwt.jwks_url.is_empty()) {
            (true, true) => c.report("jwt.jwks_file", "give jwks_file or jwks_url"),
            (false, false) => c.report(
                "jwt.jwks_url",
                "give either jwks_file or jwks_url, not both",
            ),
            (true, false) => {
                if let Err(why) = check_jwks_url(&jwt.jwks_url) {
                    c.report("jwt.jwks_url", why);
                }
            }
            (false, true) => {}
        }
        if jwt
            .jwks_refresh_interval
            .is_some_and(|d| d.0 < std::time::Duration::from_secs(1))
        {
            c.report("jwt.jwks_refresh_interval", "must be at least 1s");
        }
        if jwt.jwks_url.is_empty() && jwt.jwks_refresh_interval.is_some() {
            c.report(
                "jwt.jwks_refresh_interval",
                "is for jwks_url (a jwks_file is re-read when it changes)",
            );
        }
        match jwt.jwks_ca_file.as_deref() {
            Some(_) if jwt.jwks_url.is_empty() => c.report(
                "jwt.jwks_ca_file",
                "is for jwks_url (the CA trusted when fetching it)",
            ),
            Some("") => c.report("jwt.jwks_ca_file", "must not be empty"),
            _ => {}
        }
        if http::HeaderName::from_bytes(jwt.header.as_bytes()).is_err() {
            c.report(
                "jwt.header",
                format!("{:?} is not a header name", jwt.header),
            );
        }
    }

    let mut names = std::collections::HashSet::new();
    for (i, route) in cfg.llm_routes.iter().enumerate() {
        let at = format!("llm_routes[{i}]");
        if route.name.is_empty() {
            c.report(format!("{at}.name"), "must not be empty");
        } else if !names.insert(route.name.as_str()) {
            c.report(
                format!("{at}.name"),
                format!("another LLM route is named {:?}", route.name),
            );
        }
        check_attachment(
            c,
            &at,
            &route.listeners,
            &[ListenerProtocol::Http, ListenerProtocol::Https],
            "LLM route",
        );
        check_hostnames(c, &at, &route.hostnames);
        match route.path.kind {
            PathMatchType::RegularExpression => {
                c.report(format!("{at}.path.type"), "must be PathPrefix or Exact")
            }
            _ if !route.path.value.starts_with('/') => {
                c.report(format!("{at}.path.value"), "must start with '/'")
            }
            _ if route.path.value.contains("//") => {
                c.report(format!("{at}.path.value"), "must not contain '//'")
            }
            _ => {}
        }
        if route.backends.is_empty() {
            c.report(
                format!("{at}.backends"),
                "must name at least one LLM backend",
            );
        } else if route.backends.iter().all(|b| b.weight == 0) {
            c.report(
                format!("{at}.backends"),
                "at least one backend needs a weight above 0",
            );
        }
        for (j, b) in route.backends.iter().enumerate() {
            if !cfg.llm_backends.contains_key(&b.backend) {
                c.report(
                    format!("{at}.backends[{j}].backend"),
                    format!("no LLM backend named {:?} in [llm_backends]", b.backend),
                );
            }
            if b.weight > 1_000_000 {
                c.report(
                    format!("{at}.backends[{j}].weight"),
                    "must be at most 1000000",
                );
            }
        }
        for (j, name) in route.consumers.iter().enumerate() {
            if !cfg.consumers.contains_key(name) {
                c.report(
                    format!("{at}.consumers[{j}]"),
                    format!("no consumer named {name:?} in [consumers]"),
                );
            }
        }
        if !route.consumers.is_empty() && cfg.jwt.is_none() {
            c.report(
                format!("{at}.consumers"),
                "routes with consumers need a [jwt] section to identify them",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::{ConfigError, ProxyConfig};

    const HEAD: &str = r#"version = 1

[[listeners]]
name = "http"
port = 8080
protocol = "HTTP"

[[listeners]]
name = "tls"
port = 8443
protocol = "TLS"
tls = { mode = "Passthrough" }
"#;

    fn parse(body: &str) -> Result<ProxyConfig, ConfigError> {
        ProxyConfig::from_toml(&format!("{HEAD}{body}"))
    }

    fn problems(body: &str) -> Vec<String> {
        match parse(body) {
            Err(ConfigError::Invalid(p)) => p.0.iter().map(|p| p.to_string()).collect(),
            Err(e) => panic!("expected validation problems, got {e}"),
            Ok(_) => panic!("expected validation problems, config was accepted"),
        }
    }

    #[test]
    fn a_full_ai_gateway_config_parses_with_defaults() {
        let cfg = parse(
            r#"
[llm_backends.gpt]
provider = "openai"
model = "gpt-4o-mini"
api_key_file = "/keys/openai"

[llm_backends.claude]
provider = "anthropic"
model = "claude-sonnet-4-5"
endpoint = "https://api.anthropic.com"
api_key_file = "/keys/anthropic"
anthropic_version = "2023-06-01"
timeout = "60s"

[llm_backends.nova]
provider = "bedrock"
model = "amazon.nova-lite-v1:0"
region = "us-east-1"
aws_access_key_id_file = "/keys/id"
aws_secret_access_key_file = "/keys/secret"

[consumers.team-a]
jwt_claim = { key = "team", value = "a" }
token_limit_per_minute = 10000

[jwt]
issuer = "https://issuer.example"
audiences = ["gateway"]
jwks_file = "/keys/jwks.json"

[[llm_routes]]
name = "chat"
listeners = ["http"]
consumers = ["team-a"]
backends = [{ backend = "claude", weight = 3 }, { backend = "gpt" }, { backend = "nova" }]
"#,
        )
        .unwrap();
        let r = &cfg.llm_routes[0];
        assert_eq!(r.path.value, "/v1/chat/completions");
        assert_eq!(r.path.kind, crate::PathMatchType::PathPrefix);
        assert!(r.failover);
        assert_eq!(r.backends[1].weight, 1);
        assert_eq!(cfg.jwt.as_ref().unwrap().header, "authorization");
        assert_eq!(cfg.llm_backends["gpt"].provider, super::LlmProvider::OpenAi);
        // Round trip.
        let again = ProxyConfig::from_toml(&cfg.to_toml().unwrap()).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn inline_keys_are_not_part_of_the_schema() {
        let e = parse(
            r#"
[llm_backends.gpt]
provider = "openai"
model = "gpt-4o"
api_key = "sk-123"
"#,
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Parse(_)), "{e}");
        assert!(e.to_string().contains("api_key"), "{e}");
    }

    #[test]
    fn backend_problems_name_their_keys() {
        let p = problems(
            r#"
[llm_backends.a]
provider = "bedrock"
model = ""
endpoint = "ftp://x"
api_key_file = "/k"
aws_access_key_id_file = "/id"

[llm_backends.b]
provider = "openai"
model = "m"
region = "us-east-1"
anthropic_version = "2023-06-01"
timeout = "0s"
"#,
        );
        for want in [
            "llm_backends.a.model: must not be empty",
            "llm_backends.a.endpoint:",
            "llm_backends.a.api_key_file: give either",
            "llm_backends.a.aws_secret_access_key_file:",
            "llm_backends.a.region: a bedrock backend needs a region",
            "llm_backends.b.region: region is for bedrock only",
            "llm_backends.b.anthropic_version:",
            "llm_backends.b.timeout:",
        ] {
            assert!(
                p.iter().any(|x| x.starts_with(want)),
                "missing {want:?} in {p:#?}"
            );
        }
    }

    #[test]
    fn route_problems_name_their_keys() {
        let p = problems(
            r#"
[llm_backends.a]
provider = "openai"
model = "m"

[consumers.c]
jwt_claim = { key = "", value = "x" }
token_limit_per_minute = 0

[[llm_routes]]
name = "r"
listeners = ["tls", "nope"]
path = { type = "RegularExpression", value = "/v1/.*" }
consumers = ["c", "ghost"]
backends = [{ backend = "a", weight = 0 }, { backend = "missing", weight = 0 }]

[[llm_routes]]
name = "r"
listeners = ["http"]
path = { value = "v1" }
backends = []
"#,
        );
        for want in [
            "llm_routes[0].listeners[0]: a LLM route cannot attach",
            "llm_routes[0].listeners[1]: no listener named",
            "llm_routes[0].path.type:",
            "llm_routes[0].consumers[1]: no consumer named",
            "llm_routes[0].consumers: routes with consumers need a [jwt]",
            "llm_routes[0].backends: at least one backend needs a weight",
            "llm_routes[0].backends[1].backend: no LLM backend",
            "llm_routes[1].name: another LLM route",
            "llm_routes[1].path.value: must start with '/'",
            "llm_routes[1].backends: must name at least one",
            "consumers.c.jwt_claim.key: must not be empty",
            "consumers.c.token_limit_per_minute:",
        ] {
            assert!(
                p.iter().any(|x| x.starts_with(want)),
                "missing {want:?} in {p:#?}"
            );
        }
    }

    #[test]
    fn jwt_problems() {
        let p = problems(
            r#"
[jwt]
jwks_file = ""
header = "bad header"
"#,
        );
        assert!(
            p.iter()
                .any(|x| x.starts_with("jwt.jwks_file: give jwks_file or jwks_url")),
            "{p:?}"
        );
        assert!(p.iter().any(|x| x.starts_with("jwt.header")), "{p:?}");
    }

    #[test]
    fn jwks_comes_from_exactly_one_place() {
        let p = problems(
            r#"
[jwt]
jwks_file = "/keys/jwks.json"
jwks_url = "https://issuer.example/jwks"
"#,
        );
        assert!(
            p.iter().any(|x| x.starts_with("jwt.jwks_url: give either")),
            "{p:?}"
        );
        let p = problems("[jwt]\njwks_file = \"/k\"\njwks_refresh_interval = \"1m\"\n");
        assert!(
            p.iter()
                .any(|x| x.starts_with("jwt.jwks_refresh_interval: is for jwks_url")),
            "{p:?}"
        );
    }

    #[test]
    fn jwks_urls_are_https_or_loopback_http() {
        for ok in [
            "https://issuer.example/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://[::1]:9000/keys",
            "http://localhost/jwks",
        ] {
            let cfg = parse(&format!(
                "[jwt]\njwks_url = {ok:?}\njwks_refresh_interval = \"30s\"\n"
            ))
            .unwrap();
            let jwt = cfg.jwt.unwrap();
            assert_eq!(jwt.jwks_url, ok);
            assert_eq!(jwt.jwks_refresh_interval.unwrap().0.as_secs(), 30);
        }
        for (bad, why) in [
            ("http://issuer.example/jwks", "only to a loopback address"),
            ("http://10.0.0.1/jwks", "only to a loopback address"),
            ("ftp://issuer.example/jwks", "is not an https:// URL"),
            ("not a url", "is not a URL"),
        ] {
            let p = problems(&format!("[jwt]\njwks_url = {bad:?}\n"));
            assert!(
                p.iter()
                    .any(|x| x.starts_with("jwt.jwks_url:") && x.contains(why)),
                "{bad}: {p:?}"
            );
        }
        let p = problems(
            "[jwt]\njwks_url = \"https://i.example/k\"\njwks_refresh_interval = \"500ms\"\n",
        );
        assert!(
            p.iter()
                .any(|x| x.starts_with("jwt.jwks_refresh_interval: must be at least 1s")),
            "{p:?}"
        );
    }

    #[test]
    fn jwks_ca_file_goes_with_jwks_url_only() {
        let cfg = parse(
            "[jwt]\njwks_url = \"https://keycloak.auth.svc/realms/r/protocol/openid-connect/certs\"\njwks_ca_file = \"/etc/ca.pem\"\n",
        )
        .unwrap();
        let jwt = cfg.jwt.as_ref().unwrap();
        assert_eq!(jwt.jwks_ca_file.as_deref(), Some("/etc/ca.pem"));
        let again = ProxyConfig::from_toml(&cfg.to_toml().unwrap()).unwrap();
        assert_eq!(again, cfg);
        // Absent by default, and absent from the rendered config.
        let cfg = parse("[jwt]\njwks_url = \"https://i.example/k\"\n").unwrap();
        assert_eq!(cfg.jwt.as_ref().unwrap().jwks_ca_file, None);
        assert!(!cfg.to_toml().unwrap().contains("jwks_ca_file"));

        for (body, want) in [
            (
                "[jwt]\njwks_file = \"/k\"\njwks_ca_file = \"/etc/ca.pem\"\n",
                "jwt.jwks_ca_file: is for jwks_url",
            ),
            (
                "[jwt]\njwks_file = \"/k\"\njwks_ca_file = \"\"\n",
                "jwt.jwks_ca_file: is for jwks_url",
            ),
            (
                "[jwt]\njwks_url = \"https://i.example/k\"\njwks_ca_file = \"\"\n",
                "jwt.jwks_ca_file: must not be empty",
            ),
        ] {
            let p = problems(body);
            assert!(p.iter().any(|x| x.starts_with(want)), "{body}: {p:?}");
        }
        // With neither source the missing source is reported, and the CA too.
        let p = problems("[jwt]\njwks_ca_file = \"/etc/ca.pem\"\n");
        assert!(
            p.iter()
                .any(|x| x.starts_with("jwt.jwks_file: give jwks_file")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|x| x.starts_with("jwt.jwks_ca_file: is for jwks_url")),
            "{p:?}"
        );
    }

    #[test]
    fn ca_file_round_trips_and_must_name_a_file() {
        let cfg = parse(
            "[llm_backends.a]\nprovider = \"openai\"\nmodel = \"m\"\nendpoint = \"https://llm.internal\"\nca_file = \"/etc/ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(
            cfg.llm_backends["a"].ca_file.as_deref(),
            Some("/etc/ca.pem")
        );
        let again = ProxyConfig::from_toml(&cfg.to_toml().unwrap()).unwrap();
        assert_eq!(again, cfg);
        let p =
            problems("[llm_backends.a]\nprovider = \"openai\"\nmodel = \"m\"\nca_file = \"\"\n");
        assert!(
            p.iter()
                .any(|x| x.starts_with("llm_backends.a.ca_file: must not be empty")),
            "{p:?}"
        );
    }
}
