//! The command line as a user runs it: `serve` refuses to invent secrets,
//! `token` mints what the bridge accepts, `demo` shows machines changing.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use uuid::Uuid;

use crate::harness::*;

const BINARY: &str = env!("CARGO_BIN_EXE_cherry-bridge");

/// A command with no `CHERRY_*` settings inherited from the environment.
fn command() -> Command {
    let mut command = Command::new(BINARY);
    for (name, _) in std::env::vars() {
        if name.starts_with("CHERRY_") {
            command.env_remove(name);
        }
    }
    command.kill_on_drop(true);
    command
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_jwt_secret_or_agent_token() {
    let output = command()
        .args(["serve", "--agent-token", "t", "--ephemeral"])
        .output()
        .await
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--jwt-secret"), "{stderr}");

    let output = command()
        .args(["serve", "--jwt-secret", "s", "--ephemeral"])
        .output()
        .await
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--agent-token"), "{stderr}");
}

#[tokio::test]
async fn a_minted_token_opens_the_scope_its_claims_allow() {
    let bridge = TestBridge::start().await;
    let account = Uuid::new_v4().to_string();
    let output = command()
        .args([
            "token",
            "--account",
            &account,
            "--account-type",
            "administrative",
        ])
        .args(["--permissions", "1", "--lifetime", "10m"])
        .env(
            "CHERRY_JWT_SECRET",
            std::str::from_utf8(SECRET).expect("ASCII"),
        )
        .output()
        .await
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).expect("UTF-8");
    let mut socket = bridge.connect("global", token.trim(), "").await;
    socket.connect_messages().await;
}

#[tokio::test]
async fn the_demo_prints_urls_that_show_machines_changing() {
    let mut demo = command()
        .args([
            "demo",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args(["--state-interval", "250ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo starts");
    let mut lines = BufReader::new(demo.stdout.take().expect("piped")).lines();
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("demo prints its URLs")
            .expect("stdout readable")
            .expect("URLs before end of output");
        if line.contains("/ws/machines/global?access_token=") {
            break line.trim().to_owned();
        }
    };

    let mut socket = Client::connect(&url).await;
    let [properties, ..] = socket.connect_messages().await;
    assert_eq!(properties.body.as_object().map(|o| o.len()), Some(12));

    // Simulated machines boot within seconds of starting.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no lifecycle event from the demo"
        );
        let envelope = socket.next().await;
        if envelope.kind.starts_with("BOOTUP_") {
            break;
        }
    }
    demo.start_kill().expect("demo stops");
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_exits_zero() {
    let mut serve = command()
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args(["--agent-token", AGENT_TOKEN, "--ephemeral"])
        .env(
            "CHERRY_JWT_SECRET",
            std::str::from_utf8(SECRET).expect("ASCII"),
        )
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let mut lines = BufReader::new(serve.stderr.take().expect("piped")).lines();
    let http = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("serve logs its addresses")
            .expect("stderr readable")
            .expect("the listening line before end of output");
        if let Some(rest) = line.split("http=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .expect("an address")
                .to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let url = format!(
        "ws://{http}/ws/machines/global?access_token={}",
        viewer_token()
    );
    let mut socket = Client::connect(&url).await;
    socket.connect_messages().await;

    let pid = serve.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let (code, _) = socket.closed().await;
    assert_eq!(code, 1001);
    let status = tokio::time::timeout(Duration::from_secs(10), serve.wait())
        .await
        .expect("exits within its grace")
        .expect("exit status");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn serve_refuses_empty_secrets_and_settings_that_would_never_work() {
    let refusals = [
        (
            vec!["--jwt-secret", "", "--agent-token", "t"],
            "--jwt-secret",
        ),
        (
            vec!["--jwt-secret", "s", "--agent-token", ""],
            "--agent-token",
        ),
        (
            vec![
                "--jwt-secret",
                "s",
                "--agent-token",
                "t",
                "--state-interval",
                "0s",
            ],
            "--state-interval",
        ),
        (
            vec![
                "--jwt-secret",
                "s",
                "--agent-token",
                "t",
                "--max-backlog",
                "0",
            ],
            "--max-backlog",
        ),
    ];
    for (args, named) in refusals {
        let output = command()
            .args([
                "serve",
                "--ephemeral",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .args(&args)
            .output()
            .await
            .expect("runs");
        assert!(!output.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}
