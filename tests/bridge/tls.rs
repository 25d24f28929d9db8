//! TLS on both listeners: a `wss://` client and an `https` gRPC client get
//! through with the bridge's certificate; plain text, a stalled handshake
//! and a bad certificate do not.

use std::sync::Arc;
use std::time::Duration;

use cherry_bridge::grpc::client::Bearer;
use cherry_bridge::proto::control_service_client::ControlServiceClient;
use cherry_bridge::proto::{self, ListMachinesRequest};
use cherry_bridge::tls::TlsIdentity;
use cherry_bridge::{Bridge, bridge::StartError};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use uuid::Uuid;

use crate::harness::*;
use crate::keys;
use crate::raw;

async fn tls_bridge(certificate: &keys::Certificate) -> Bridge {
    let mut config = config();
    config.upgrade_timeout = Duration::from_millis(300);
    config.tls = Some(TlsIdentity::from_pem(
        certificate.cert_pem.clone(),
        certificate.key_pem.clone(),
    ));
    Bridge::start(config).await.expect("bridge starts with TLS")
}

fn connector(certificate: &keys::Certificate) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    let cert = CertificateDer::from_pem_slice(certificate.cert_pem.as_bytes()).expect("PEM");
    roots.add(cert).expect("a usable root");
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn control_over_tls(
    bridge: &Bridge,
    certificate: &keys::Certificate,
) -> Result<
    ControlServiceClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
    >,
    tonic::transport::Error,
> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&certificate.cert_pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", bridge.grpc_addr()))
        .expect("a valid URI")
        .tls_config(tls)?
        .connect()
        .await?;
    let bearer = Bearer::new(AGENT_TOKEN).expect("a valid header");
    Ok(ControlServiceClient::with_interceptor(channel, bearer))
}

#[tokio::test]
async fn wss_and_grpc_over_tls_carry_a_machine_to_a_frontend() {
    let certificate = keys::certificate();
    let bridge = tls_bridge(&certificate).await;
    let machine = Uuid::new_v4();

    let mut control = control_over_tls(&bridge, &certificate)
        .await
        .expect("gRPC over TLS connects");
    control
        .upsert_machine(proto::UpsertMachineRequest {
            machine: Some(decision(machine, Uuid::new_v4(), &[])),
        })
        .await
        .expect("upsert over TLS");

    let tcp = TcpStream::connect(bridge.http_addr())
        .await
        .expect("connects");
    let name = ServerName::try_from("localhost").expect("a DNS name");
    let tls = connector(&certificate)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let url = format!(
        "wss://localhost:{}/ws/machines/global?access_token={}",
        bridge.http_addr().port(),
        viewer_token()
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("upgrade over TLS");
    let first = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("in time")
        .expect("a frame")
        .expect("no error");
    let Message::Text(text) = first else {
        panic!("expected text, got {first:?}");
    };
    let envelope: serde_json::Value = serde_json::from_str(text.as_str()).expect("JSON");
    assert_eq!(envelope["type"], "DATA_STATIC");
    assert!(envelope["body"].get(machine.to_string()).is_some());
    bridge.stop().await;
}

#[tokio::test]
async fn plain_text_and_stalled_handshakes_are_dropped() {
    let certificate = keys::certificate();
    let bridge = tls_bridge(&certificate).await;

    // A plain upgrade request to the TLS listener gets no upgrade.
    let mut plain = TcpStream::connect(bridge.http_addr())
        .await
        .expect("connects");
    let head = raw::request("/ws/machines/global?access_token=x", &raw::UPGRADE);
    let _ = plain.write_all(head.as_bytes()).await;
    assert_ne!(raw::read_status(&mut plain).await, 101);

    // Silent clients and a half-sent ClientHello, on both listeners, are
    // dropped at the deadline.
    for addr in [bridge.http_addr(), bridge.grpc_addr()] {
        let mut silent = TcpStream::connect(addr).await.expect("connects");
        assert!(raw::dropped_within(&mut silent, PATIENCE).await, "{addr}");
        let mut partial = TcpStream::connect(addr).await.expect("connects");
        partial
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .expect("sent");
        assert!(raw::dropped_within(&mut partial, PATIENCE).await, "{addr}");
    }

    // Plain-text gRPC gets nowhere either.
    let plain_grpc = cherry_bridge::grpc::client::connect(bridge.grpc_addr(), AGENT_TOKEN).await;
    if let Ok((_, mut control)) = plain_grpc {
        assert!(control.list_machines(ListMachinesRequest {}).await.is_err());
    }

    // The TLS side is still served.
    let mut control = control_over_tls(&bridge, &certificate)
        .await
        .expect("gRPC over TLS connects");
    control
        .list_machines(ListMachinesRequest {})
        .await
        .expect("served");
    bridge.stop().await;
}

#[tokio::test]
async fn an_unusable_certificate_or_key_stops_start_up() {
    let certificate = keys::certificate();
    let other = keys::certificate();
    let cases = [
        (
            "garbage certificate",
            "not a PEM".to_owned(),
            certificate.key_pem.clone(),
        ),
        (
            "garbage key",
            certificate.cert_pem.clone(),
            "not a PEM".to_owned(),
        ),
        (
            "key of another certificate",
            certificate.cert_pem.clone(),
            other.key_pem.clone(),
        ),
    ];
    for (case, cert, key) in cases {
        let mut config = config();
        config.tls = Some(TlsIdentity::from_pem(cert, key.clone()));
        match Bridge::start(config).await {
            Err(StartError::Tls(error)) => {
                assert!(!error.to_string().contains(&key), "{case}: the key leaked");
            }
            Err(other) => panic!("{case}: {other}"),
            Ok(_) => panic!("{case}: started"),
        }
    }
}
