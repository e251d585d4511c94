//! `Consumer`: who a validated token belongs to, and how many tokens it may spend.

use crate::common::Status;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A caller of LLMRoutes, recognised by one claim of its JWT.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "citoroute.io",
    version = "v1alpha1",
    kind = "Consumer",
    plural = "consumers",
    namespaced,
    status = "Status",
    shortname = "llmc",
    category = "citoroute",
    doc = "A caller of LLMRoutes, recognised by one claim of its validated JWT.",
    printcolumn = r#"{"name": "Claim", "type": "string", "jsonPath": ".spec.jwtClaimMatch.key"}"#,
    printcolumn = r#"{"name": "Value", "type": "string", "jsonPath": ".spec.jwtClaimMatch.value"}"#,
    printcolumn = r#"{"name": "TokensPerMinute", "type": "integer", "jsonPath": ".spec.tokenLimitPerMinute"}"#,
    printcolumn = r#"{"name": "Accepted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerSpec {
    /// A token belongs to this consumer when claim `key` equals `value`, or is a list
    /// containing it. One claim, not a list: the proxy matches one; to admit several
    /// groups, name several Consumers on the route.
    pub jwt_claim_match: ClaimMatch,
    /// Prompt plus completion tokens per calendar minute, per proxy replica; past it,
    /// requests get 429 until the minute ends. Absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub token_limit_per_minute: Option<i64>,
}

/// A claim and the value it must have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimMatch {
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    #[schemars(length(max = 1024))]
    pub value: String,
}
