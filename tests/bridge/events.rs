//! A machine's life over gRPC, as each scope sees it: only the scopes that
//! include the machine hear about it, and each hears the right message.

use std::time::Duration;

use cherry_bridge::proto::{LifecycleKind, UpsertOutcome};
use serde_json::json;
use uuid::Uuid;

use crate::harness::*;

const QUIET: Duration = Duration::from_millis(400);

/// One socket per scope that includes the machine, and one that does not.
struct Watchers {
    global: Client,
    owner: Client,
    client: Client,
    stranger: Client,
}

async fn watchers(bridge: &TestBridge, owner: Uuid, client: Uuid) -> Watchers {
    let mut watchers = Watchers {
        global: bridge.connect("global", &viewer_token(), "").await,
        owner: bridge.connect("account", &admin_token(owner, 0), "").await,
        client: bridge.connect("account", &client_token(client), "").await,
        stranger: bridge
            .connect("account", &admin_token(Uuid::new_v4(), 0), "")
            .await,
    };
    for socket in watchers.all() {
        socket.connect_messages().await;
    }
    watchers
}

impl Watchers {
    fn all(&mut self) -> [&mut Client; 4] {
        [
            &mut self.global,
            &mut self.owner,
            &mut self.client,
            &mut self.stranger,
        ]
    }

    fn seeing(&mut self) -> [&mut Client; 3] {
        [&mut self.global, &mut self.owner, &mut self.client]
    }
}

#[tokio::test]
async fn a_machines_life_reaches_exactly_the_scopes_that_include_it() {
    let mut bridge = TestBridge::start().await;
    let (owner, client, machine) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut watchers = watchers(&bridge, owner, client).await;

    // Created: CREATE with the properties.
    let outcome = bridge
        .upsert_machine(decision(machine, owner, &[client]))
        .await;
    assert_eq!(outcome, UpsertOutcome::Created as i32);
    for socket in watchers.seeing() {
        let create = socket.next_event("CREATE").await;
        assert_eq!(create.body["uuid"], machine.to_string());
        assert_eq!(create.body["owner"]["uuid"], owner.to_string());
    }

    // Modified: DATA_STATIC with that single entry.
    let mut changed = decision(machine, owner, &[client]);
    changed.title = Some("renamed".to_owned());
    let outcome = bridge.upsert_machine(changed.clone()).await;
    assert_eq!(outcome, UpsertOutcome::Updated as i32);
    for socket in watchers.seeing() {
        let update = socket.next_event("DATA_STATIC").await;
        assert_eq!(update.body.as_object().map(|o| o.len()), Some(1));
        assert_eq!(update.body[machine.to_string()]["title"], "renamed");
    }

    // Booted, failed, shut down.
    bridge
        .publish(machine, LifecycleKind::BootupStart, None)
        .await;
    bridge
        .publish(machine, LifecycleKind::BootupFail, Some("no memory"))
        .await;
    bridge
        .publish(machine, LifecycleKind::BootupSuccess, None)
        .await;
    bridge
        .publish(machine, LifecycleKind::ShutdownStart, None)
        .await;
    bridge
        .publish(machine, LifecycleKind::ShutdownFail, None)
        .await;
    bridge
        .publish(machine, LifecycleKind::ShutdownSuccess, None)
        .await;
    for socket in watchers.seeing() {
        let start = socket.next_event("BOOTUP_START").await;
        assert_eq!(start.body, json!({"uuid": machine.to_string()}));
        let fail = socket.next_event("BOOTUP_FAIL").await;
        assert_eq!(
            fail.body,
            json!({"uuid": machine.to_string(), "error": "no memory"})
        );
        socket.next_event("BOOTUP_SUCCESS").await;
        socket.next_event("SHUTDOWN_START").await;
        let fail = socket.next_event("SHUTDOWN_FAIL").await;
        assert_eq!(
            fail.body,
            json!({"uuid": machine.to_string(), "error": null})
        );
        socket.next_event("SHUTDOWN_SUCCESS").await;
    }

    // Deleted: DELETE.
    bridge.remove_machine(machine).await;
    for socket in watchers.seeing() {
        let delete = socket.next_event("DELETE").await;
        assert_eq!(delete.body, json!({"uuid": machine.to_string()}));
    }

    // The account that neither owns nor is assigned heard nothing.
    watchers.stranger.expect_no_event(QUIET).await;
}

