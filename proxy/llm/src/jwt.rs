//! JWT validation against a JWKS, for the gateway's authentication filter.
//!
//! * Algorithms: RS256/384/512, PS256/384/512 (`kty: RSA`), ES256 (`P-256`),
//!   ES384 (`P-384`), EdDSA (`OKP`/`Ed25519`), HS256/384/512 (`kty: oct`).
//! * The token's `alg` must belong to the key's type (and equal the key's
//!   `alg` when the JWK names one): an HS256 token "signed" with an RSA
//!   public key is rejected, as is `alg: none` in any spelling.
//! * With a `kid` the key must be in the set; without one every compatible
//!   key is tried.
//! * `exp` is required; `exp` and `nbf` are checked against the `now` passed
//!   in, with `leeway_secs` either way. `iss` must equal [`JwtConfig::issuer`]
//!   unless that is empty; `aud` (string or list) must contain one of
//!   [`JwtConfig::audiences`] unless that list is empty.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde_json::{Map, Value};

/// Validator settings.
#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    /// Required `iss`; empty means not checked.
    pub issuer: String,
    /// Accepted `aud` values; empty means not checked.
    pub audiences: Vec<String>,
    /// The JWKS document (`{"keys":[...]}`).
    pub jwks_json: String,
    /// Claim that names the principal (e.g. `sub`); empty means none needed.
    pub claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
}

/// The claims of a valid token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// Every claim of the payload.
    pub all: Map<String, Value>,
    /// The configured claim's value as text (strings as is, other JSON
    /// values serialized); `None` only when no claim is configured.
    pub principal: Option<String>,
}

/// Why a token (or a JWKS) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("invalid JWKS: {0}")]
    InvalidJwks(String),
    #[error("malformed token")]
    Malformed,
    #[error("unsigned tokens (alg none) are not accepted")]
    AlgNone,
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error("no key with kid {0}")]
    UnknownKid(String),
    #[error("the token's algorithm does not match the key")]
    AlgorithmMismatch,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("wrong issuer")]
    BadIssuer,
    #[error("wrong audience")]
    BadAudience,
    #[error("missing or malformed claim {0}")]
    MissingClaim(String),
}

#[derive(Debug)]
struct Key {
    kid: Option<String>,
    kty: String,
    crv: Option<String>,
    alg: Option<String>,
    key: DecodingKey,
}

impl Key {
    fn accepts(&self, alg: Algorithm, alg_name: &str) -> bool {
        use Algorithm::*;
        if self.alg.as_deref().is_some_and(|a| a != alg_name) {
            return false;
        }
        let crv = self.crv.as_deref();
        match self.kty.as_str() {
            "RSA" => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            "EC" => matches!((alg, crv), (ES256, Some("P-256")) | (ES384, Some("P-384"))),
            "OKP" => matches!((alg, crv), (EdDSA, Some("Ed25519"))),
            "oct" => matches!(alg, HS256 | HS384 | HS512),
            _ => false,
        }
    }
}

fn parse_alg(s: &str) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match s {
        "HS256" => HS256,
        "HS384" => HS384,
        "HS512" => HS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "EdDSA" => EdDSA,
        _ => return None,
    })
}

/// A parsed JWKS: the keys tokens may be signed with. Kept apart from [`JwtConfig`] so a key
/// set fetched or re-read at run time can be swapped under unchanged validation rules.
#[derive(Debug)]
pub struct JwkSet {
    keys: Vec<Key>,
}

