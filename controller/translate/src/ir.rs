//! Our own small mirror of the Gateway API spec fields we read. The generated `gateway-api`
//! types get a new Rust name whenever upstream moves a field (`HttpRouteRulesFilters...`,
//! `GrpcRouteRulesFilters...` are distinct types of the same JSON), so the translation reads
//! the JSON shape through these structs instead: one filter type for every route kind, stable
//! across `gateway-api` releases.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Re-reads a generated type as one of ours through its JSON form.
pub(crate) fn convert<S: Serialize, T: DeserializeOwned>(spec: &S) -> Result<T, String> {
    let value = serde_json::to_value(spec).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GatewaySpecIr {
    pub gateway_class_name: String,
    pub listeners: Vec<ListenerIr>,
    pub addresses: Vec<serde_json::Value>,
    pub tls: Option<GatewayTlsIr>,
}

/// `spec.tls`: of it we read the frontend (client certificate) validation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GatewayTlsIr {
    pub frontend: Option<FrontendTlsIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct FrontendTlsIr {
    pub default: FrontendTlsConfigIr,
    pub per_port: Vec<FrontendPortIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct FrontendPortIr {
    pub port: i32,
    pub tls: FrontendTlsConfigIr,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct FrontendTlsConfigIr {
    pub validation: Option<FrontendValidationIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct FrontendValidationIr {
    pub ca_certificate_refs: Vec<ObjRefIr>,
    /// `AllowValidOnly` (the default) or `AllowInsecureFallback`.
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ListenerIr {
    pub name: String,
    pub hostname: Option<String>,
    pub port: i32,
    pub protocol: String,
    pub tls: Option<ListenerTlsIr>,
    pub allowed_routes: Option<AllowedRoutesIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ListenerTlsIr {
    pub mode: Option<String>,
    pub certificate_refs: Vec<ObjRefIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ObjRefIr {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct AllowedRoutesIr {
    pub namespaces: Option<RouteNamespacesIr>,
    pub kinds: Option<Vec<KindIr>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct RouteNamespacesIr {
    pub from: Option<String>,
    pub selector: Option<LabelSelectorIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct LabelSelectorIr {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelExprIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct LabelExprIr {
    pub key: String,
    pub operator: String,
    pub values: Vec<String>,
}

impl LabelSelectorIr {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let got = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => got.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => got.is_none_or(|v| !e.values.contains(v)),
                    "Exists" => got.is_some(),
                    "DoesNotExist" => got.is_none(),
                    _ => false,
                }
            })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct KindIr {
    pub group: Option<String>,
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ParentRefIr {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<i32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct RouteSpecIr<R> {
    pub parent_refs: Vec<ParentRefIr>,
    pub hostnames: Vec<String>,
    pub rules: Vec<R>,
}

impl<R> Default for RouteSpecIr<R> {
    fn default() -> Self {
        RouteSpecIr {
            parent_refs: Vec::new(),
            hostnames: Vec::new(),
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HttpRuleIr {
    pub name: Option<String>,
    pub matches: Vec<HttpMatchIr>,
    pub filters: Vec<FilterIr>,
    pub backend_refs: Vec<BackendRefIr>,
    pub timeouts: Option<TimeoutsIr>,
    pub retry: Option<RetryIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HttpMatchIr {
    pub path: Option<PathIr>,
    pub headers: Vec<ValueMatchIr>,
    pub query_params: Vec<ValueMatchIr>,
    pub method: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PathIr {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ValueMatchIr {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct FilterIr {
    #[serde(rename = "type")]
    pub kind: String,
    pub request_header_modifier: Option<HeaderModIr>,
    pub response_header_modifier: Option<HeaderModIr>,
    pub request_redirect: Option<RedirectIr>,
    pub url_rewrite: Option<RewriteIr>,
    pub request_mirror: Option<MirrorIr>,
    pub cors: Option<CorsIr>,
    pub extension_ref: Option<KindIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HeaderModIr {
    pub set: Vec<NameValueIr>,
    pub add: Vec<NameValueIr>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct NameValueIr {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct RedirectIr {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModIr>,
    pub port: Option<i32>,
    pub status_code: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PathModIr {
    #[serde(rename = "type")]
    pub kind: String,
    pub replace_full_path: Option<String>,
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct RewriteIr {
    pub hostname: Option<String>,
    pub path: Option<PathModIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct MirrorIr {
    pub backend_ref: BackendRefIr,
    pub percent: Option<i32>,
    pub fraction: Option<FractionIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct FractionIr {
    pub numerator: i32,
    pub denominator: Option<i32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct CorsIr {
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<i32>,
    pub allow_credentials: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct BackendRefIr {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<i32>,
    pub weight: Option<i32>,
    pub filters: Vec<FilterIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TimeoutsIr {
    pub request: Option<String>,
    pub backend_request: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct RetryIr {
    pub attempts: Option<i32>,
    pub codes: Vec<i32>,
    pub backoff: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GrpcRuleIr {
    pub name: Option<String>,
    pub matches: Vec<GrpcMatchIr>,
    pub filters: Vec<FilterIr>,
    pub backend_refs: Vec<BackendRefIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GrpcMatchIr {
    pub method: Option<GrpcMethodIr>,
    pub headers: Vec<ValueMatchIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GrpcMethodIr {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub service: Option<String>,
    pub method: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TlsRuleIr {
    pub backend_refs: Vec<BackendRefIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ReferenceGrantSpecIr {
    pub from: Vec<GrantFromIr>,
    pub to: Vec<GrantToIr>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GrantFromIr {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GrantToIr {
    pub group: String,
    pub kind: String,
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelExprIr {
        LabelExprIr {
            key: key.to_string(),
            operator: operator.to_string(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn label_selector_operators() {
        let l = labels(&[("team", "a"), ("env", "prod")]);
        let sel = |e: Vec<LabelExprIr>| LabelSelectorIr {
            match_labels: BTreeMap::new(),
            match_expressions: e,
        };
        assert!(sel(vec![expr("team", "In", &["a", "b"])]).matches(&l));
        assert!(!sel(vec![expr("team", "NotIn", &["a"])]).matches(&l));
        assert!(sel(vec![expr("zone", "NotIn", &["x"])]).matches(&l));
        assert!(sel(vec![expr("env", "Exists", &[])]).matches(&l));
        assert!(sel(vec![expr("zone", "DoesNotExist", &[])]).matches(&l));
        assert!(!sel(vec![expr("env", "Bogus", &[])]).matches(&l));
        let by_label = LabelSelectorIr {
            match_labels: labels(&[("env", "prod")]),
            match_expressions: Vec::new(),
        };
        assert!(by_label.matches(&l));
        assert!(!by_label.matches(&labels(&[("env", "dev")])));
        // An empty selector selects everything.
        assert!(sel(Vec::new()).matches(&BTreeMap::new()));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let v = serde_json::json!({"name": "l", "port": 80, "protocol": "HTTP", "future": 1});
        let l: ListenerIr = convert(&v).unwrap_or_default();
        assert_eq!((l.name.as_str(), l.port), ("l", 80));
    }
}
