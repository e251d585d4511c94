//! The AI gateway flow: OpenAI chat completions in, each provider's native protocol out.
//!
//! LLM routes compile into the same [`Router`](crate::router::Router) as HTTP routes (a rule
//! with [`Rule::llm`](crate::router::Rule::llm) set, matching `POST` on the route's path).
//! When such a rule matches, `request_filter` hands the request to [`serve`], which answers it
//! completely and tells Pingora the response is written:
//!
//! 1. JWT validation (routes with consumers): a missing or invalid token gets 401, a valid one
//!    that belongs to no consumer allowed on the route gets 403; a consumer over its token
//!    limit for the current minute gets 429.
//! 2. The request body is read whole (at most [`MAX_BODY`], else 413).
//! 3. A backend is chosen by weight among those not cooling down after a `retry-after`.
//! 4. [`citoroute_llm::build_upstream_request`] gives the provider request (auth included);
//!    it is sent with this module's own HTTP/1.1 client ([`client`]: hyper over TCP or rustls,
//!    a backend's `ca_file` added to the system roots).
//! 5. Failover: a connect error, a timeout before the response head, 429 or 5xx moves on to
//!    the next backend by weight (never 400/401/403; never once the client got a byte); a
//!    `retry-after` keeps that backend out of the choice for that long.
//! 6. The response is translated back: whole for non-streaming requests and for errors,
//!    chunk by chunk for streams (server-sent events ending in `data: [DONE]`).
//!
//! Keys and credentials that change at run time live in background loops on one side thread
//! ([`side`]): the JWKS ([`jwks`]: a file re-read on change, or a URL refetched) and AWS
//! credentials from the default chain ([`aws`]). Requests only read their latest result.
//!
//! While waiting for the provider the client connection is watched: if the client goes away,
//! the upstream request is dropped and its connection closed at once.
//!
//! Doing this inside `request_filter`, rather than through Pingora's upstream phases, keeps
//! failover (a new request to another host, with another body) and response translation
//! (status and headers depend on the whole upstream body) in one straight-line function.

mod aws;
mod client;
mod jwks;
mod side;

use crate::backend::now_nanos;
use crate::metrics::Metrics;
use crate::router::CompileError;
use aws::AwsCredentialSource;
use bytes::{Bytes, BytesMut};
use citoroute_config::{LlmProvider, ProxyConfig};
use citoroute_core::WeightedPicker;
use citoroute_llm::jwt::{JwtConfig, JwtError};
use citoroute_llm::{BackendTarget, Credentials, LlmError, Provider, StreamTranslator};
use client::{Clients, read_all, send};
use http::HeaderName;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use jwks::{JwksSource, Origin};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest client request body accepted (413 beyond).
pub const MAX_BODY: usize = 8 << 20;
/// Largest non-streaming upstream body read (502 beyond).
const MAX_UPSTREAM_BODY: usize = 32 << 20;
/// Default time allowed per upstream attempt.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest `retry-after` honoured.
const MAX_COOLING: Duration = Duration::from_secs(300);

/// State shared by all LLM routes of one config generation.
#[derive(Debug)]
pub struct LlmShared {
    jwt: Option<JwtAuth>,
    consumers: Vec<ConsumerState>,
}

struct JwtAuth {
    /// Issuer, audiences, claim, leeway (its `jwks_json` is unused: keys come from `keys`).
    rules: JwtConfig,
    keys: Arc<JwksSource>,
    header: HeaderName,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct ConsumerState {
    name: Arc<str>,
    key: String,
    value: String,
    limit: Option<u64>,
    /// The minute (Unix seconds / 60) `used` counts.
    window: AtomicU64,
    used: AtomicU64,
}

impl ConsumerState {
    fn matches(&self, claims: &serde_json::Map<String, serde_json::Value>) -> bool {
        match claims.get(&self.key) {
            Some(serde_json::Value::String(s)) => *s == self.value,
            Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(&self.value)),
            Some(serde_json::Value::Bool(b)) => b.to_string() == self.value,
            Some(serde_json::Value::Number(n)) => n.to_string() == self.value,
            _ => false,
        }
    }