impl JwkSet {
    /// Parses a JWKS document. Keys marked `"use": "enc"` and keys of unknown types are
    /// skipped; a set with no usable key is an error.
    pub fn parse(json: &str) -> Result<Self, JwtError> {
        let doc: Value =
            serde_json::from_str(json).map_err(|e| JwtError::InvalidJwks(e.to_string()))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| JwtError::InvalidJwks("no \"keys\" array".into()))?;
        let mut keys = Vec::new();
        for k in list {
            let s = |name: &str| k.get(name).and_then(Value::as_str).map(str::to_string);
            if s("use").as_deref() == Some("enc") {
                continue;
            }
            let Some(kty) = s("kty") else {
                continue;
            };
            let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            keys.push(Key {
                kid: s("kid"),
                kty,
                crv: s("crv"),
                alg: s("alg"),
                key,
            });
        }
        if keys.is_empty() {
            return Err(JwtError::InvalidJwks("no usable signing key".into()));
        }
        Ok(Self { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a set without a usable key is refused by [`JwkSet::parse`].
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s of the keys that have one.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }
}

/// Validates tokens against one JWKS.
#[derive(Debug)]
pub struct JwtValidator {
    cfg: JwtConfig,
    keys: JwkSet,
}

impl JwtValidator {
    /// Parses the JWKS in [`JwtConfig::jwks_json`] (see [`JwkSet::parse`]).
    pub fn new(cfg: JwtConfig) -> Result<Self, JwtError> {
        let keys = JwkSet::parse(&cfg.jwks_json)?;
        Ok(Self { cfg, keys })
    }

    /// Number of usable keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Validates a compact JWS token at `now_unix` (seconds since the epoch).
    pub fn validate(&self, token: &str, now_unix: u64) -> Result<Claims, JwtError> {
        validate(&self.cfg, &self.keys, token, now_unix)
    }
}

/// Validates a compact JWS token against `keys` under `cfg`'s rules at `now_unix` (seconds
/// since the epoch); [`JwtConfig::jwks_json`] is not used.
pub fn validate(
    cfg: &JwtConfig,
    keys: &JwkSet,
    token: &str,
    now_unix: u64,
) -> Result<Claims, JwtError> {
    let token = token.trim();
    let mut segs = token.split('.');
    let (Some(h), Some(_), Some(_), None) = (segs.next(), segs.next(), segs.next(), segs.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Value = b64url_decode(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    let alg_s = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::Malformed)?;
    if alg_s.eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgNone);
    }
    let alg = parse_alg(alg_s).ok_or_else(|| JwtError::UnsupportedAlgorithm(alg_s.to_string()))?;
    let kid = header.get("kid").and_then(Value::as_str);
    let candidates: Vec<&Key> = match kid {
        Some(kid) => {
            let c: Vec<&Key> = keys
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if c.is_empty() {
                return Err(JwtError::UnknownKid(kid.to_string()));
            }
            c
        }
        None => keys.keys.iter().collect(),
    };
    let compatible: Vec<&Key> = candidates
        .into_iter()
        .filter(|k| k.accepts(alg, alg_s))
        .collect();
    if compatible.is_empty() {
        return Err(JwtError::AlgorithmMismatch);
    }
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let mut all = None;
    for k in compatible {
        if let Ok(d) = decode::<Map<String, Value>>(token, &k.key, &v) {
            all = Some(d.claims);
            break;
        }
    }
    let all = all.ok_or(JwtError::BadSignature)?;
    check_claims(cfg, &all, now_unix)?;
    let principal = if cfg.claim.is_empty() {
        None
    } else {
        match all.get(&cfg.claim) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) if !v.is_null() => Some(v.to_string()),
            _ => return Err(JwtError::MissingClaim(cfg.claim.clone())),
        }
    };
    Ok(Claims { all, principal })
}

fn check_claims(cfg: &JwtConfig, c: &Map<String, Value>, now: u64) -> Result<(), JwtError> {
    let leeway = cfg.leeway_secs;
    let exp = c
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or_else(|| JwtError::MissingClaim("exp".into()))?;
    if (now as f64) > exp + leeway as f64 {
        return Err(JwtError::Expired);
    }
    match c.get("nbf") {
        None => {}
        Some(n) => {
            let nbf = n
                .as_f64()
                .ok_or_else(|| JwtError::MissingClaim("nbf".into()))?;
            if ((now + leeway) as f64) < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
    }
    if !cfg.issuer.is_empty() && c.get("iss").and_then(Value::as_str) != Some(cfg.issuer.as_str()) {
        return Err(JwtError::BadIssuer);
    }
    if !cfg.audiences.is_empty() {
        let ok = match c.get("aud") {
            Some(Value::String(a)) => cfg.audiences.iter().any(|x| x == a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| cfg.audiences.iter().any(|x| x == a)),
            _ => false,
        };
        if !ok {
            return Err(JwtError::BadAudience);
        }
    }
    Ok(())
}

/// Unpadded base64url decoding (padding tolerated).
fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}
