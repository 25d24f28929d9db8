//! Who gets in: token failures close with 4401, forbidden scopes with 4403,
//! malformed requests with 1008, and a session ends the moment its token
//! expires.

use std::time::Duration;

use cherry_bridge::account::AccountType;
use cherry_bridge::token::{self, TokenRequest};
use uuid::Uuid;

use crate::harness::*;

async fn close_code(bridge: &TestBridge, path_and_query: &str) -> (u16, String) {
    let mut socket = Client::connect(&bridge.ws_url(path_and_query)).await;
    socket.closed().await
}

fn request(lifetime: Duration, token_type: &str) -> TokenRequest {
    TokenRequest {
        account: Uuid::new_v4(),
        account_type: Some(AccountType::Administrative),
        permissions: Some(1),
        lifetime,
        token_type: token_type.to_owned(),
    }
}

#[tokio::test]
async fn token_failures_close_with_4401() {
    let bridge = TestBridge::start().await;
    let wrong_secret = token::mint(
        b"another-secret",
        &request(Duration::from_secs(60), "access"),
    )
    .expect("mints");
    let refresh = mint_with(request(Duration::from_secs(60), "refresh"));
    let unknown_account = mint(Uuid::new_v4(), None, None);
    // A token that expired a minute ago.
    let expired = sign(&serde_json::json!({
        "sub": Uuid::new_v4().to_string(),
        "exp": now_seconds() - 60,
        "token_type": "access",
        "account_type": "administrative",
        "permissions": 1,
    }));

    let cases = [
        (
            "missing",
            "/ws/machines/global".to_owned(),
            "Missing access token.",
        ),
        (
            "empty",
            "/ws/machines/global?access_token=".to_owned(),
            "Missing access token.",
        ),
        (
            "garbage",
            "/ws/machines/global?access_token=not.a.jwt".to_owned(),
            "Invalid access token.",
        ),
        (
            "wrong secret",
            format!("/ws/machines/global?access_token={wrong_secret}"),
            "Invalid access token.",
        ),
        (
            "expired",
            format!("/ws/machines/global?access_token={expired}"),
            "Access token expired.",
        ),
        (
            "refresh",
            format!("/ws/machines/global?access_token={refresh}"),
            "Not an access token.",
        ),
        (
            "unknown account",
            format!("/ws/machines/account?access_token={unknown_account}"),
            "Unknown account.",
        ),
    ];
    for (case, path, reason) in cases {
        let (code, text) = close_code(&bridge, &path).await;
        assert_eq!((code, text.as_str()), (4401, reason), "{case}");
    }
}

#[tokio::test]
async fn bearer_prefixed_and_percent_encoded_tokens_are_accepted() {
    let bridge = TestBridge::start().await;
    let token = viewer_token();
    for query in [
        format!("access_token=Bearer%20{token}"),
        format!("access_token=Bearer+{token}"),
        format!("access_token={}", token.replace('.', "%2E")),
    ] {
        let mut socket =
            Client::connect(&bridge.ws_url(&format!("/ws/machines/global?{query}"))).await;
        socket.connect_messages().await;
    }
}

#[tokio::test]
async fn a_token_that_expires_during_the_session_closes_it_with_4401() {
    let bridge = TestBridge::start().await;
    let token = mint_with(request(Duration::from_secs(2), "access"));
    let mut socket = bridge.connect("global", &token, "").await;
    socket.connect_messages().await;
    let (code, reason) = socket.closed().await;
    assert_eq!((code, reason.as_str()), (4401, "Access token expired."));
}

#[tokio::test]
async fn forbidden_scopes_close_with_4403() {
    let mut bridge = TestBridge::start().await;
    let (owner, machine) = (Uuid::new_v4(), Uuid::new_v4());
    bridge.upsert_machine(decision(machine, owner, &[])).await;

    // `global` without VIEW_ALL_VMS.
    let no_view_all = admin_token(owner, 0);
    assert_eq!(
        bridge
            .connect("global", &no_view_all, "")
            .await
            .closed()
            .await
            .0,
        4403
    );

    // A client never holds permissions, whatever its token claims.
    let client_claiming = mint(Uuid::new_v4(), Some(AccountType::Client), Some(1));
    assert_eq!(
        bridge
            .connect("global", &client_claiming, "")
            .await
            .closed()
            .await
            .0,
        4403
    );

    // `subscribed` to another account's machine, and to no machine at all.
    let other = admin_token(Uuid::new_v4(), 0);
    let extra = format!("&machine_uuid={machine}");
    assert_eq!(
        bridge
            .connect("subscribed", &other, &extra)
            .await
            .closed()
            .await
            .0,
        4403
    );
    let missing = format!("&machine_uuid={}", Uuid::new_v4());
    assert_eq!(
        bridge
            .connect("subscribed", &no_view_all, &missing)
            .await
            .closed()
            .await
            .0,
        4403
    );

    // The owner itself gets in.
    bridge
        .connect("subscribed", &no_view_all, &extra)
        .await
        .connect_messages()
        .await;
}

#[tokio::test]
async fn malformed_requests_close_with_1008_and_other_paths_are_404() {
    let bridge = TestBridge::start().await;
    let token = viewer_token();
    let (code, reason) = bridge
        .connect("subscribed", &token, "")
        .await
        .closed()
        .await;
    assert_eq!((code, reason.as_str()), (1008, "Missing machine_uuid."));
    let (code, reason) = bridge
        .connect("subscribed", &token, "&machine_uuid=12")
        .await
        .closed()
        .await;
    assert_eq!((code, reason.as_str()), (1008, "Malformed machine_uuid."));

    let url = bridge.ws_url("/ws/machines/elsewhere");
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected HTTP 404, got {other:?}"),
    }
}

#[tokio::test]
async fn close_reasons_never_carry_the_token() {
    let bridge = TestBridge::start().await;
    let token = mint(Uuid::new_v4(), None, None);
    let (_, reason) = bridge.connect("account", &token, "").await.closed().await;
    assert!(!reason.contains(&token));
    assert!(!reason.contains(std::str::from_utf8(SECRET).expect("ASCII")));
}

#[tokio::test]
async fn a_client_that_vanishes_without_a_close_frame_is_lost_not_malformed() {
    let bridge = TestBridge::start().await;
    let mut socket = bridge.connect("global", &viewer_token(), "").await;
    socket.connect_messages().await;
    // End the TCP connection cleanly but without a WebSocket close frame.
    drop(socket.into_stream());

    metrics_until(&bridge, "a lost connection", |text| {
        text.contains("code=\"lost\"")
    })
    .await;
    assert!(!metrics(&bridge).await.contains("code=\"1008\""));
}
