//! The generated schemas accept the documented examples and refuse what they must refuse.
//! `validate` checks the structural part the API server enforces (types, required, enums,
//! bounds, patterns, unknown fields); CEL rules need an API server and are only checked for
//! presence here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use std::path::Path;

/// The `openAPIV3Schema` of a kind, as JSON.
fn schema(kind: &str) -> Value {
    let crd = citoroute_crds::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD {kind}"));
    let v = serde_json::to_value(&crd).unwrap();
    v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Problems of `value` against a structural schema, as `path: message`.
fn validate(value: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != json!(true) {
            out.push(format!("{at}: null is not allowed"));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        out.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    let ok_type = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !ok_type {
        out.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return;
    }
    match value {
        Value::Object(m) => {
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap();
                if !m.contains_key(r) {
                    out.push(format!("{at}.{r}: required"));
                }
            }
            let props = schema["properties"].as_object();
            for (k, v) in m {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => validate(v, s, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k}: unknown field")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                out.push(format!("{at}: fewer than {min} items"));
            }
            if let Some(max) = schema["maxItems"].as_u64()
                && (items.len() as u64) > max
            {
                out.push(format!("{at}: more than {max} items"));
            }
            for (i, item) in items.iter().enumerate() {
                validate(item, &schema["items"], &format!("{at}[{i}]"), out);
            }
        }
        Value::String(s) => {
            let n = s.chars().count() as u64;
            if schema["minLength"].as_u64().is_some_and(|min| n < min) {
                out.push(format!("{at}: shorter than {}", schema["minLength"]));
            }
            if schema["maxLength"].as_u64().is_some_and(|max| n > max) {
                out.push(format!("{at}: longer than {}", schema["maxLength"]));
            }
            if let Some(p) = schema["pattern"].as_str()
                && !regex::Regex::new(p).unwrap().is_match(s)
            {
                out.push(format!("{at}: {s:?} does not match {p}"));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap();
            if schema["minimum"].as_f64().is_some_and(|min| x < min) {
                out.push(format!("{at}: below {}", schema["minimum"]));
            }
            if schema["maximum"].as_f64().is_some_and(|max| x > max) {
                out.push(format!("{at}: above {}", schema["maximum"]));
            }
        }
        _ => {}
    }
}

/// Problems of an object's `spec` against its kind's schema.
fn problems(kind: &str, spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    validate(spec, &schema(kind)["properties"]["spec"], "spec", &mut out);
    out
}

/// Every `citoroute.io` object in the YAML blocks of the AI gateway guide.
fn documented_examples() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ai-gateway.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```yaml") => block = Some(String::new()),
            (Some(b), "```") => {
                let docs: Vec<Value> = serde_saphyr::from_multiple(b).unwrap();
                out.extend(docs.into_iter().filter(|d| {
                    d["apiVersion"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("citoroute.io/"))
                }));
                block = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

#[test]
fn documented_examples_are_valid() {
    let examples = documented_examples();
    let mut kinds = std::collections::BTreeSet::new();
    for ex in &examples {
        let kind = ex["kind"].as_str().unwrap();
        assert_eq!(ex["apiVersion"], "citoroute.io/v1alpha1");
        let p = problems(kind, &ex["spec"]);
        assert!(p.is_empty(), "{kind} {}: {p:?}", ex["metadata"]["name"]);
        // The Rust types read them too.
        let typed = match kind {
            "LLMBackend" => serde_json::from_value::<citoroute_crds::LlmBackend>(ex.clone())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            "LLMRoute" => serde_json::from_value::<citoroute_crds::LlmRoute>(ex.clone())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            "Consumer" => serde_json::from_value::<citoroute_crds::Consumer>(ex.clone())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            "JWTValidationPolicy" => {
                serde_json::from_value::<citoroute_crds::JwtValidationPolicy>(ex.clone())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            other => Err(format!("unexpected kind {other}")),
        };
        assert!(typed.is_ok(), "{kind}: {typed:?}");
        kinds.insert(kind.to_string());
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["Consumer", "JWTValidationPolicy", "LLMBackend", "LLMRoute"],
        "the guide shows every kind"
    );
}

#[test]
fn llm_backend_refusals() {
    let ok = json!({"provider": "openai", "model": "gpt-4o-mini"});
    assert_eq!(problems("LLMBackend", &ok), Vec::<String>::new());
    for (spec, want) in [
        (json!({"provider": "openai"}), "spec.model: required"),
        (json!({"model": "m"}), "spec.provider: required"),
        (json!({"provider": "azure", "model": "m"}), "spec.provider:"),
        (
            json!({"provider": "openai", "model": ""}),
            "spec.model: shorter",
        ),
        (
            json!({"provider": "openai", "model": "m", "timeout": "5 minutes"}),
            "spec.timeout:",
        ),
        (
            json!({"provider": "openai", "model": "m", "endpoint": "ftp://x"}),
            "spec.endpoint:",
        ),
        (
            json!({"provider": "bedrock", "model": "m", "bedrock": {"region": "US East"}}),
            "spec.bedrock.region:",
        ),
        (
            json!({"provider": "openai", "model": "m", "apiKey": "sk-inline"}),
            "spec.apiKey: unknown field",
        ),
        (
            json!({"provider": "openai", "model": "m", "credentialsRef": {"apiKey": "k"}}),
            "spec.credentialsRef.name: required",
        ),
    ] {
        let p = problems("LLMBackend", &spec);
        assert!(p.iter().any(|x| x.starts_with(want)), "{spec}: {p:?}");
    }
}

#[test]
fn llm_route_refusals() {
    let ok = json!({"parentRefs": [{"name": "gw"}], "backendRefs": [{"name": "b"}]});
    assert_eq!(problems("LLMRoute", &ok), Vec::<String>::new());
    for (spec, want) in [
        (
            json!({"backendRefs": [{"name": "b"}]}),
            "spec.parentRefs: required",
        ),
        (
            json!({"parentRefs": [], "backendRefs": [{"name": "b"}]}),
            "spec.parentRefs: fewer",
        ),
        (
            json!({"parentRefs": [{"name": "gw"}], "backendRefs": []}),
            "spec.backendRefs: fewer",
        ),
        (
            json!({"parentRefs": [{"name": "gw"}], "backendRefs": [{"name": "b", "weight": 2_000_000}]}),
            "spec.backendRefs[0].weight: above",
        ),
        (
            json!({"parentRefs": [{"name": "gw"}], "backendRefs": [{"name": "b"}], "path": {"type": "RegularExpression", "value": "/v1/.*"}}),
            "spec.path.type:",
        ),
        (
            json!({"parentRefs": [{"name": "gw"}], "backendRefs": [{"name": "b"}], "path": {"value": "v1"}}),
            "spec.path.value:",
        ),
        (
            json!({"parentRefs": [{"name": "gw", "port": 0}], "backendRefs": [{"name": "b"}]}),
            "spec.parentRefs[0].port: below",
        ),
        (
            json!({"parentRefs": [{"name": "gw"}], "backendRefs": [{"name": "b"}], "hostnames": ["Not_A.Host"]}),
            "spec.hostnames[0]:",
        ),
    ] {
        let p = problems("LLMRoute", &spec);
        assert!(p.iter().any(|x| x.starts_with(want)), "{spec}: {p:?}");
    }
}

#[test]
fn consumer_and_policy_refusals() {
    assert_eq!(
        problems(
            "Consumer",
            &json!({"jwtClaimMatch": {"key": "team", "value": "a"}})
        ),
        Vec::<String>::new()
    );
    let p = problems(
        "Consumer",
        &json!({"jwtClaimMatch": {"key": "team", "value": "a"}, "tokenLimitPerMinute": 0}),
    );
    assert!(
        p.iter().any(|x| x.starts_with("spec.tokenLimitPerMinute")),
        "{p:?}"
    );
    let p = problems("Consumer", &json!({"jwtClaimMatch": {"value": "a"}}));
    assert!(p.contains(&"spec.jwtClaimMatch.key: required".to_string()));

    let ok = json!({"targetRef": {"name": "gw"}, "jwks": {"secretRef": {"name": "s", "key": "jwks.json"}}});
    assert_eq!(problems("JWTValidationPolicy", &ok), Vec::<String>::new());
    let p = problems("JWTValidationPolicy", &json!({"targetRef": {"name": "gw"}}));
    assert!(p.contains(&"spec.jwks: required".to_string()), "{p:?}");
    let p = problems(
        "JWTValidationPolicy",
        &json!({"targetRef": {"name": "gw"}, "jwks": {"url": "file:///etc/jwks"}}),
    );
    assert!(p.iter().any(|x| x.starts_with("spec.jwks.url")), "{p:?}");
}

#[test]
fn enums_required_fields_and_rules_are_in_the_schemas() {
    let b = schema("LLMBackend");
    let spec = &b["properties"]["spec"];
    assert_eq!(
        spec["properties"]["provider"]["enum"],
        json!(["openai", "anthropic", "bedrock"])
    );
    assert_eq!(spec["required"], json!(["model", "provider"]));
    let rules = spec["x-kubernetes-validations"].to_string();
    assert!(rules.contains("has(self.bedrock)"), "{rules}");
    assert!(rules.contains("has(self.credentialsRef)"), "{rules}");

    let r = schema("LLMRoute");
    let spec = &r["properties"]["spec"];
    assert_eq!(spec["required"], json!(["backendRefs", "parentRefs"]));
    assert_eq!(
        spec["properties"]["path"]["properties"]["type"]["enum"],
        json!(["PathPrefix", "Exact"])
    );
    assert_eq!(
        spec["properties"]["path"]["default"],
        json!({"type": "PathPrefix", "value": "/v1/chat/completions"})
    );
    assert_eq!(
        spec["properties"]["backendRefs"]["items"]["properties"]["weight"]["default"],
        json!(1)
    );

    let p = schema("JWTValidationPolicy");
    let jwks = &p["properties"]["spec"]["properties"]["jwks"];
    assert!(
        jwks["x-kubernetes-validations"]
            .to_string()
            .contains("has(self.url)"),
        "{jwks}"
    );

    for kind in ["LLMBackend", "LLMRoute", "Consumer", "JWTValidationPolicy"] {
        let conditions = &schema(kind)["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{kind}");
        let cond = &conditions["items"];
        assert_eq!(
            cond["properties"]["status"]["enum"],
            json!(["True", "False", "Unknown"])
        );
        assert_eq!(
            cond["required"],
            json!(["lastTransitionTime", "message", "reason", "status", "type"]),
            "{kind}"
        );
    }
}
