//! Scopes follow ownership and the directory while sockets are open:
//! CREATE and DELETE on `account` sockets as machines come and go, and the
//! right close code when an account loses what it was watching.

use cherry_bridge::proto;
use serde_json::json;
use uuid::Uuid;

use crate::harness::*;

#[tokio::test]
async fn reassigning_a_machine_moves_it_between_account_scopes() {
    let mut bridge = TestBridge::start().await;
    let (first, second, client, machine) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    bridge.upsert_machine(decision(machine, first, &[])).await;

    let mut first_socket = bridge.connect("account", &admin_token(first, 0), "").await;
    let mut second_socket = bridge.connect("account", &admin_token(second, 0), "").await;
    let mut client_socket = bridge.connect("account", &client_token(client), "").await;
    first_socket.connect_messages().await;
    second_socket.connect_messages().await;
    client_socket.connect_messages().await;

    // New owner: it leaves the old owner's scope and enters the new one's.
    bridge.upsert_machine(decision(machine, second, &[])).await;
    let delete = first_socket.next_event("DELETE").await;
    assert_eq!(delete.body, json!({"uuid": machine.to_string()}));
    let create = second_socket.next_event("CREATE").await;
    assert_eq!(create.body["owner"]["uuid"], second.to_string());

    // Assigned, then unassigned: CREATE then DELETE for the client; the
    // owner sees each change as DATA_STATIC.
    bridge
        .upsert_machine(decision(machine, second, &[client]))
        .await;
    client_socket.next_event("CREATE").await;
    let update = second_socket.next_event("DATA_STATIC").await;
    assert!(update.body[machine.to_string()]["assigned_clients"][client.to_string()].is_object());
    bridge.upsert_machine(decision(machine, second, &[])).await;
    client_socket.next_event("DELETE").await;
    second_socket.next_event("DATA_STATIC").await;
}

#[tokio::test]
async fn a_subscribed_socket_closes_with_4403_when_its_account_loses_access() {
    let mut bridge = TestBridge::start().await;
    let (owner, client, machine) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    bridge
        .upsert_machine(decision(machine, owner, &[client]))
        .await;

    let extra = format!("&machine_uuid={machine}");
    let mut socket = bridge
        .connect("subscribed", &client_token(client), &extra)
        .await;
    socket.connect_messages().await;
    bridge.upsert_machine(decision(machine, owner, &[])).await;
    let (code, reason) = socket.closed().await;
    assert_eq!((code, reason.as_str()), (4403, "Machine not accessible."));
}

#[tokio::test]
async fn a_removed_account_loses_its_sockets_with_4403() {
    let mut bridge = TestBridge::start().await;
    let account = Uuid::new_v4();
    bridge.upsert_account(admin(account)).await;

    // The token carries no claims: only the directory knows the account.
    let token = mint(account, None, None);
    let mut socket = bridge.connect("account", &token, "").await;
    socket.connect_messages().await;

    bridge
        .control
        .remove_account(proto::RemoveAccountRequest {
            uuid: account.to_string(),
        })
        .await
        .expect("removed");
    let (code, reason) = socket.closed().await;
    assert_eq!((code, reason.as_str()), (4403, "Account removed."));

    // Now unknown to both directory and token: refused at the door.
    assert_eq!(
        bridge.connect("account", &token, "").await.closed().await.0,
        4401
    );
}

#[tokio::test]
async fn a_disabled_account_loses_its_sockets_with_4401() {
    let mut bridge = TestBridge::start().await;
    let account = Uuid::new_v4();
    bridge.upsert_account(admin(account)).await;
    let token = mint(account, None, None);
    let mut socket = bridge.connect("account", &token, "").await;
    socket.connect_messages().await;

    let mut disabled = admin(account);
    disabled.disabled = true;
    bridge.upsert_account(disabled).await;
    let (code, reason) = socket.closed().await;
    assert_eq!((code, reason.as_str()), (4401, "Account disabled."));
    let (code, _) = bridge.connect("account", &token, "").await.closed().await;
    assert_eq!(code, 4401);
}

#[tokio::test]
async fn revoking_view_all_vms_closes_global_sockets_with_4403() {
    let mut bridge = TestBridge::start().await;
    let account = Uuid::new_v4();
    let mut viewer = admin(account);
    viewer.permissions = 1;
    bridge.upsert_account(viewer.clone()).await;

    let token = mint(account, None, None);
    let mut global = bridge.connect("global", &token, "").await;
    let mut own = bridge.connect("account", &token, "").await;
    global.connect_messages().await;
    own.connect_messages().await;

    viewer.permissions = 0;
    bridge.upsert_account(viewer).await;
    let (code, reason) = global.closed().await;
    assert_eq!(
        (code, reason.as_str()),
        (4403, "VIEW_ALL_VMS permission required.")
    );
    // Its own machines it may still watch.
    own.expect_no_event(std::time::Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn the_directory_wins_over_the_tokens_claims() {
    let mut bridge = TestBridge::start().await;
    let account = Uuid::new_v4();
    bridge.upsert_account(admin(account)).await;

    // The token claims VIEW_ALL_VMS; the directory says otherwise.
    let token = admin_token(account, 1);
    let (code, _) = bridge.connect("global", &token, "").await.closed().await;
    assert_eq!(code, 4403);
}

#[tokio::test]
async fn odd_claims_never_overrule_the_directory() {
    let mut bridge = TestBridge::start().await;
    let account = Uuid::new_v4();
    let mut viewer = admin(account);
    viewer.permissions = 1;
    bridge.upsert_account(viewer).await;

    for (account_type, permissions) in [
        (json!("superuser"), json!(1)),
        (json!("administrative"), json!(-1)),
        (json!("administrative"), json!("1")),
        (json!("administrative"), json!(1.5)),
    ] {
        let claims = |account: Uuid| {
            json!({
                "sub": account.to_string(),
                "exp": now_seconds() + 600,
                "token_type": "access",
                "account_type": account_type,
                "permissions": permissions,
            })
        };
        // The directory knows the account: its VIEW_ALL_VMS opens `global`.
        let token = sign(&claims(account));
        bridge
            .connect("global", &token, "")
            .await
            .connect_messages()
            .await;
        // An account it does not know, with such claims, is unknown.
        let token = sign(&claims(Uuid::new_v4()));
        let (code, reason) = bridge.connect("account", &token, "").await.closed().await;
        assert_eq!((code, reason.as_str()), (4401, "Unknown account."));
    }
}
