//! Gateway API durations (GEP-2257): `1h`, `500ms`, `1m30s`, `0s`.
//!
//! Kept as the wire string so a config round-trips byte for byte; parsed on validation and
//! again (cheaply) when the proxy compiles its router.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration written the Gateway API way: up to four `<number><unit>` parts, unit one of
/// `h`, `m`, `s`, `ms`, each number at most five digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GatewayDuration(pub Duration);

impl GatewayDuration {
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl fmt::Debug for GatewayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for GatewayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. \"10s\", \"500ms\", \"1m30s\")")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl FromStr for GatewayDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationError {
            input: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut parts = 0;
        let mut total = Duration::ZERO;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &s[start..i];
            if digits.is_empty() {
                return Err(err("a number must come before each unit"));
            }
            if digits.len() > 5 {
                return Err(err("at most five digits per part"));
            }
            let n: u64 = digits.parse().map_err(|_| err("bad number"))?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let part = match &s[unit_start..i] {
                "h" => Duration::from_secs(n * 3600),
                "m" => Duration::from_secs(n * 60),
                "s" => Duration::from_secs(n),
                "ms" => Duration::from_millis(n),
                "" => return Err(err("missing unit")),
                _ => return Err(err("unit must be one of h, m, s, ms")),
            };
            parts += 1;
            if parts > 4 {
                return Err(err("at most four parts"));
            }
            total += part;
        }
        Ok(GatewayDuration(total))
    }
}

impl Serialize for GatewayDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GatewayDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gateway_api_examples() {
        let cases = [
            ("0s", 0),
            ("1h", 3_600_000),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("1h2m3s4ms", 3_723_004),
            ("99999ms", 99_999),
        ];
        for (input, ms) in cases {
            let d: GatewayDuration = input.parse().expect(input);
            assert_eq!(d.0.as_millis(), ms, "{input}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        for input in [
            "",
            "10",
            "s",
            "1d",
            "1.5s",
            "100000s",
            "1h1h1h1h1h",
            "-1s",
            "1 s",
        ] {
            assert!(
                input.parse::<GatewayDuration>().is_err(),
                "{input:?} accepted"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for input in ["0s", "1h", "500ms", "1m30s", "1h2m3s4ms"] {
            let d: GatewayDuration = input.parse().expect(input);
            assert_eq!(d.to_string(), input);
        }
    }
}
