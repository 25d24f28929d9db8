//! TLS for both listeners: one certificate chain and private key, read
//! from PEM files, presented as `wss://` on the HTTP listener and as
//! `https://` gRPC on the other. Without them the bridge serves plain
//! text, which is meant for loopback development only.
//!
//! Only the ring provider is used, chosen explicitly, so no process-wide
//! default provider has to be installed and no cmake build is needed.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Identity, ServerTlsConfig};

/// A certificate chain and its private key, as PEM text.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The server certificate first, then any intermediates.
    cert_pem: Vec<u8>,
    /// Never shown: `Debug` leaves it out and errors never quote it.
    key_pem: Vec<u8>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsIdentity(..)")
    }
}

/// Why a certificate or key cannot be used; names the file or the part,
/// never its contents.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl TlsIdentity {
    pub fn from_pem(cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        TlsIdentity {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        }
    }

    /// Reads both files; the error names the one that failed.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|error| TlsError(format!("cannot read {}: {error}", path.display())))
        };
        Ok(TlsIdentity::from_pem(read(cert)?, read(key)?))
    }

    /// The acceptor for the HTTP listener, offering only HTTP/1.1 (the
    /// WebSocket upgrade needs it). Fails on a certificate or key that does
    /// not parse or does not belong together, so a bad pair stops start-up.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| TlsError(format!("unreadable TLS certificate: {error}")))?;
        if certs.is_empty() {
            return Err(TlsError(
                "the TLS certificate file holds no certificate".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|error| TlsError(format!("unreadable TLS private key: {error}")))?;

        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError(format!("TLS setup failed: {error}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|error| TlsError(format!("unusable TLS certificate or key: {error}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The gRPC listener's TLS, whose handshakes may take at most
    /// `handshake_timeout`.
    pub fn grpc(&self, handshake_timeout: Duration) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(handshake_timeout)
    }
}
