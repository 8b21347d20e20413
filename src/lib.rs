//! llmtape: a record-and-replay caching reverse proxy for OpenAI-compatible
//! APIs.
//!
//! How a request flows:
//! 1. [`server`] accepts a connection and hands each request to the
//!    [`proxy`] service.
//! 2. [`proxy`] picks the mode and the [`route`]; uncached routes are
//!    forwarded untouched by [`upstream`].
//! 3. On a cached route the body is collected ([`body`]) and reduced to a
//!    canonical form whose blake3 hash is the [`key`].
//! 4. A hit is read from the [`store`] as an [`entry`] and answered by
//!    [`replay`], byte for byte.
//! 5. A miss goes to [`upstream`]; a successful answer becomes an [`entry`]
//!    via [`record`] (with [`redact`] dropping credentials) and is stored.
//!
//! [`config`] and [`cli`] describe the knobs; [`app`] runs commands, and
//! [`inspect`] prints recordings for `ls` and `show`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod audit;
pub mod body;
pub mod cli;
pub mod config;
pub mod diff;
pub mod entry;
pub mod error;
pub mod export;
pub mod fixtures;
pub mod flight;
pub mod inspect;
pub mod key;
pub mod lint;
pub mod metrics;
pub mod probe;
pub mod proxy;
pub mod record;
pub mod recordings;
pub mod redact;
pub mod replay;
pub mod route;
pub mod server;
pub mod sse;
pub mod store;
pub mod upstream;
pub mod verify;
