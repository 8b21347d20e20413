//! The serve path: the listener, the proxy service and what it needs to
//! answer a request (upstream client, single flight, replay, admin, and
//! the commands a running serve runs for the command line).

pub mod admin;
pub mod admin_commands;
pub(crate) mod admission;
pub(crate) mod answer;
pub(crate) mod catalog;
pub(crate) mod connection;
pub(crate) mod error;
pub(crate) mod flight;
pub(crate) mod headers;
pub(crate) mod hot_cache;
pub(crate) mod local_miss;
pub(crate) mod metrics;
pub(crate) mod nearest;
pub(crate) mod pending;
pub mod proxy;
pub(crate) mod read_timeout;
pub mod replay;
pub(crate) mod request;
pub(crate) mod runs;
pub(crate) mod sequence;
pub mod server;
pub(crate) mod shared_store;
pub(crate) mod socket;
pub mod ui;
pub(crate) mod ui_api;
pub(crate) mod upstream;
pub(crate) mod upstream_call;
pub(crate) mod watchdog;
