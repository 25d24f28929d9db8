//! The command line: `serve`, `demo` and `token`, with every setting of
//! `serve` also readable from a `CHERRY_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use uuid::Uuid;

use crate::account::AccountType;
use crate::config::{
    Config, Intervals, MAX_AGENT_STREAMS, MAX_GRPC_MESSAGE, Persistence, SHUTDOWN_GRACE,
};
use crate::registry::RegistryLimits;
use crate::tls::{TlsError, TlsIdentity};
use crate::token::{ClaimChecks, SigningKey};

#[derive(Parser, Debug)]
#[command(
    name = "cherry-bridge",
    version,
    about = "gRPC-to-WebSocket bridge for virtual-machine state"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the bridge.
    Serve(ServeArgs),
    /// Run the bridge with a simulated hypervisor and print URLs to open.
    Demo(ServeArgs),
    /// Mint an HS256 access token for an account.
    Token(TokenArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Where WebSockets are served.
    #[arg(long, env = "CHERRY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Where agents and control planes connect over gRPC.
    #[arg(long, env = "CHERRY_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Shared secret for HS256 access tokens.
    #[arg(long, env = "CHERRY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key for RS256 or ES256 access tokens, instead of a secret.
    #[arg(long, env = "CHERRY_JWT_PUBLIC_KEY", conflicts_with = "jwt_secret")]
    pub jwt_public_key: Option<PathBuf>,

    /// The algorithm of --jwt-public-key.
    #[arg(
        long,
        env = "CHERRY_JWT_ALGORITHM",
        value_enum,
        default_value = "rs256"
    )]
    pub jwt_algorithm: PublicKeyAlgorithm,

    /// Require this `iss` claim.
    #[arg(long, env = "CHERRY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Require this `aud` claim.
    #[arg(long, env = "CHERRY_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Bearer token agents and control planes present over gRPC.
    #[arg(long, env = "CHERRY_AGENT_TOKEN", hide_env_values = true)]
    pub agent_token: Option<String>,

    /// How often DATA_DYNAMIC goes out.
    #[arg(long, env = "CHERRY_STATE_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub state_interval: Duration,

    /// How often DATA_DYNAMIC_CONNECTIONS goes out.
    #[arg(long, env = "CHERRY_CONNECTIONS_INTERVAL", value_parser = humantime::parse_duration, default_value = "10s")]
    pub connections_interval: Duration,

    /// How often DATA_DYNAMIC_DISKS goes out.
    #[arg(long, env = "CHERRY_DISKS_INTERVAL", value_parser = humantime::parse_duration, default_value = "120s")]
    pub disks_interval: Duration,

    /// State older than this is left out of DATA_DYNAMIC.
    #[arg(long, env = "CHERRY_STALE_AFTER", value_parser = humantime::parse_duration, default_value = "5s")]
    pub stale_after: Duration,

    /// Open WebSockets in total; one more is closed with 1013.
    #[arg(long, env = "CHERRY_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Open WebSockets per account; one more is closed with 1013.
    #[arg(long, env = "CHERRY_MAX_CONNECTIONS_PER_ACCOUNT", default_value_t = 64)]
    pub max_connections_per_account: usize,

    /// Unsent events a connection may hold before it is closed with 1013.
    #[arg(long, env = "CHERRY_MAX_BACKLOG", default_value_t = 1024)]
    pub max_backlog: usize,

    /// Largest client frame, in bytes; larger closes with 1008.
    #[arg(long, env = "CHERRY_MAX_CLIENT_FRAME", default_value_t = 64 * 1024)]
    pub max_client_frame: usize,

    /// How long a client may take to send its upgrade request, TLS
    /// handshake included; also bounds gRPC TLS handshakes.
    #[arg(long, env = "CHERRY_UPGRADE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub upgrade_timeout: Duration,

    /// Largest gRPC message, in bytes; larger fails with RESOURCE_EXHAUSTED.
    #[arg(long, env = "CHERRY_MAX_GRPC_MESSAGE", default_value_t = MAX_GRPC_MESSAGE)]
    pub max_grpc_message: usize,

    /// Agent streams open at once; one more fails with RESOURCE_EXHAUSTED.
    #[arg(long, env = "CHERRY_MAX_AGENT_STREAMS", default_value_t = MAX_AGENT_STREAMS)]
    pub max_agent_streams: usize,

    /// PEM certificate chain; with --tls-key, both listeners serve TLS
    /// (wss:// and https gRPC) instead of plain text.
    #[arg(long, env = "CHERRY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "CHERRY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Where machine properties and accounts are kept across restarts
    /// [default for serve: /var/lib/cherry-bridge; demo keeps nothing
    /// unless given one].
    #[arg(long, env = "CHERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Keep everything in memory, even if a data directory is given; a
    /// restart forgets machines and accounts.
    #[arg(long, env = "CHERRY_EPHEMERAL", value_parser = clap::builder::BoolishValueParser::new())]
    pub ephemeral: bool,
}