    fn used_in(&self, minute: u64) -> u64 {
        if self.window.load(Ordering::Relaxed) == minute {
            self.used.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    fn add(&self, minute: u64, tokens: u64) {
        if self.window.swap(minute, Ordering::Relaxed) != minute {
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.fetch_add(tokens, Ordering::Relaxed);
    }
}

/// How a backend authenticates.
#[derive(Debug)]
enum Auth {
    /// An API key or AWS keys read from files (or nothing).
    Fixed(Arc<Credentials>),
    /// Bedrock without credential files: the AWS default chain, renewed in the background.
    AwsChain(Arc<AwsCredentialSource>),
}

impl Auth {
    fn credentials(&self) -> Result<Arc<Credentials>, LlmError> {
        match self {
            Auth::Fixed(c) => Ok(c.clone()),
            Auth::AwsChain(src) => src.credentials().ok_or_else(|| {
                error(
                    502,
                    "api_error",
                    "upstream_unavailable",
                    format!(
                        "no AWS credentials: {}",
                        src.last_error()
                            .unwrap_or_else(|| "the default chain found none".into())
                    ),
                )
            }),
        }
    }
}

/// One LLM backend, compiled: target, credentials, its HTTP client, cooling state.
#[derive(Debug)]
pub struct LlmBackendState {
    pub name: Arc<str>,
    target: BackendTarget,
    auth: Auth,
    clients: Clients,
    timeout: Duration,
    /// `now_nanos()` before which this backend is skipped (0: not cooling).
    cooling_until: AtomicU64,
}

impl LlmBackendState {
    fn cooling(&self, now: u64) -> bool {
        self.cooling_until.load(Ordering::Relaxed) > now
    }

    fn provider_label(&self) -> &'static str {
        match self.target.provider {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Bedrock => "bedrock",
        }
    }
}

/// A compiled LLM route.
#[derive(Debug)]
pub struct LlmRoute {
    pub name: Arc<str>,
    /// Consumers allowed (indices into [`LlmShared::consumers`]); empty: open route.
    consumers: Vec<usize>,
    backends: Vec<Arc<LlmBackendState>>,
    picker: Option<WeightedPicker>,
    failover: bool,
    shared: Arc<LlmShared>,
}

fn read_secret(what: &str, file: &str) -> Result<String, CompileError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CompileError::Invalid(format!("{what}: cannot read {file}: {e}")))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(CompileError::Invalid(format!("{what}: {file} is empty")));
    }
    Ok(t.to_string())
}

/// Compiled LLM backends by name.
pub type LlmBackends = HashMap<String, Arc<LlmBackendState>>;

