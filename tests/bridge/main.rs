//! End-to-end tests: each starts a real bridge on ephemeral loopback ports
//! and talks to it with a real gRPC client and real WebSocket clients.

mod browser;
mod harness;
mod keys;
mod raw;

mod cli;
mod contract;
mod delivery;
mod events;
mod grpc_input;
mod hostile;
mod key_algorithms;
mod limits;
mod live_page;
mod operability;
mod reflection;
mod scope_changes;
mod tls;
mod tokens;
