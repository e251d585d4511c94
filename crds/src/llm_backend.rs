//! `LLMBackend`: one model at one provider, with the Secret holding its credentials.

use crate::common::Status;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One model at one provider (OpenAI, Anthropic or Amazon Bedrock).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "citoroute.io",
    version = "v1alpha1",
    kind = "LLMBackend",
    root = "LlmBackend",
    plural = "llmbackends",
    namespaced,
    status = "Status",
    shortname = "llmb",
    category = "citoroute",
    doc = "One model at one provider; LLMRoutes send requests to it.",
    printcolumn = r#"{"name": "Provider", "type": "string", "jsonPath": ".spec.provider"}"#,
    printcolumn = r#"{"name": "Model", "type": "string", "jsonPath": ".spec.model"}"#,
    printcolumn = r#"{"name": "Accepted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name": "ResolvedRefs", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"ResolvedRefs\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.provider != 'bedrock' || has(self.bedrock)",
        "message": "bedrock.region is required when provider is bedrock"
    },
    {
        "rule": "!has(self.bedrock) || self.provider == 'bedrock'",
        "message": "bedrock settings are for provider bedrock only"
    },
    {
        "rule": "!has(self.anthropic) || self.provider == 'anthropic'",
        "message": "anthropic settings are for provider anthropic only"
    },
    {
        "rule": "self.provider != 'anthropic' || has(self.credentialsRef)",
        "message": "provider anthropic needs credentialsRef (an API key)"
    },
    {
        "rule": "!has(self.credentialsRef) || self.provider == 'bedrock' || !(has(self.credentialsRef.accessKeyId) || has(self.credentialsRef.secretAccessKey) || has(self.credentialsRef.sessionToken))",
        "message": "accessKeyId, secretAccessKey and sessionToken are for provider bedrock only"
    }
]))]
pub struct LlmBackendSpec {
    pub provider: LlmProvider,
    /// The model sent upstream whatever the client asked for (Bedrock: a model id, inference
    /// profile or ARN).
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// Base URL (`http://` or `https://`). Absent: the provider's public endpoint (Bedrock:
    /// the region's bedrock-runtime endpoint). Required for OpenAI-compatible servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^/?#\s]+[^?#\s]*$"))]
    pub endpoint: Option<String>,
    /// The Secret, in this namespace, holding the credentials. Absent: no key is sent
    /// (local OpenAI-compatible servers); for Bedrock, the proxy's AWS credential chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<CredentialsRef>,
    /// Time allowed for one upstream attempt, as a Gateway API duration (e.g. `60s`,
    /// `1m30s`). Default 300s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub timeout: Option<String>,
    /// Settings of provider `bedrock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bedrock: Option<BedrockSettings>,
    /// Settings of provider `anthropic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic: Option<AnthropicSettings>,
    /// A ConfigMap key in this namespace holding PEM CA certificates (one bundle) trusted
    /// for an `https://` endpoint in addition to the system roots. A list for the shape of
    /// Gateway API's BackendTLSPolicy; one entry for now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1))]
    pub ca_certificate_refs: Vec<crate::common::KeyRef>,
}

/// The wire protocol of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Bedrock,
}

impl LlmProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            LlmProvider::OpenAi => "openai",
            LlmProvider::Anthropic => "anthropic",
            LlmProvider::Bedrock => "bedrock",
        }
    }
}

/// Keys of a Secret in the backend's namespace. Each field names a key of the Secret.
/// OpenAI and Anthropic read `apiKey` (default key `apiKey`). Bedrock reads `apiKey` when it
/// is given (a Bedrock API key), else `accessKeyId` and `secretAccessKey` (default keys of
/// those names) and, when given, `sessionToken`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.apiKey) && (has(self.accessKeyId) || has(self.secretAccessKey) || has(self.sessionToken)))",
        "message": "give either apiKey or AWS keys, not both"
    }
]))]
pub struct CredentialsRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub secret_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub session_token: Option<String>,
}

/// Provider `bedrock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BedrockSettings {
    /// AWS region, e.g. `us-east-1`.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: String,
}

/// Provider `anthropic`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnthropicSettings {
    /// The `anthropic-version` header. Default `2023-06-01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub version: Option<String>,
}