/// Compiles the LLM part of a config: backends (reading their key files), consumers, JWT.
pub fn compile(cfg: &ProxyConfig) -> Result<(Arc<LlmShared>, LlmBackends), CompileError> {
    let jwt = match &cfg.jwt {
        Some(j) if !cfg.llm_routes.is_empty() => {
            let origin = if j.jwks_url.is_empty() {
                Origin::File(j.jwks_file.clone().into())
            } else {
                Origin::Url {
                    url: j.jwks_url.clone(),
                    every: j
                        .jwks_refresh_interval
                        .map(|d| d.0)
                        .unwrap_or(jwks::DEFAULT_REFRESH),
                    ca_file: j.jwks_ca_file.clone(),
                }
            };
            let keys = JwksSource::get(origin).map_err(CompileError::Invalid)?;
            let header = HeaderName::from_bytes(j.header.to_ascii_lowercase().as_bytes())
                .map_err(|_| CompileError::Invalid(format!("jwt: bad header {:?}", j.header)))?;
            Some(JwtAuth {
                rules: JwtConfig {
                    issuer: j.issuer.clone(),
                    audiences: j.audiences.clone(),
                    jwks_json: String::new(),
                    claim: j.claim.clone(),
                    leeway_secs: 30,
                },
                keys,
                header,
            })
        }
        _ => None,
    };
    let consumers = cfg
        .consumers
        .iter()
        .map(|(name, c)| ConsumerState {
            name: name.as_str().into(),
            key: c.jwt_claim.key.clone(),
            value: c.jwt_claim.value.clone(),
            limit: c.token_limit_per_minute,
            window: AtomicU64::new(0),
            used: AtomicU64::new(0),
        })
        .collect();
    let mut backends = HashMap::new();
    // Only backends some route uses are loaded: an unused one with a missing key file must
    // not keep a config from loading.
    let used: std::collections::HashSet<&str> = cfg
        .llm_routes
        .iter()
        .flat_map(|r| r.backends.iter().map(|b| b.backend.as_str()))
        .collect();
    for (name, b) in cfg
        .llm_backends
        .iter()
        .filter(|(n, _)| used.contains(n.as_str()))
    {
        let what = format!("LLM backend {name:?}");
        let auth = if let Some(f) = &b.api_key_file {
            Auth::Fixed(Arc::new(Credentials::ApiKey(read_secret(&what, f)?)))
        } else if let (Some(id), Some(secret)) =
            (&b.aws_access_key_id_file, &b.aws_secret_access_key_file)
        {
            Auth::Fixed(Arc::new(Credentials::Aws {
                access_key_id: read_secret(&what, id)?,
                secret_access_key: read_secret(&what, secret)?,
                session_token: match &b.aws_session_token_file {
                    Some(f) => Some(read_secret(&what, f)?),
                    None => None,
                },
            }))
        } else if let (LlmProvider::Bedrock, Some(region)) = (b.provider, &b.region) {
            Auth::AwsChain(
                AwsCredentialSource::get(region)
                    .map_err(|e| CompileError::Invalid(format!("{what}: {e}")))?,
            )
        } else {
            Auth::Fixed(Arc::new(Credentials::None))
        };
        let clients = match &b.ca_file {
            Some(f) => client::clients_with_ca(f)
                .map_err(|e| CompileError::Invalid(format!("{what}: ca_file: {e}")))?,
            None => client::default_clients(),
        };
        let provider = match b.provider {
            LlmProvider::OpenAi => Provider::OpenAi,
            LlmProvider::Anthropic => Provider::Anthropic,
            LlmProvider::Bedrock => Provider::Bedrock,
        };
        backends.insert(
            name.clone(),
            Arc::new(LlmBackendState {
                name: name.as_str().into(),
                target: BackendTarget {
                    provider,
                    model: b.model.clone(),
                    endpoint: b.endpoint.clone(),
                    region: b.region.clone(),
                    anthropic_version: b.anthropic_version.clone(),
                },
                auth,
                clients,
                timeout: b.timeout.map(|t| t.0).unwrap_or(DEFAULT_TIMEOUT),
                cooling_until: AtomicU64::new(0),
            }),
        );
    }
    Ok((Arc::new(LlmShared { jwt, consumers }), backends))
}