#[tokio::test]
async fn an_identical_upsert_emits_nothing_and_writers_keep_their_fields() {
    let mut bridge = TestBridge::start().await;
    let (owner, machine) = (Uuid::new_v4(), Uuid::new_v4());
    let mut watchers = watchers(&bridge, owner, Uuid::new_v4()).await;

    // An agent reports the machine first: it exists with the agent's name.
    let mut agent = bridge.agent("writers").await;
    assert!(accepted(&agent.properties(machine, "from-agent").await));
    let create = watchers.global.next_event("CREATE").await;
    assert_eq!(create.body["title"], "from-agent");
    assert_eq!(create.body["owner"], serde_json::Value::Null);

    // The control plane's title wins; the agent's disks stay.
    let mut platform = decision(machine, owner, &[]);
    platform.title = Some("from-platform".to_owned());
    bridge.upsert_machine(platform.clone()).await;
    let update = watchers.global.next_event("DATA_STATIC").await;
    let entry = &update.body[machine.to_string()];
    assert_eq!(entry["title"], "from-platform");
    assert_eq!(entry["disks"][0]["name"], "root");
    // For the owner, the machine just came into scope.
    let create = watchers.owner.next_event("CREATE").await;
    assert_eq!(create.body["title"], "from-platform");

    // The agent re-sends its inventory: nothing changes, nothing is sent.
    assert!(accepted(&agent.properties(machine, "from-agent").await));
    let outcome = bridge.upsert_machine(platform).await;
    assert_eq!(outcome, UpsertOutcome::Unchanged as i32);
    watchers.global.expect_no_event(QUIET).await;
    watchers.owner.expect_no_event(QUIET).await;

    let machines = bridge.list_machines().await;
    let view = machines
        .iter()
        .find(|view| {
            view.properties
                .as_ref()
                .is_some_and(|p| p.uuid == machine.to_string())
        })
        .expect("machine listed");
    let properties = view.properties.as_ref().expect("properties");
    assert_eq!(properties.title.as_deref(), Some("from-platform"));
    assert_eq!(properties.disks.len(), 1);
}

#[tokio::test]
async fn subscribed_gets_no_create_and_stays_open_through_deletion() {
    let mut bridge = TestBridge::start().await;
    let (owner, machine) = (Uuid::new_v4(), Uuid::new_v4());
    bridge.upsert_machine(decision(machine, owner, &[])).await;
    let mut agent = bridge.agent("subscribed").await;
    assert!(accepted(&agent.state(machine, true).await));

    let extra = format!("&machine_uuid={machine}");
    let mut socket = bridge
        .connect("subscribed", &admin_token(owner, 0), &extra)
        .await;
    let [_, dynamic, ..] = socket.connect_messages().await;
    assert!(dynamic.body.get(machine.to_string()).is_some());

    bridge
        .publish(machine, LifecycleKind::ShutdownStart, None)
        .await;
    socket.next_event("SHUTDOWN_START").await;

    // Deleted: DELETE, then periodic messages without it, socket open.
    bridge.remove_machine(machine).await;
    socket.next_event("DELETE").await;
    let after = socket.next_event("DATA_DYNAMIC").await;
    assert_eq!(after.body, json!({}));

    // Back again with the same UUID: its DATA_STATIC entry, never CREATE,
    // then periodic messages with it.
    bridge.upsert_machine(decision(machine, owner, &[])).await;
    let back = socket.next_event("DATA_STATIC").await;
    assert!(back.body.get(machine.to_string()).is_some());
    assert!(accepted(&agent.state(machine, true).await));
    loop {
        let dynamic = socket.next_event("DATA_DYNAMIC").await;
        if dynamic.body.get(machine.to_string()).is_some() {
            break;
        }
    }
}

