//! JWT validation with real RSA, EC, Ed25519 and HMAC keys.

use citoroute_llm::jwt::{JwkSet, JwtConfig, JwtError, JwtValidator};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rand::SeedableRng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

const NOW: u64 = 1_700_000_000;

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

struct Keys {
    jwks: String,
    rsa: EncodingKey,
    rsa_public_der: Vec<u8>,
    rsa_n: Vec<u8>,
    p256: EncodingKey,
    p384: EncodingKey,
    ed: EncodingKey,
    hmac: Vec<u8>,
}

fn keys() -> &'static Keys {
    static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(make_keys)
}

fn make_keys() -> Keys {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let rsa_key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa key");
    let rsa_der = rsa_key.to_pkcs1_der().expect("pkcs1").as_bytes().to_vec();
    let n = rsa_key.n().to_bytes_be();
    let e = rsa_key.e().to_bytes_be();
    let rsa_public_der = {
        use rsa::pkcs1::EncodeRsaPublicKey;
        rsa_key
            .to_public_key()
            .to_pkcs1_der()
            .expect("public der")
            .as_bytes()
            .to_vec()
    };

    let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
    let ec_jwk = |kp: &rcgen::KeyPair, kid: &str, crv: &str| {
        let raw = kp.public_key_raw();
        let len = (raw.len() - 1) / 2;
        json!({"kty": "EC", "kid": kid, "crv": crv, "use": "sig",
               "x": b64url(&raw[1..1 + len]), "y": b64url(&raw[1 + len..])})
    };
    let hmac = b"a-shared-secret-of-at-least-32-bytes!!".to_vec();
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256", "n": b64url(&n), "e": b64url(&e)},
        {"kty": "RSA", "kid": "rsa-any", "use": "sig", "n": b64url(&n), "e": b64url(&e)},
        ec_jwk(&p256, "ec256", "P-256"),
        ec_jwk(&p384, "ec384", "P-384"),
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64url(ed.public_key_raw())},
        {"kty": "oct", "kid": "hs", "k": b64url(&hmac)},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": b64url(&n), "e": b64url(&e)},
    ]});
    Keys {
        jwks: jwks.to_string(),
        rsa: EncodingKey::from_rsa_der(&rsa_der),
        rsa_public_der,
        rsa_n: n,
        p256: EncodingKey::from_ec_der(&p256.serialize_der()),
        p384: EncodingKey::from_ec_der(&p384.serialize_der()),
        ed: EncodingKey::from_ed_der(&ed.serialize_der()),
        hmac,
    }
}

fn validator(k: &Keys) -> JwtValidator {
    JwtValidator::new(JwtConfig {
        issuer: "https://issuer.example".into(),
        audiences: vec!["citoroute".into(), "other".into()],
        jwks_json: k.jwks.clone(),
        claim: "sub".into(),
        leeway_secs: 30,
    })
    .expect("validator")
}

fn claims() -> Value {
    json!({"iss": "https://issuer.example", "aud": "citoroute", "sub": "alice",
           "exp": NOW + 600, "nbf": NOW - 10, "team": "blue"})
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, key).expect("sign")
}

