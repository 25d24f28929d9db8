//! The token verifier on arbitrary text and on validly signed tokens with
//! arbitrary claims.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cherry_bridge::token::{ClaimChecks, SigningKey, TokenVerifier};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET: &[u8] = b"property-test-secret";

fn verifier() -> TokenVerifier {
    TokenVerifier::new(
        &SigningKey::Secret(SECRET.to_vec()),
        &ClaimChecks::default(),
    )
    .expect("an HS256 secret is always usable")
}

fn segment(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// An HS256 signature over `header.payload` with the bridge's secret.
fn signed(header: &Value, claims: &Value) -> String {
    let message = format!("{}.{}", segment(header), segment(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET).expect("key");
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            .expect("signs");
    format!("{message}.{signature}")
}

/// Any JSON value, small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Claims that are sometimes right, sometimes anything.
fn claims() -> impl Strategy<Value = Value> {
    let sub = prop_oneof![Just(Value::from(Uuid::new_v4().to_string())), json_value(),];
    let exp = prop_oneof![
        Just(json!(u64::MAX)),
        Just(json!(4_102_444_800u64)),
        (0u64..=u64::MAX).prop_map(Value::from),
        json_value(),
    ];
    let token_type = prop_oneof![Just(json!("access")), json_value()];
    let account_type = prop_oneof![
        Just(json!("administrative")),
        Just(json!("client")),
        json_value()
    ];
    (sub, exp, token_type, account_type, json_value()).prop_map(
        |(sub, exp, token_type, account_type, permissions)| {
            json!({
                "sub": sub,
                "exp": exp,
                "token_type": token_type,
                "account_type": account_type,
                "permissions": permissions,
            })
        },
    )
}

fn header() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"alg": "HS256", "typ": "JWT"})),
        Just(json!({"alg": "none"})),
        Just(json!({"alg": "RS256"})),
        json_value().prop_map(|alg| json!({"alg": alg})),
        json_value(),
    ]
}

proptest! {
    #[test]
    fn arbitrary_text_is_refused_with_4401(text in ".*") {
        let refused = verifier().verify(&text).expect_err("garbage never verifies");
        prop_assert_eq!(refused.code(), 4401);
    }

    #[test]
    fn three_arbitrary_segments_are_refused_with_4401(
        header in prop::collection::vec(any::<u8>(), 0..64),
        claims in prop::collection::vec(any::<u8>(), 0..128),
        signature in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims),
            URL_SAFE_NO_PAD.encode(signature),
        );
        let refused = verifier().verify(&token).expect_err("no valid signature");
        prop_assert_eq!(refused.code(), 4401);
    }

    /// Signed tokens from a forger who knows only the shapes.
    #[test]
    fn unsigned_or_forged_tokens_are_refused_with_4401(
        header in header(),
        claims in claims(),
        signature in prop_oneof![Just(String::new()), "[A-Za-z0-9_-]{0,64}"],
    ) {
        let token = format!("{}.{}.{signature}", segment(&header), segment(&claims));
        let refused = verifier().verify(&token).expect_err("not signed with the secret");
        prop_assert_eq!(refused.code(), 4401);
    }

    /// Validly signed tokens with any claims: no panic, and what verifies
    /// is an access token for a UUID whose session end can be scheduled.
    #[test]
    fn validly_signed_arbitrary_claims_never_panic(header in header(), claims in claims()) {
        let token = signed(&header, &claims);
        match verifier().verify(&token) {
            Ok(verified) => {
                prop_assert_eq!(&claims["token_type"], &json!("access"));
                let sub = claims["sub"].as_str().map(Uuid::parse_str);
                prop_assert_eq!(sub, Some(Ok(verified.account)));
                // The session schedules its end this way.
                let _ = tokio::time::Instant::now() + verified.remaining();
            }
            Err(refused) => prop_assert_eq!(refused.code(), 4401),
        }
    }
}