/// Compiles one LLM route against the compiled backends.
pub fn compile_route(
    route: &citoroute_config::LlmRoute,
    shared: &Arc<LlmShared>,
    backends: &LlmBackends,
) -> Result<LlmRoute, CompileError> {
    let mut list = Vec::new();
    let mut weights = Vec::new();
    for r in &route.backends {
        let b = backends.get(&r.backend).ok_or_else(|| {
            CompileError::Invalid(format!("no LLM backend named {:?}", r.backend))
        })?;
        list.push(b.clone());
        weights.push(r.weight);
    }
    let consumers = route
        .consumers
        .iter()
        .map(|n| {
            shared
                .consumers
                .iter()
                .position(|c| *c.name == **n)
                .ok_or_else(|| CompileError::Invalid(format!("no consumer named {n:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !consumers.is_empty() && shared.jwt.is_none() {
        return Err(CompileError::Invalid(format!(
            "LLM route {:?} names consumers but there is no [jwt]",
            route.name
        )));
    }
    Ok(LlmRoute {
        name: route.name.as_str().into(),
        consumers,
        backends: list,
        picker: WeightedPicker::new(&weights),
        failover: route.failover,
        shared: shared.clone(),
    })
}

// ---------------------------------------------------------------------------------------------
// Answers

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn error(status: u16, kind: &str, code: &str, message: impl Into<String>) -> LlmError {
    let mut e = LlmError::invalid_request(message);
    e.status = status;
    e.kind = kind.into();
    e.code = Some(code.into());
    e
}

async fn write_json(
    session: &mut Session,
    status: u16,
    body: Bytes,
    extra: &[(&str, String)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    for (n, v) in extra {
        resp.insert_header(n.to_string(), v.as_str())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

async fn write_error(session: &mut Session, e: &LlmError, extra: &[(&str, String)]) -> Result<()> {
    write_json(session, e.status, e.to_openai_body(), extra).await
}

/// Records a refused or failed request and answers it with the OpenAI-shaped error.
async fn reject(
    session: &mut Session,
    metrics: &Metrics,
    consumer: &str,
    backend: Option<&LlmBackendState>,
    model: &str,
    e: &LlmError,
    extra: &[(&str, String)],
) -> Result<u16> {
    record(
        metrics,
        &Outcome {
            consumer,
            backend,
            model,
            code: e.status.to_string(),
        },
    );
    write_error(session, e, extra).await?;
    Ok(e.status)
}

/// What one request did, for metrics.
struct Outcome<'a> {
    consumer: &'a str,
    backend: Option<&'a LlmBackendState>,
    model: &'a str,
    code: String,
}

fn record(metrics: &Metrics, o: &Outcome<'_>) {
    let (backend, provider) = o
        .backend
        .map(|b| (b.name.as_ref(), b.provider_label()))
        .unwrap_or(("", ""));
    metrics
        .llm_requests
        .with_label_values(&[o.consumer, backend, o.model, provider, o.code.as_str()])
        .inc();
}

fn record_usage(
    metrics: &Metrics,
    consumer: &str,
    b: &LlmBackendState,
    usage: Option<citoroute_llm::Usage>,
) {
    let Some(u) = usage else { return };
    let model = b.target.model.as_str();
    let provider = b.provider_label();
    for (kind, n) in [("input", u.prompt_tokens), ("output", u.completion_tokens)] {
        metrics
            .llm_tokens
            .with_label_values(&[consumer, &b.name, model, provider, kind])
            .inc_by(n);
    }
}

// ---------------------------------------------------------------------------------------------
// The flow

/// Serves one request matched by an LLM route; always writes a response (or fails because the
/// client went away). Returns the status sent.
pub async fn serve(metrics: &Metrics, session: &mut Session, route: &LlmRoute) -> Result<u16> {
    let start = Instant::now();
    let shared = route.shared.clone();

    // 1. Who is asking.
    let mut consumer: Option<&ConsumerState> = None;
    if !route.consumers.is_empty() {
        let Some(jwt) = &shared.jwt else {
            let e = LlmError::internal("route needs JWT validation but none is configured");
            write_error(session, &e, &[]).await?;
            return Ok(e.status);
        };
        let token = session
            .req_header()
            .headers
            .get(&jwt.header)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let v = v.trim();
                match v.get(..7) {
                    Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
                    _ => v,
                }
            })
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        let claims = match token {
            None => Err(error(
                401,
                "invalid_request_error",
                "invalid_api_key",
                "missing token",
            )),
            Some(t) => validate_token(jwt, &t).await,
        };
        let claims = match claims {
            Ok(c) => c,
            Err(e) if e.status != 401 => {
                return reject(session, metrics, "", None, "", &e, &[]).await;
            }
            Err(e) => {
                return reject(
                    session,
                    metrics,
                    "",
                    None,
                    "",
                    &e,
                    &[("www-authenticate", "Bearer".to_string())],
                )
                .await;
            }
        };
        consumer = route
            .consumers
            .iter()
            .map(|&i| &shared.consumers[i])
            .find(|c| c.matches(&claims.all));
        let Some(c) = consumer else {
            let e = error(
                403,
                "permission_error",
                "permission_denied",
                "this token's consumer may not use this route",
            );
            return reject(session, metrics, "", None, "", &e, &[]).await;
        };
        if let Some(limit) = c.limit {
            let now = unix_now();
            if c.used_in(now / 60) >= limit {
                let e = error(
                    429,
                    "tokens",
                    "rate_limit_exceeded",
                    format!(
                        "consumer {:?} used its {limit} tokens for this minute",
                        c.name
                    ),
                );
                let wait = 60 - now % 60;
                return reject(
                    session,
                    metrics,
                    &c.name,
                    None,
                    "",
                    &e,
                    &[("retry-after", wait.to_string())],
                )
                .await;
            }
        }
    }
    let consumer_name = consumer.map(|c| c.name.as_ref()).unwrap_or("");

    // 2. The body.
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        error(
            413,
            "invalid_request_error",
            "request_too_large",
            format!("request body is larger than {MAX_BODY} bytes"),
        )
    };
    let refused = Outcome {
        consumer: consumer_name,
        backend: None,
        model: "",
        code: "413".into(),
    };
    if declared.is_some_and(|n| n > MAX_BODY) {
        record(metrics, &refused);
        write_error(session, &too_large(), &[]).await?;
        return Ok(413);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > MAX_BODY {
            record(metrics, &refused);
            write_error(session, &too_large(), &[]).await?;
            return Ok(413);
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();

    // 3.-5. Backends in turn.
    let Some(picker) = &route.picker else {
        let e = LlmError::internal("route has no LLM backend");
        write_error(session, &e, &[]).await?;
        return Ok(e.status);
    };
    let now = now_nanos();
    let mut tried = vec![false; route.backends.len()];
    let mut next = picker
        .pick_skipping(fastrand::u64(..), |j| route.backends[j].cooling(now))
        .or_else(|| Some(picker.pick(fastrand::u64(..))));
    let mut last_error: Option<LlmError> = None;
    while let Some(i) = next {
        tried[i] = true;
        let b = &route.backends[i];
        let following = if route.failover {
            let now = now_nanos();
            picker.pick_skipping(fastrand::u64(..), |j| {
                tried[j] || route.backends[j].cooling(now)
            })
        } else {
            None
        };
        let attempt_start = Instant::now();
        let req = match b.auth.credentials().and_then(|creds| {
            citoroute_llm::build_upstream_request(&b.target, &creds, &body, SystemTime::now())
        }) {
            Ok(r) => r,
            Err(e) if (400..500).contains(&e.status) => {
                return reject(
                    session,
                    metrics,
                    consumer_name,
                    Some(b),
                    &b.target.model,
                    &e,
                    &[],
                )
                .await;
            }
            Err(e) => {
                tracing::warn!(backend = %b.name, error = %e, "cannot build the LLM request");
                record(
                    metrics,
                    &Outcome {
                        consumer: consumer_name,
                        backend: Some(b),
                        model: &b.target.model,
                        code: "error".into(),
                    },
                );
                last_error = Some(e);
                next = following;
                continue;
            }
        };
        let stream = req.stream;
        let ctx = req.response_context(
            format!(
                "chatcmpl-{:016x}{:08x}",
                fastrand::u64(..),
                fastrand::u32(..)
            ),
            unix_now(),
        );
        let sent =
            match watch_client(session, timeout(b.timeout, send(&b.clients.get(), req))).await {
                ClientOr::Gone => return Err(client_gone()),
                ClientOr::Done(r) => r,
            };
        let resp = match sent {
            Ok(x) => x,
            Err(e) => {
                tracing::info!(backend = %b.name, error = %e.message, "LLM upstream attempt failed");
                record(
                    metrics,
                    &Outcome {
                        consumer: consumer_name,
                        backend: Some(b),
                        model: &b.target.model,
                        code: if e.status == 504 {
                            "timeout"
                        } else {
                            "connect_error"
                        }
                        .into(),
                    },
                );
                last_error = Some(e);
                next = following;
                continue;
            }
        };
        let status = resp.status().as_u16();
        let retryable = status == 429 || status >= 500;
        if retryable {
            if let Some(secs) = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                let d = Duration::from_secs(secs).min(MAX_COOLING);
                b.cooling_until
                    .store(now_nanos() + d.as_nanos() as u64, Ordering::Relaxed);
            }
            if following.is_some() {
                tracing::info!(backend = %b.name, status, "LLM backend failed; failing over");
                record(
                    metrics,
                    &Outcome {
                        consumer: consumer_name,
                        backend: Some(b),
                        model: &b.target.model,
                        code: status.to_string(),
                    },
                );
                drop(resp);
                next = following;
                continue;
            }
        }
        let labels = [b.name.as_ref(), b.target.model.as_str(), b.provider_label()];
        // Metrics are recorded just before the last byte goes out, so a client that has its
        // answer also sees it counted.
        let done = |code: u16, usage: Option<citoroute_llm::Usage>| {
            record(
                metrics,
                &Outcome {
                    consumer: consumer_name,
                    backend: Some(b),
                    model: &b.target.model,
                    code: code.to_string(),
                },
            );
            if let Some(u) = usage {
                record_usage(metrics, consumer_name, b, Some(u));
                if let Some(c) = consumer {
                    c.add(unix_now() / 60, u.total_tokens);
                }
            }
            metrics
                .llm_duration
                .with_label_values(&labels)
                .observe(start.elapsed().as_secs_f64());
        };
        let sent = if stream && (200..300).contains(&status) {
            let first_token = || {
                metrics
                    .llm_ttft
                    .with_label_values(&labels)
                    .observe(attempt_start.elapsed().as_secs_f64());
            };
            stream_back(session, b, &ctx, resp, &first_token, &done).await?
        } else {
            let read = watch_client(
                session,
                timeout(b.timeout, read_all(resp.into_body(), MAX_UPSTREAM_BODY)),
            )
            .await;
            let upstream_body = match read {
                ClientOr::Gone => return Err(client_gone()),
                ClientOr::Done(Ok(body)) => body,
                ClientOr::Done(Err(e)) => {
                    return reject(
                        session,
                        metrics,
                        consumer_name,
                        Some(b),
                        &b.target.model,
                        &e,
                        &[],
                    )
                    .await;
                }
            };
            let t =
                citoroute_llm::translate_response(b.target.provider, status, &upstream_body, &ctx);
            metrics
                .llm_ttft
                .with_label_values(&labels)
                .observe(attempt_start.elapsed().as_secs_f64());
            done(t.status, t.usage);
            write_json(session, t.status, t.body, &[]).await?;
            t.status
        };
        return Ok(sent);
    }
    let e = last_error
        .map(|e| {
            if e.status == 504 {
                e
            } else {
                error(
                    502,
                    "api_error",
                    "upstream_unavailable",
                    format!("no LLM backend could be reached: {}", e.message),
                )
            }
        })
        .unwrap_or_else(|| {
            error(
                503,
                "api_error",
                "upstream_unavailable",
                "no LLM backend available",
            )
        });
    write_error(session, &e, &[]).await?;
    Ok(e.status)
}

/// Validates a token with the current keys. An unknown `kid`, or no keys yet, asks the key
/// source for one early refresh (rate limited) and tries again: keys rotate.
async fn validate_token(
    jwt: &JwtAuth,
    token: &str,
) -> Result<citoroute_llm::jwt::Claims, LlmError> {
    let check = || match jwt.keys.keys() {
        Some(set) => {
            citoroute_llm::jwt::validate(&jwt.rules, &set, token, unix_now()).map_err(|e| {
                let unknown = matches!(e, JwtError::UnknownKid(_));
                let e = error(
                    401,
                    "invalid_request_error",
                    "invalid_api_key",
                    format!("invalid token: {e}"),
                );
                (e, unknown)
            })
        }
        None => Err((
            error(
                503,
                "api_error",
                "jwks_unavailable",
                format!(
                    "the gateway has no keys to check tokens with yet: {}",
                    jwt.keys
                        .last_error()
                        .unwrap_or_else(|| "still loading".into())
                ),
            ),
            true,
        )),
    };
    match check() {
        Err((_, true)) if jwt.keys.refresh_now().await => check().map_err(|(e, _)| e),
        other => other.map_err(|(e, _)| e),
    }
}

/// Streams a 2xx provider stream back as OpenAI SSE; calls `done` with the status and the
/// usage the provider reported before the last write. Returns the status sent (200).
async fn stream_back(
    session: &mut Session,
    b: &LlmBackendState,
    ctx: &citoroute_llm::ResponseContext,
    resp: hyper::Response<Incoming>,
    first_token: &(dyn Fn() + Sync),
    done: &(dyn Fn(u16, Option<citoroute_llm::Usage>) + Sync),
) -> Result<u16> {
    let mut translator: Box<dyn StreamTranslator> =
        citoroute_llm::stream_translator(b.target.provider, ctx);
    let mut head = ResponseHeader::build(200, Some(4))?;
    head.insert_header("content-type", "text/event-stream")?;
    head.insert_header("cache-control", "no-cache")?;
    if !session.as_downstream().is_http2() {
        head.insert_header("transfer-encoding", "chunked")?;
    }
    session.write_response_header(Box::new(head), false).await?;
    let mut body = resp.into_body();
    let mut first = false;
    loop {
        let frame = match watch_client(session, timeout_opt(b.timeout, body.frame())).await {
            ClientOr::Gone => return Err(client_gone()),
            ClientOr::Done(f) => f,
        };
        let chunk = match frame {
            Ok(Some(Ok(f))) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers
            },
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let err = LlmError::bad_upstream(format!("upstream stream failed: {e}"));
                let out = citoroute_llm::error_event(&err);
                session.write_response_body(Some(out.into()), false).await?;
                break;
            }
            Err(()) => {
                let err = error(504, "api_error", "timeout", "upstream stream timed out");
                let out = citoroute_llm::error_event(&err);
                session.write_response_body(Some(out.into()), false).await?;
                break;
            }
        };
        match translator.feed(&chunk) {
            Ok(out) => {
                if !first && translator.saw_first_token() {
                    first = true;
                    first_token();
                }
                if !out.is_empty() {
                    session.write_response_body(Some(out.into()), false).await?;
                }
            }
            Err(e) => {
                let out = citoroute_llm::error_event(&e);
                session.write_response_body(Some(out.into()), false).await?;
                break;
            }
        }
    }
    let tail = translator.finish();
    done(200, translator.usage());
    session
        .write_response_body(Some(Bytes::from(tail)), true)
        .await?;
    Ok(200)
}

// ---------------------------------------------------------------------------------------------
// Client side helpers

fn client_gone() -> Box<pingora_error::Error> {
    pingora_error::Error::explain(
        pingora_error::ErrorType::ConnectionClosed,
        "client went away during an LLM request",
    )
    .into_down()
}

enum ClientOr<T> {
    Done(T),
    Gone,
}

/// Runs `f` while watching the client connection; if the client closes it (or resets its
/// HTTP/2 stream) first, `f` is dropped, which cancels the upstream request.
async fn watch_client<F: std::future::Future>(session: &mut Session, f: F) -> ClientOr<F::Output> {
    let idle = async {
        loop {
            match session.as_downstream_mut().read_body_or_idle(true).await {
                Err(_) => return,
                // Unexpected bytes from the client (pipelining): keep waiting on `f` only.
                Ok(_) => std::future::pending::<()>().await,
            }
        }
    };
    tokio::select! {
        out = f => ClientOr::Done(out),
        () = idle => ClientOr::Gone,
    }
}

// Pingora's timer-thread timeouts rather than Tokio's: arming a Tokio timer on an otherwise
// timer-less worker runtime writes its eventfd (a syscall and an extra reactor turn per request),
// and these are armed only if the future is still pending after its first poll.
async fn timeout<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, LlmError>>,
) -> Result<T, LlmError> {
    pingora_timeout::fast_timeout::fast_timeout(d, f)
        .await
        .unwrap_or_else(|_| Err(error(504, "api_error", "timeout", "upstream timed out")))
}

async fn timeout_opt<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Result<T, ()> {
    pingora_timeout::fast_timeout::fast_timeout(d, f)
        .await
        .map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn consumer(key: &str, value: &str) -> ConsumerState {
        ConsumerState {
            name: "c".into(),
            key: key.into(),
            value: value.into(),
            limit: Some(10),
            window: AtomicU64::new(0),
            used: AtomicU64::new(0),
        }
    }

    fn claims(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn claims_match_strings_lists_and_scalars() {
        let c = consumer("team", "a");
        assert!(c.matches(&claims(json!({"team": "a"}))));
        assert!(c.matches(&claims(json!({"team": ["x", "a"]}))));
        assert!(!c.matches(&claims(json!({"team": "ab"}))));
        assert!(!c.matches(&claims(json!({"team": ["ab"]}))));
        assert!(!c.matches(&claims(json!({"other": "a"}))));
        assert!(consumer("tier", "3").matches(&claims(json!({"tier": 3}))));
        assert!(consumer("admin", "true").matches(&claims(json!({"admin": true}))));
    }

    #[test]
    fn token_windows_reset_each_minute() {
        let c = consumer("k", "v");
        assert_eq!(c.used_in(100), 0);
        c.add(100, 7);
        c.add(100, 5);
        assert_eq!(c.used_in(100), 12);
        assert_eq!(c.used_in(101), 0);
        c.add(101, 1);
        assert_eq!(c.used_in(101), 1);
        assert_eq!(c.used_in(100), 0);
    }
}