#[test]
fn jwt_all_algorithms_and_rejections() {
    let k = keys();
    let v = validator(k);
    assert_eq!(v.key_count(), 6, "the enc key is skipped");
    let c = claims();

    for (alg, kid, key) in [
        (Algorithm::RS256, "rsa1", &k.rsa),
        (Algorithm::RS384, "rsa-any", &k.rsa),
        (Algorithm::RS512, "rsa-any", &k.rsa),
        (Algorithm::PS256, "rsa-any", &k.rsa),
        (Algorithm::PS512, "rsa-any", &k.rsa),
        (Algorithm::ES256, "ec256", &k.p256),
        (Algorithm::ES384, "ec384", &k.p384),
        (Algorithm::EdDSA, "ed", &k.ed),
        (Algorithm::HS256, "hs", &EncodingKey::from_secret(&k.hmac)),
        (Algorithm::HS512, "hs", &EncodingKey::from_secret(&k.hmac)),
    ] {
        let t = sign(alg, Some(kid), &c, key);
        let got = v
            .validate(&t, NOW)
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(got.principal.as_deref(), Some("alice"));
        assert_eq!(got.all.get("team"), Some(&json!("blue")));
    }

    // No kid: every compatible key is tried.
    let t = sign(Algorithm::ES256, None, &c, &k.p256);
    assert!(v.validate(&t, NOW).is_ok());

    // The JWK's own alg pins it.
    let t = sign(Algorithm::RS512, Some("rsa1"), &c, &k.rsa);
    assert_eq!(v.validate(&t, NOW), Err(JwtError::AlgorithmMismatch));

    // Algorithm confusion: HS256 keyed with the RSA public key's bytes.
    for secret in [&k.rsa_public_der, &k.rsa_n] {
        for kid in ["rsa1", "rsa-any"] {
            let t = sign(
                Algorithm::HS256,
                Some(kid),
                &c,
                &EncodingKey::from_secret(secret),
            );
            assert_eq!(v.validate(&t, NOW), Err(JwtError::AlgorithmMismatch));
        }
        let t = sign(
            Algorithm::HS256,
            None,
            &c,
            &EncodingKey::from_secret(secret),
        );
        assert_eq!(v.validate(&t, NOW), Err(JwtError::BadSignature));
    }

    // ES384 token against the P-256 key.
    let t = sign(Algorithm::ES384, Some("ec256"), &c, &k.p384);
    assert_eq!(v.validate(&t, NOW), Err(JwtError::AlgorithmMismatch));

    // alg none, in any spelling, with or without a signature.
    let payload = b64url(c.to_string().as_bytes());
    for alg in ["none", "None", "NONE"] {
        let header = b64url(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        assert_eq!(
            v.validate(&format!("{header}.{payload}."), NOW),
            Err(JwtError::AlgNone)
        );
        assert_eq!(
            v.validate(&format!("{header}.{payload}.c2ln"), NOW),
            Err(JwtError::AlgNone)
        );
    }

    // Unknown kid, tampered payload, garbage.
    let t = sign(Algorithm::RS256, Some("nope"), &c, &k.rsa);
    assert_eq!(
        v.validate(&t, NOW),
        Err(JwtError::UnknownKid("nope".into()))
    );
    let t = sign(Algorithm::RS256, Some("rsa1"), &c, &k.rsa);
    let mut parts: Vec<&str> = t.split('.').collect();
    let mut evil = c.clone();
    evil["sub"] = json!("mallory");
    let evil_payload = b64url(evil.to_string().as_bytes());
    parts[1] = &evil_payload;
    assert_eq!(
        v.validate(&parts.join("."), NOW),
        Err(JwtError::BadSignature)
    );
    assert_eq!(v.validate("not a token", NOW), Err(JwtError::Malformed));
    // A token for the enc-only key's kid is unknown.
    let t = sign(Algorithm::RS256, Some("enc"), &c, &k.rsa);
    assert_eq!(v.validate(&t, NOW), Err(JwtError::UnknownKid("enc".into())));
}

#[test]
fn jwt_time_issuer_audience_claim() {
    let k = keys();
    let v = validator(k);
    let key = EncodingKey::from_secret(&k.hmac);
    let check = |f: &dyn Fn(&mut Value), now: u64| {
        let mut c = claims();
        f(&mut c);
        v.validate(&sign(Algorithm::HS256, Some("hs"), &c, &key), now)
    };
    // exp with leeway
    assert!(check(&|_| {}, NOW + 600 + 30).is_ok());
    assert_eq!(check(&|_| {}, NOW + 600 + 31), Err(JwtError::Expired));
    // nbf with leeway
    assert!(check(&|c| c["nbf"] = json!(NOW + 30), NOW).is_ok());
    assert_eq!(
        check(&|c| c["nbf"] = json!(NOW + 31), NOW),
        Err(JwtError::NotYetValid)
    );
    // exp required
    assert_eq!(
        check(
            &|c| {
                c.as_object_mut().expect("object").remove("exp");
            },
            NOW
        ),
        Err(JwtError::MissingClaim("exp".into()))
    );
    assert_eq!(
        check(&|c| c["iss"] = json!("https://evil.example"), NOW),
        Err(JwtError::BadIssuer)
    );
    assert_eq!(
        check(&|c| c["aud"] = json!("someone-else"), NOW),
        Err(JwtError::BadAudience)
    );
    assert!(check(&|c| c["aud"] = json!(["x", "other"]), NOW).is_ok());
    assert_eq!(
        check(
            &|c| {
                c.as_object_mut().expect("object").remove("aud");
            },
            NOW
        ),
        Err(JwtError::BadAudience)
    );
    assert_eq!(
        check(
            &|c| {
                c.as_object_mut().expect("object").remove("sub");
            },
            NOW
        ),
        Err(JwtError::MissingClaim("sub".into()))
    );
}

#[test]
fn jwks_errors() {
    let bad = |jwks: &str| {
        JwtValidator::new(JwtConfig {
            jwks_json: jwks.into(),
            ..Default::default()
        })
        .err()
    };
    assert!(matches!(bad("{"), Some(JwtError::InvalidJwks(_))));
    assert!(matches!(
        bad("{\"keys\": []}"),
        Some(JwtError::InvalidJwks(_))
    ));
    assert!(matches!(
        bad("{\"keys\": [{\"kty\": \"RSA\", \"n\": \"!!\", \"e\": \"AQAB\"}]}"),
        Some(JwtError::InvalidJwks(_))
    ));
}

#[test]
fn a_key_set_swapped_under_the_same_rules() {
    let k = keys();
    let rules = JwtConfig {
        issuer: "https://issuer.example".into(),
        audiences: vec!["citoroute".into()],
        jwks_json: String::new(),
        claim: "sub".into(),
        leeway_secs: 30,
    };
    let full = JwkSet::parse(&k.jwks).expect("full set");
    let mut kids: Vec<&str> = full.kids().collect();
    kids.sort_unstable();
    assert_eq!(kids, ["ec256", "ec384", "ed", "hs", "rsa-any", "rsa1"]);
    let only_ec = JwkSet::parse(
        &json!({"keys": serde_json::from_str::<Value>(&k.jwks).expect("json")["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter(|j| j["kty"] == "EC")
            .collect::<Vec<_>>()})
        .to_string(),
    )
    .expect("ec set");
    assert_eq!(only_ec.len(), 2);
    let rs = sign(Algorithm::RS256, Some("rsa1"), &claims(), &k.rsa);
    let es = sign(Algorithm::ES256, Some("ec256"), &claims(), &k.p256);
    let v = |set: &JwkSet, t: &str| citoroute_llm::jwt::validate(&rules, set, t, NOW);
    assert_eq!(
        v(&full, &rs).expect("rs256").principal.as_deref(),
        Some("alice")
    );
    assert_eq!(v(&only_ec, &rs), Err(JwtError::UnknownKid("rsa1".into())));
    assert!(v(&only_ec, &es).is_ok());
    assert_eq!(
        JwkSet::parse(r#"{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}"#).err(),
        Some(JwtError::InvalidJwks("no usable signing key".into()))
    );
}
