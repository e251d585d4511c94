//! AWS Signature Version 4 for Bedrock requests, and a verifier that test
//! servers can use to check a request the gateway signed.
//!
//! Signing uses `aws-sigv4` with its default settings (signature in headers,
//! no `x-amz-content-sha256` header, double URI encoding as for every
//! service but S3). [`verify`] re-signs a copy of the request at the time
//! found in its `x-amz-date`, over exactly the headers listed in its
//! `SignedHeaders`, and compares the resulting `Authorization` header.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign as aws_sign};
use aws_sigv4::sign::v4;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::Credentials;

/// How far `x-amz-date` may be from `now` in [`verify`] (AWS allows 5 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// Signing or verification failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// The credentials are not AWS access keys.
    #[error("credentials are not AWS access keys")]
    NotAwsCredentials,
    /// The request cannot be signed (bad URI, header, ...).
    #[error("cannot sign request: {0}")]
    Signing(String),
    /// A header needed for verification is missing or malformed.
    #[error("missing or malformed {0} header")]
    BadHeader(&'static str),
    /// `x-amz-date` is too far from the verifier's clock.
    #[error("request time is outside the allowed clock skew")]
    Skew,
    /// The session token sent is not the one expected.
    #[error("session token mismatch")]
    SessionToken,
    /// The signature does not match.
    #[error("signature mismatch")]
    Mismatch,
}

/// The full URI to sign: the request URI if absolute, otherwise
/// `https://{Host header}{path and query}`.
fn absolute_uri(uri: &http::Uri, headers: &HeaderMap) -> Result<String, SigV4Error> {
    if uri.scheme().is_some() && uri.authority().is_some() {
        return Ok(uri.to_string());
    }
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or(SigV4Error::BadHeader("host"))?;
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    Ok(format!("https://{host}{pq}"))
}

/// Signs the request in place: adds `authorization`, `x-amz-date` and, with
/// a session token, `x-amz-security-token`. Every header already present
/// (bar the ones `aws-sigv4` always leaves out, such as `user-agent`) is
/// signed, so set them all before calling this.
pub fn sign(
    parts: &mut http::request::Parts,
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<(), SigV4Error> {
    let headers = sign_headers(
        parts.method.as_str(),
        &parts.uri,
        &parts.headers,
        body,
        creds,
        region,
        service,
        now,
    )?;
    for (name, value) in headers {
        parts.headers.insert(name, value);
    }
    Ok(())
}

/// Computes the signing headers for a request without changing it.
#[allow(clippy::too_many_arguments)]
fn sign_headers(
    method: &str,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<Vec<(HeaderName, HeaderValue)>, SigV4Error> {
    let Credentials::Aws {
        access_key_id,
        secret_access_key,
        session_token,
    } = creds
    else {
        return Err(SigV4Error::NotAwsCredentials);
    };
    let identity = aws_credential_types::Credentials::new(
        access_key_id,
        secret_access_key,
        session_token.clone(),
        None,
        "citoroute",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SigV4Error::Signing(e.to_string()))?
        .into();
    let uri = absolute_uri(uri, headers)?;
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let value = value
            .to_str()
            .map_err(|_| SigV4Error::Signing(format!("header {name} is not visible ASCII")))?;
        pairs.push((name.as_str(), value));
    }
    let signable = SignableRequest::new(method, uri, pairs.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| SigV4Error::Signing(e.to_string()))?;
    let (instructions, _signature) = aws_sign(signable, &params)
        .map_err(|e| SigV4Error::Signing(e.to_string()))?
        .into_parts();
    let (new_headers, _params) = instructions.into_parts();
    let mut out = Vec::with_capacity(new_headers.len());
    for h in new_headers {
        let name = HeaderName::from_bytes(h.name().as_bytes())
            .map_err(|e| SigV4Error::Signing(e.to_string()))?;
        let mut value =
            HeaderValue::from_str(h.value()).map_err(|e| SigV4Error::Signing(e.to_string()))?;
        value.set_sensitive(h.sensitive());
        out.push((name, value));
    }
    Ok(out)
}

/// Verifies a request the gateway signed (for fake upstreams in tests).
///
/// `parts.uri` may be absolute or origin-form (then the `host` header gives
/// the authority). `now` is the verifier's clock; `x-amz-date` must be within
/// [`MAX_SKEW`] of it.
pub fn verify(
    parts: &http::request::Parts,
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<(), SigV4Error> {
    let header = |name: &'static str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(SigV4Error::BadHeader(name))
    };
    let auth = header("authorization")?;
    let date = header("x-amz-date")?;
    let signed_at = parse_amz_date(date).ok_or(SigV4Error::BadHeader("x-amz-date"))?;
    let skew = now
        .duration_since(signed_at)
        .unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Err(SigV4Error::Skew);
    }
    if let Credentials::Aws { session_token, .. } = creds {
        let sent = parts
            .headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok());
        if sent != session_token.as_deref() {
            return Err(SigV4Error::SessionToken);
        }
    }
    let signed: Vec<String> = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .ok_or(SigV4Error::BadHeader("authorization"))?
        .split(';')
        .map(str::to_string)
        .collect();
    let mut copy = HeaderMap::new();
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if n == AUTHORIZATION.as_str() || n == "x-amz-date" || n == "x-amz-security-token" {
            continue;
        }
        if signed.iter().any(|s| s == n) {
            copy.append(name.clone(), value.clone());
        }
    }
    // The host may come from an absolute URI rather than a header.
    if !copy.contains_key(HOST)
        && let Some(a) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        copy.insert(HOST, v);
    }
    let expected = sign_headers(
        parts.method.as_str(),
        &parts.uri,
        &copy,
        body,
        creds,
        region,
        service,
        signed_at,
    )?;
    let expected_auth = expected
        .iter()
        .find(|(n, _)| *n == AUTHORIZATION)
        .and_then(|(_, v)| v.to_str().ok())
        .ok_or(SigV4Error::Mismatch)?;
    if constant_time_eq(expected_auth.as_bytes(), auth.as_bytes()) {
        Ok(())
    } else {
        Err(SigV4Error::Mismatch)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses `YYYYMMDD'T'HHMMSS'Z'`.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), 1970-01-01 = 0.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_date() {
        let t = parse_amz_date("20240229T123456Z").expect("date");
        assert_eq!(
            t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs(),
            1_709_210_096
        );
        assert!(parse_amz_date("2024-02-29T12:34:56Z").is_none());
    }
}
