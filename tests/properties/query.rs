//! The upgrade query on arbitrary text and on arbitrary parameter lists.

use cherry_bridge::fanout::Scope;
use cherry_bridge::websocket::request::{Endpoint, parse};
use proptest::prelude::*;
use uuid::Uuid;

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        Just(Endpoint::Subscribed),
        Just(Endpoint::Account),
        Just(Endpoint::Global),
    ]
}

/// A parameter value: a UUID in one of its spellings, a bearer token, or
/// anything.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        any::<u128>().prop_map(|n| Uuid::from_u128(n).simple().to_string()),
        any::<u128>().prop_map(|n| format!(" {} ", Uuid::from_u128(n).braced())),
        Just(Uuid::nil().to_string()),
        "(Bearer|bearer|BEARER)?[ \t\u{a0}\u{3000}]{0,3}[a-z.]{0,12}[ \t]{0,2}",
        ".{0,40}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("access_token".to_owned()),
        Just("machine_uuid".to_owned()),
        ".{0,12}",
    ]
}

fn encoded(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// What every accepted request must be.
fn check(endpoint: Endpoint, query: Option<&str>) -> Result<(), TestCaseError> {
    let Ok(request) = parse(endpoint, query) else {
        return Ok(());
    };
    prop_assert!(!request.token.is_empty(), "empty token accepted");
    prop_assert_eq!(request.token.trim(), request.token.as_str());
    match (endpoint, request.scope) {
        (Endpoint::Subscribed, Scope::Subscribed(machines)) => {
            prop_assert!(!machines.is_empty());
            let mut seen = machines.clone();
            seen.sort();
            seen.dedup();
            prop_assert_eq!(seen.len(), machines.len(), "a machine listed twice");
        }
        (Endpoint::Account, Scope::Account) | (Endpoint::Global, Scope::Global) => {}
        (endpoint, scope) => prop_assert!(false, "{endpoint:?} opened {scope:?}"),
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_query_text_never_panics(endpoint in endpoint(), query in prop::option::of(".*")) {
        check(endpoint, query.as_deref())?;
    }

    #[test]
    fn arbitrary_parameters_keep_the_request_invariants(
        endpoint in endpoint(),
        pairs in prop::collection::vec((key(), value()), 0..12),
    ) {
        check(endpoint, Some(&encoded(&pairs)))?;
    }

    /// Many copies of a few machines are followed once each.
    #[test]
    fn repeated_machines_are_followed_once(
        machines in prop::collection::vec(0u128..4, 1..40),
        spelling in 0usize..3,
    ) {
        let mut pairs = vec![("access_token".to_owned(), "Bearer t".to_owned())];
        for n in &machines {
            let uuid = Uuid::from_u128(*n);
            let text = match spelling {
                0 => uuid.to_string(),
                1 => uuid.simple().to_string(),
                _ => uuid.urn().to_string(),
            };
            pairs.push(("machine_uuid".to_owned(), text));
        }
        let request = parse(Endpoint::Subscribed, Some(&encoded(&pairs)))
            .expect("well-formed request");
        let mut distinct = machines.clone();
        distinct.sort();
        distinct.dedup();
        match request.scope {
            Scope::Subscribed(followed) => prop_assert_eq!(followed.len(), distinct.len()),
            scope => prop_assert!(false, "opened {scope:?}"),
        }
    }
}
