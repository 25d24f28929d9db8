//! Token keys other than the HS256 secret: RS256 and ES256 public keys,
//! and the attacks on algorithm choice (`alg: none`, a token of another
//! algorithm, the HS256-with-the-public-key confusion, a token signed by
//! another key), all 4401. Also the optional `iss` and `aud` checks.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cherry_bridge::account::VIEW_ALL_VMS;
use cherry_bridge::token::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::*;
use crate::keys;

/// Claims of an administrator with VIEW_ALL_VMS, valid for an hour, plus
/// `extra`.
fn claims(extra: Value) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs();
    let mut claims = json!({
        "sub": Uuid::new_v4().to_string(),
        "exp": now + 3600,
        "token_type": "access",
        "account_type": "administrative",
        "permissions": VIEW_ALL_VMS,
    });
    for (key, value) in extra.as_object().expect("an object") {
        claims[key] = value.clone();
    }
    claims
}

fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("signs")
}

fn rs256(pair: &keys::KeyPair, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(pair.private_pem.as_bytes()).expect("RSA key");
    sign(Algorithm::RS256, &key, claims)
}

fn es256(pair: &keys::KeyPair, claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(pair.private_pem.as_bytes()).expect("EC key");
    sign(Algorithm::ES256, &key, claims)
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret).expect("secret"),
        claims,
    )
}

/// A token with `alg: none` and no signature, as a forger would send it.
fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

async fn bridge_with(key: SigningKey, issuer: Option<&str>, audience: Option<&str>) -> TestBridge {
    let mut config = config();
    config.signing_key = key;
    config.claim_checks.issuer = issuer.map(str::to_owned);
    config.claim_checks.audience = audience.map(str::to_owned);
    TestBridge::start_with(config).await
}

/// Whether `token` opens a `global` socket: `Ok` once the first message
/// arrives, the close code otherwise.
async fn outcome(bridge: &TestBridge, token: &str) -> Result<(), (u16, String)> {
    let mut socket = bridge.connect("global", token, "").await;
    match socket.read().await {
        Read::Message(envelope) => {
            assert_eq!(envelope.kind, "DATA_STATIC");
            Ok(())
        }
        Read::Closed(code, reason) => Err((code, reason)),
    }
}

fn refused(result: Result<(), (u16, String)>, case: &str) {
    match result {
        Err((4401, reason)) => assert_eq!(reason, "Invalid access token.", "{case}"),
        other => panic!("{case}: expected 4401, got {other:?}"),
    }
}

#[tokio::test]
async fn rs256_public_key_admits_its_tokens_and_refuses_every_other() {
    let pair = keys::rsa();
    let key = SigningKey::RsaPublicPem(pair.public_pem.clone().into_bytes());
    let bridge = bridge_with(key, None, None).await;
    let claims = claims(json!({}));

    assert_eq!(outcome(&bridge, &rs256(pair, &claims)).await, Ok(()));

    // The classic confusion: HS256 keyed with the public key's own bytes.
    let confused = hs256(pair.public_pem.as_bytes(), &claims);
    refused(
        outcome(&bridge, &confused).await,
        "HS256 with the public key",
    );
    refused(outcome(&bridge, &unsigned(&claims)).await, "alg none");
    refused(
        outcome(&bridge, &es256(&keys::ec(), &claims)).await,
        "ES256",
    );
    refused(outcome(&bridge, &hs256(SECRET, &claims)).await, "HS256");

    // RS256 signed by another key: RS384 under the same key is also
    // another algorithm.
    let key = EncodingKey::from_rsa_pem(pair.private_pem.as_bytes()).expect("RSA key");
    let rs384 = sign(Algorithm::RS384, &key, &claims);
    refused(outcome(&bridge, &rs384).await, "RS384");
    let mut forged = rs256(pair, &claims);
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    refused(outcome(&bridge, &forged).await, "altered signature");
}

#[tokio::test]
async fn es256_public_key_admits_its_tokens_and_refuses_every_other() {
    let pair = keys::ec();
    let key = SigningKey::EcPublicPem(pair.public_pem.clone().into_bytes());
    let bridge = bridge_with(key, None, None).await;
    let claims = claims(json!({}));

    assert_eq!(outcome(&bridge, &es256(&pair, &claims)).await, Ok(()));

    refused(
        outcome(&bridge, &es256(&keys::ec(), &claims)).await,
        "another EC key",
    );
    let confused = hs256(pair.public_pem.as_bytes(), &claims);
    refused(
        outcome(&bridge, &confused).await,
        "HS256 with the public key",
    );
    refused(outcome(&bridge, &unsigned(&claims)).await, "alg none");
    refused(
        outcome(&bridge, &rs256(keys::rsa(), &claims)).await,
        "RS256",
    );
}

#[tokio::test]
async fn hs256_secret_refuses_alg_none_and_asymmetric_tokens() {
    let bridge = TestBridge::start().await;
    let claims = claims(json!({}));

    assert_eq!(outcome(&bridge, &hs256(SECRET, &claims)).await, Ok(()));
    refused(outcome(&bridge, &unsigned(&claims)).await, "alg none");
    refused(
        outcome(&bridge, &es256(&keys::ec(), &claims)).await,
        "ES256",
    );
    refused(
        outcome(&bridge, &hs256(b"another secret", &claims)).await,
        "another secret",
    );
    let hs512 = sign(
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET).expect("secret"),
        &claims,
    );
    refused(outcome(&bridge, &hs512).await, "HS512 with the same secret");
}

#[tokio::test]
async fn configured_issuer_and_audience_are_required() {
    let issuer = "https://issuer.test";
    let key = SigningKey::Secret(SECRET.to_vec());
    let bridge = bridge_with(key, Some(issuer), Some("cherry")).await;
    let token = |extra: Value| hs256(SECRET, &claims(extra));

    let admitted = [
        json!({"iss": issuer, "aud": "cherry"}),
        json!({"iss": issuer, "aud": ["portal", "cherry"]}),
    ];
    for extra in admitted {
        assert_eq!(
            outcome(&bridge, &token(extra.clone())).await,
            Ok(()),
            "{extra}"
        );
    }
    let refused_claims = [
        json!({}),
        json!({"aud": "cherry"}),
        json!({"iss": issuer}),
        json!({"iss": "https://elsewhere.test", "aud": "cherry"}),
        json!({"iss": issuer, "aud": "portal"}),
        json!({"iss": issuer, "aud": ["portal"]}),
        json!({"iss": 7, "aud": "cherry"}),
    ];
    for extra in refused_claims {
        refused(
            outcome(&bridge, &token(extra.clone())).await,
            &extra.to_string(),
        );
    }
}

#[tokio::test]
async fn without_issuer_or_audience_checks_any_are_accepted() {
    let bridge = TestBridge::start().await;
    let token = hs256(SECRET, &claims(json!({"iss": "anyone", "aud": "anything"})));
    assert_eq!(outcome(&bridge, &token).await, Ok(()));
}

#[tokio::test]
async fn a_token_valid_for_centuries_still_opens_a_session() {
    let bridge = TestBridge::start().await;
    let token = hs256(SECRET, &claims(json!({"exp": u64::MAX})));
    assert_eq!(outcome(&bridge, &token).await, Ok(()));
}