/// Where `serve` keeps its store when no --data-dir is given: the place
/// the filesystem hierarchy (and systemd's `StateDirectory=`) gives a
/// service's state, the same whoever runs it and from wherever.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cherry-bridge";

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PublicKeyAlgorithm {
    Rs256,
    Es256,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The HS256 secret the bridge verifies with.
    #[arg(long, env = "CHERRY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,

    /// The account the token speaks for; a new UUID if omitted.
    #[arg(long)]
    pub account: Option<Uuid>,

    /// The account type claim, for accounts the directory does not hold.
    #[arg(long, value_enum)]
    pub account_type: Option<AccountTypeArg>,

    /// The permissions claim (VIEW_ALL_VMS = 1).
    #[arg(long)]
    pub permissions: Option<u64>,

    /// How long the token is valid.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub lifetime: Duration,

    /// Mint a refresh token (which the bridge refuses), for testing.
    #[arg(long)]
    pub refresh: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AccountTypeArg {
    Administrative,
    Client,
}

impl From<AccountTypeArg> for AccountType {
    fn from(value: AccountTypeArg) -> Self {
        match value {
            AccountTypeArg::Administrative => AccountType::Administrative,
            AccountTypeArg::Client => AccountType::Client,
        }
    }
}

impl ServeArgs {
    /// The signing key the flags describe, if any.
    pub fn signing_key(&self) -> std::io::Result<Option<SigningKey>> {
        // An empty secret (say `CHERRY_JWT_SECRET=` left blank) is no secret.
        if let Some(secret) = self.jwt_secret.as_ref().filter(|s| !s.is_empty()) {
            return Ok(Some(SigningKey::Secret(secret.clone().into_bytes())));
        }
        let Some(path) = &self.jwt_public_key else {
            return Ok(None);
        };
        let key = match self.jwt_algorithm {
            PublicKeyAlgorithm::Rs256 => SigningKey::rsa_from_file(path)?,
            PublicKeyAlgorithm::Es256 => SigningKey::ec_from_file(path)?,
        };
        Ok(Some(key))
    }

    /// The certificate and key the flags name, read now, if any.
    pub fn tls_identity(&self) -> Result<Option<TlsIdentity>, TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        TlsIdentity::from_files(cert, key).map(Some)
    }

    /// What `serve` keeps: the data directory unless told to be ephemeral.
    pub fn serve_persistence(&self) -> Persistence {
        if self.ephemeral {
            return Persistence::Ephemeral;
        }
        let dir = self.data_dir.clone();
        Persistence::DataDir(dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)))
    }

    /// What `demo` keeps: nothing, unless given a data directory, so that
    /// trying the demo leaves no files behind.
    pub fn demo_persistence(&self) -> Persistence {
        match (&self.data_dir, self.ephemeral) {
            (Some(dir), false) => Persistence::DataDir(dir.clone()),
            _ => Persistence::Ephemeral,
        }
    }

    /// The settings these flags describe, persisting as `serve` does,
    /// without TLS (see `tls_identity`).
    pub fn config(&self, signing_key: SigningKey, agent_token: String) -> Config {
        Config {
            http_addr: self.http_addr,
            grpc_addr: self.grpc_addr,
            signing_key,
            claim_checks: ClaimChecks {
                issuer: self.jwt_issuer.clone(),
                audience: self.jwt_audience.clone(),
            },
            agent_token,
            intervals: Intervals {
                state: self.state_interval,
                connections: self.connections_interval,
                disks: self.disks_interval,
            },
            limits: RegistryLimits {
                stale_after: self.stale_after,
                max_backlog: self.max_backlog,
                max_connections: self.max_connections,
                max_connections_per_account: self.max_connections_per_account,
            },
            max_client_frame: self.max_client_frame,
            upgrade_timeout: self.upgrade_timeout,
            tls: None,
            max_grpc_message: self.max_grpc_message,
            max_agent_streams: self.max_agent_streams,
            shutdown_grace: SHUTDOWN_GRACE,
            persistence: self.serve_persistence(),
        }
    }
}
