//! Starting and stopping the whole bridge: the store, both listeners, the
//! ticker, and the shutdown that closes every socket with 1001, ends every
//! agent stream and then closes the store.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::close::Close;
use crate::config::{Config, Persistence};
use crate::registry::Registry;
use crate::store::{Contents, Journal, Store, StoreError};
use crate::telemetry::Metrics;
use crate::tls::TlsError;
use crate::token::TokenVerifier;
use crate::{grpc, http, ticker};

/// What every task of a running bridge shares.
pub struct Shared {
    pub config: Config,
    pub registry: Registry,
    pub verifier: TokenVerifier,
    /// Cancelled once, when the bridge begins to shut down.
    pub shutdown: CancellationToken,
    /// Every task the bridge spawns, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// This bridge's own metrics, written along the data path and rendered
    /// at `/metrics`.
    pub metrics: Metrics,
    /// Set once the registry is loaded, both listeners are bound and the
    /// ticker runs; `/readyz` answers 200 while it is set and shutdown has
    /// not begun.
    pub started: AtomicBool,
}

impl Shared {
    /// Whether the bridge should be sent traffic.
    pub fn is_ready(&self) -> bool {
        self.started.load(Ordering::Acquire) && !self.shutdown.is_cancelled()
    }
}

#[derive(Debug)]
pub enum StartError {
    /// The signing key could not be read as the configured kind of key.
    Key(jsonwebtoken::errors::Error),
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The store cannot be opened or read; starting empty would look like
    /// every machine and account had vanished.
    Store(StoreError),
    /// The TLS certificate or key cannot be used.
    Tls(TlsError),
    /// A setting that would leave the bridge running but broken.
    Config(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Key(error) => write!(f, "unusable token key: {error}"),
            StartError::Bind {
                listener,
                addr,
                error,
            } => write!(f, "cannot listen for {listener} on {addr}: {error}"),
            StartError::Store(error) => error.fmt(f),
            StartError::Tls(error) => error.fmt(f),
            StartError::Config(problem) => write!(f, "invalid settings: {problem}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running bridge.
pub struct Bridge {
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Closed last on stop, after every writer to it has ended. `None` when
    /// ephemeral.
    store: Option<Store>,
}

impl Bridge {
    /// Reads the store, binds both listeners and starts serving. Nothing is
    /// accepted before the registry holds what the store held.
    pub async fn start(config: Config) -> Result<Bridge, StartError> {
        config.check().map_err(StartError::Config)?;
        let verifier = TokenVerifier::new(&config.signing_key, &config.claim_checks)
            .map_err(StartError::Key)?;
        let tls = config
            .tls
            .as_ref()
            .map(|identity| identity.acceptor())
            .transpose()
            .map_err(StartError::Tls)?;
        let (store, contents) = open_store(&config.persistence).await?;
        let journal = store
            .as_ref()
            .map_or_else(Journal::ephemeral, Store::journal);
        let http_listener = bind("http", config.http_addr).await?;
        let grpc_listener = bind("grpc", config.grpc_addr).await?;
        let http_addr = local_addr("http", &http_listener, config.http_addr)?;
        let grpc_addr = local_addr("grpc", &grpc_listener, config.grpc_addr)?;

        let shared = Arc::new(Shared {
            registry: Registry::restore(config.limits, contents, journal),
            config,
            verifier,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            metrics: Metrics::new(),
            started: AtomicBool::new(false),
        });
        shared
            .tasks
            .spawn(http::serve(http_listener, tls, shared.clone()));
        let grpc = tokio::spawn(grpc::serve(grpc_listener, shared.clone()));
        ticker::spawn(&shared);
        shared.started.store(true, Ordering::Release);

        let tls = shared.config.tls.is_some();
        info!(http = %http_addr, grpc = %grpc_addr, tls, "bridge listening");
        Ok(Bridge {
            shared,
            http_addr,
            grpc_addr,
            grpc,
            store,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// A token that is cancelled when shutdown begins; also cancels it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// Runs until SIGINT or SIGTERM, then shuts down.
    pub async fn run_until_signal(self) {
        tokio::select! {
            _ = shutdown_signal() => info!("shutdown signal received"),
            _ = self.shared.shutdown.cancelled() => {}
        }
        self.stop().await;
    }

    /// Stops accepting, closes every socket with 1001 and every agent stream,
    /// waits (at most the configured grace) for them to finish, then commits
    /// what is queued for the store and closes it.
    pub async fn stop(self) {
        let grace = self.shared.config.shutdown_grace;
        self.shared.shutdown.cancel();
        self.shared.registry.close_all(Close::ShuttingDown);
        self.shared.tasks.close();

        let finished = tokio::time::timeout(grace, async {
            self.shared.tasks.wait().await;
            let _ = self.grpc.await;
        })
        .await;
        if let Some(store) = self.store {
            let closed = tokio::task::spawn_blocking(move || store.close()).await;
            if closed.is_err() {
                warn!("store did not close cleanly");
            }
        }
        match finished {
            Ok(()) => info!("bridge stopped"),
            Err(_) => warn!(?grace, "bridge stopped with tasks still running"),
        }
    }
}

/// Opens the configured store off the runtime (it reads the whole file)
/// and returns what it holds.
async fn open_store(persistence: &Persistence) -> Result<(Option<Store>, Contents), StartError> {
    let dir = match persistence {
        Persistence::Ephemeral => return Ok((None, Contents::default())),
        Persistence::DataDir(dir) => dir.clone(),
    };
    let (store, contents) = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .expect("Store::open turns its own panics into errors")
        .map_err(StartError::Store)?;
    Ok((Some(store), contents))
}

/// Connections the kernel may hold completed for us before we accept them.
/// The standard library's 128 overflows when thousands of dashboards
/// reconnect at once (after a restart, say); an overflowed handshake costs
/// the client a SYN retransmission, a second or more. The kernel caps it at
/// `net.core.somaxconn`.
const ACCEPT_BACKLOG: u32 = 8192;

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    let bound = || -> std::io::Result<TcpListener> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // As `TcpListener::bind` does: a restarted bridge can listen again
        // while old connections linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(ACCEPT_BACKLOG)
    };
    bound().map_err(|error| StartError::Bind {
        listener,
        addr,
        error,
    })
}

fn local_addr(
    listener: &'static str,
    bound: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    bound.local_addr().map_err(|error| StartError::Bind {
        listener,
        addr,
        error,
    })
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler succeeds on Unix");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