#[tokio::test]
async fn several_machines_can_be_followed_on_one_subscribed_socket() {
    let mut bridge = TestBridge::start().await;
    let (owner, first, second) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    bridge.upsert_machine(decision(first, owner, &[])).await;
    bridge.upsert_machine(decision(second, owner, &[])).await;

    let extra = format!("&machine_uuid={first}&machine_uuid={second}");
    let mut socket = bridge
        .connect("subscribed", &admin_token(owner, 0), &extra)
        .await;
    let [properties, ..] = socket.connect_messages().await;
    assert_eq!(properties.body.as_object().map(|o| o.len()), Some(2));

    bridge
        .publish(second, LifecycleKind::BootupStart, None)
        .await;
    let event = socket.next_event("BOOTUP_START").await;
    assert_eq!(event.body["uuid"], second.to_string());

    // One machine the account may not see closes the whole socket.
    let foreign = Uuid::new_v4();
    bridge
        .upsert_machine(decision(foreign, Uuid::new_v4(), &[]))
        .await;
    let extra = format!("&machine_uuid={first}&machine_uuid={foreign}");
    let mut refused = bridge
        .connect("subscribed", &admin_token(owner, 0), &extra)
        .await;
    assert_eq!(refused.closed().await.0, 4403);
}

#[tokio::test]
async fn agent_state_is_shown_only_while_fresh() {
    let mut config = config();
    config.limits.stale_after = Duration::from_millis(500);
    let mut bridge = TestBridge::start_with(config).await;
    let machine = Uuid::new_v4();
    let mut agent = bridge.agent("freshness").await;
    assert!(accepted(&agent.properties(machine, "fresh").await));
    assert!(accepted(&agent.state(machine, true).await));

    let mut socket = bridge.connect("global", &viewer_token(), "").await;
    let [_, dynamic, ..] = socket.connect_messages().await;
    assert!(dynamic.body.get(machine.to_string()).is_some());

    // No new state: within stale_after it leaves DATA_DYNAMIC, while its
    // properties stay.
    loop {
        let dynamic = socket.next_event("DATA_DYNAMIC").await;
        if dynamic.body.get(machine.to_string()).is_none() {
            break;
        }
    }
    let listed = bridge.list_machines().await;
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].state.is_none(),
        "stale state is not reported as current"
    );

    // A new report brings it back.
    assert!(accepted(&agent.state(machine, false).await));
    loop {
        let dynamic = socket.next_event("DATA_DYNAMIC").await;
        if let Some(entry) = dynamic.body.get(machine.to_string()) {
            assert_eq!(entry["active"], false);
            break;
        }
    }
}

#[tokio::test]
async fn an_agents_removal_withdraws_only_what_agents_reported() {
    let mut bridge = TestBridge::start().await;
    let (owner, described, bare) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    bridge.upsert_machine(decision(described, owner, &[])).await;
    let mut agent = bridge.agent("withdrawing").await;
    assert!(accepted(&agent.properties(described, "on-host").await));
    assert!(accepted(&agent.properties(bare, "bare").await));
    assert!(accepted(&agent.state(described, true).await));

    let mut global = bridge.connect("global", &viewer_token(), "").await;
    let mut owned = bridge.connect("account", &admin_token(owner, 0), "").await;
    global.connect_messages().await;
    owned.connect_messages().await;

    // The platform still describes it: it stays, without the agent's half.
    let remove = |uuid: Uuid| {
        cherry_bridge::proto::agent_message::Body::Remove(cherry_bridge::proto::MachineRef {
            uuid: uuid.to_string(),
        })
    };
    assert!(accepted(&agent.send(remove(described)).await));
    let update = owned.next_event("DATA_STATIC").await;
    let entry = &update.body[described.to_string()];
    assert_eq!(entry["owner"]["uuid"], owner.to_string());
    assert_eq!(entry["disks"], serde_json::Value::Null);
    global.next_event("DATA_STATIC").await;

    // Nobody else describes it: it is gone.
    assert!(accepted(&agent.send(remove(bare)).await));
    let delete = global.next_event("DELETE").await;
    assert_eq!(delete.body, json!({"uuid": bare.to_string()}));
    owned.expect_no_event(QUIET).await;
    assert!(
        accepted(&agent.send(remove(bare)).await),
        "repeating is harmless"
    );
}

#[tokio::test]
async fn an_agent_rename_hidden_by_the_platforms_title_emits_nothing() {
    let mut bridge = TestBridge::start().await;
    let machine = Uuid::new_v4();
    let mut agent = bridge.agent("renaming").await;
    assert!(accepted(&agent.properties(machine, "first").await));
    bridge
        .upsert_machine(decision(machine, Uuid::new_v4(), &[]))
        .await;

    let mut global = bridge.connect("global", &viewer_token(), "").await;
    global.connect_messages().await;
    assert!(accepted(&agent.properties(machine, "second").await));
    global.expect_no_event(QUIET).await;
}
