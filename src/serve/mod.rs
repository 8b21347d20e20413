//! The serve path: the listener, the proxy service and what it needs to
//! answer a request (upstream client, single flight, replay, admin).

pub mod admin;
pub mod answer;
pub mod error;
pub mod flight;
pub mod headers;
pub mod hot_cache;
pub mod metrics;
pub mod nearest;
pub mod proxy;
pub mod replay;
pub mod request;
pub mod server;
pub mod upstream;
pub mod upstream_call;
