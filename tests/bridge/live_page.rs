//! The live page in a real headless Chromium, against a bridge fed by a
//! gRPC agent: it shows the machines, follows a boot, drops a removed
//! machine and shows the close code. A screenshot is kept in
//! `target/test-artifacts/live-page.png`.

use std::path::Path;
use std::time::Duration;

use cherry_bridge::proto::{self, LifecycleKind, agent_message::Body};
use uuid::Uuid;

use crate::browser::Browser;
use crate::harness::*;

/// A JavaScript expression: whether a table row mentions every word.
fn row_with(words: &[&str]) -> String {
    let words = serde_json::to_string(words).expect("strings serialize");
    format!(
        "[...document.querySelectorAll('#machines tbody tr')]\
         .some(row => {words}.every(word => row.innerText.includes(word)))"
    )
}

#[tokio::test]
async fn the_live_page_shows_machines_their_changes_and_the_close() {
    let mut config = config();
    // Nothing here waits on staleness; keep alpha fresh however slow the
    // shared machine is.
    config.limits.stale_after = Duration::from_secs(60);
    let bridge = TestBridge::start_with(config).await;
    let (alpha, bravo) = (Uuid::new_v4(), Uuid::new_v4());
    let mut agent = bridge.agent("live-page").await;
    assert!(accepted(&agent.properties(alpha, "alpha-web").await));
    assert!(accepted(&agent.properties(bravo, "bravo-db").await));
    assert!(accepted(&agent.state(alpha, true).await));

    let mut browser = Browser::launch().await;
    let url = format!(
        "http://{}/?access_token={}&scope=global",
        bridge.bridge.http_addr(),
        viewer_token()
    );
    browser.open(&url).await;

    // Both machines: alpha running and fresh, bravo without state yet.
    let shown = format!(
        "document.body.dataset.state === 'open' && document.body.dataset.machines === '2' \
         && {} && {}",
        row_with(&["alpha-web", "active", "512 MiB / 2.0 GiB", "fresh"]),
        row_with(&["bravo-db", "fetching"]),
    );
    browser
        .wait_for("alpha active and bravo fetching", &shown)
        .await;
    // The token left the address bar once read.
    let address = browser.evaluate("location.search").await;
    assert_eq!(address, "?scope=global");
    // DATA_DYNAMIC keeps the table current.
    browser
        .wait_for(
            "repeated DATA_DYNAMIC",
            "Number(document.body.dataset.dynamic) >= 3",
        )
        .await;

    // Bravo boots: the events are logged, its row flashes and turns active.
    let event = |kind: LifecycleKind| {
        Body::Event(proto::LifecycleEvent {
            machine_uuid: bravo.to_string(),
            kind: kind as i32,
            error: None,
        })
    };
    assert!(accepted(
        &agent.send(event(LifecycleKind::BootupStart)).await
    ));
    assert!(accepted(&agent.state(bravo, true).await));
    assert!(accepted(
        &agent.send(event(LifecycleKind::BootupSuccess)).await
    ));
    let booted = format!(
        "document.body.dataset.fresh === '2' && {} \
         && document.querySelector('#events li')?.innerText.includes('BOOTUP_SUCCESS bravo-db') \
         && document.querySelectorAll('#events li').length === 2 \
         && document.querySelector('tr.flash')?.innerText.includes('bravo-db')",
        row_with(&["bravo-db", "active", "fresh"]),
    );
    browser.wait_for("bravo's boot", &booted).await;

    let artifact =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/live-page.png");
    browser.screenshot(&artifact).await;
    let png = std::fs::read(&artifact).expect("screenshot saved");
    assert!(png.starts_with(b"\x89PNG"), "a PNG was saved");

    // A removed machine leaves the table.
    let remove = Body::Remove(proto::MachineRef {
        uuid: alpha.to_string(),
    });
    assert!(accepted(&agent.send(remove).await));
    let removed = format!(
        "document.body.dataset.machines === '1' && !{}",
        row_with(&["alpha-web"])
    );
    browser.wait_for("alpha gone", &removed).await;

    // The bridge going away shows as its close code and reason.
    bridge.bridge.stop().await;
    browser
        .wait_for(
            "the close",
            "document.getElementById('status').innerText === 'Closed 1001 Bridge shutting down.'",
        )
        .await;
}
