//! `LLMRoute`: serves the OpenAI chat completions API on a Gateway's listeners from weighted
//! LLMBackends, optionally only to the Consumers it names.

use crate::common::{Status, gateway_group, gateway_kind};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `POST <path>` on the parent Gateways' HTTP and HTTPS listeners, answered by LLMBackends.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "citoroute.io",
    version = "v1alpha1",
    kind = "LLMRoute",
    root = "LlmRoute",
    plural = "llmroutes",
    namespaced,
    status = "Status",
    shortname = "llmr",
    category = "citoroute",
    doc = "Serves OpenAI chat completions on a Gateway from weighted LLMBackends.",
    printcolumn = r#"{"name": "Path", "type": "string", "jsonPath": ".spec.path.value"}"#,
    printcolumn = r#"{"name": "Accepted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name": "ResolvedRefs", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"ResolvedRefs\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.backendRefs.exists(b, !has(b.weight) || b.weight > 0)",
        "message": "at least one backendRef needs a weight above 0"
    }
]))]
pub struct LlmRouteSpec {
    /// The Gateways (and optionally their listeners) to attach to.
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<ParentReference>,
    /// Hostnames to serve, as for an HTTPRoute. Empty: every hostname the listener accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub hostnames: Vec<Hostname>,
    /// The path served; `POST` only.
    #[serde(default)]
    pub path: LlmPath,
    /// Consumers (in this namespace) allowed to use the route; each request must carry a
    /// token the Gateway's JWTValidationPolicy accepts. Empty: open to anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub consumer_refs: Vec<LocalRef>,
    /// LLMBackends (in this namespace), picked by weight.
    #[schemars(length(min = 1, max = 16))]
    pub backend_refs: Vec<LlmBackendRef>,
    /// On a connect error, a timeout before the response head, 429 or 5xx, try the next
    /// backend. Default true.
    #[serde(default = "yes")]
    pub failover: bool,
}

fn yes() -> bool {
    true
}

/// A hostname as Gateway API writes it: a DNS name, or `*.` and a DNS name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Hostname(
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
        )
    )]
    pub String,
);

/// A Gateway API `ParentReference` to a Gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    #[serde(default = "gateway_group")]
    #[schemars(length(max = 253))]
    pub group: String,
    #[serde(default = "gateway_kind")]
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// The Gateway's namespace; default the route's. Another namespace works when the
    /// listener's `allowedRoutes.namespaces` admits the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Attach only to the listener of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
    /// Attach only to listeners on this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// How the path matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PathMatchType {
    #[default]
    PathPrefix,
    Exact,
}

/// The path an LLMRoute serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmPath {
    #[serde(rename = "type", default)]
    pub kind: PathMatchType,
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[^?#\s]*$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "!self.contains('//')", "message": "must not contain '//'"}
    ]))]
    pub value: String,
}

/// The OpenAI chat completions path.
pub fn default_path() -> String {
    "/v1/chat/completions".to_string()
}

impl Default for LlmPath {
    fn default() -> Self {
        LlmPath {
            kind: PathMatchType::PathPrefix,
            value: default_path(),
        }
    }
}

/// An object of a fixed kind in the referring object's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A weighted reference to an LLMBackend in the route's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmBackendRef {
    #[serde(default = "citoroute_group")]
    #[schemars(length(max = 253))]
    pub group: String,
    #[serde(default = "llm_backend_kind")]
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Share of requests, relative to the other backends; 0 only as a failover target.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub weight: i32,
}

fn one() -> i32 {
    1
}

fn citoroute_group() -> String {
    crate::GROUP.to_string()
}

fn llm_backend_kind() -> String {
    "LLMBackend".to_string()
}
