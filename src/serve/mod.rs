//! The serve path: the listener, the proxy service and what it needs to
//! answer a request (upstream client, single flight, replay, admin).

pub mod admin;
pub mod error;
pub mod flight;
pub mod hot_cache;
pub mod metrics;
pub mod nearest;
pub mod proxy;
pub mod replay;
pub mod server;
pub mod upstream;
