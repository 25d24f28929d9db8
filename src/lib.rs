//! cherry-bridge: hypervisor agents stream machine data in over gRPC;
//! browser frontends watch it over WebSockets.
//!
//! The data path, in the order a message travels:
//! `grpc` (agents and control planes in) → `registry` (the latest picture,
//! and who watches it) → `fanout` and `outbox` (per-scope routing and
//! per-connection queues) → `websocket` (sessions out). `envelope` builds
//! the frames, `ticker` drives the cadences, `close` decides close codes, `tls`
//! secures both listeners when a certificate is given.
//! Beside the path, `store` keeps machine properties and accounts across
//! restarts, `telemetry` counts what flows along it, and `operator` serves
//! the metrics, health checks and live page on the HTTP listener.
//!
//! `agent` (feature `libvirt`) is the other end of the agent stream: a
//! hypervisor agent that reads machines from libvirt.

pub mod account;
#[cfg(feature = "libvirt")]
pub mod agent;
pub mod bridge;
pub mod cli;
pub mod close;
pub mod config;
pub mod demo;
pub mod envelope;
pub mod fanout;
pub mod grpc;
pub mod http;
pub mod machine;
pub mod operator;
pub mod outbox;
pub mod registry;
pub mod store;
pub mod telemetry;
pub mod ticker;
pub mod tls;
pub mod token;
pub mod websocket;

pub use bridge::Bridge;
pub use config::{Config, Intervals, Persistence};
pub use grpc::proto;
