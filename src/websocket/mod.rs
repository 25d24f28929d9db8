//! The WebSocket side: reading upgrade requests and running sessions.

pub mod request;
pub mod session;
