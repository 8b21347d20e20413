//! llmtape: a record-and-replay caching reverse proxy for OpenAI-compatible
//! APIs.
//!
//! How a request flows:
//! 1. [`server`] accepts a connection (plain or TLS) and hands each request
//!    to the [`proxy`] service; `/_llmtape/*` goes to [`admin`].
//! 2. [`proxy`] picks the mode and the [`route`]; uncached routes are
//!    forwarded untouched by [`upstream`].
//! 3. On a cached route the body is collected ([`body`]) and reduced to a
//!    canonical form whose blake3 hash is the [`key`] (a repeat of the same
//!    bytes takes its key from the [`memo`]).
//! 4. A hit comes from [`replay`]'s hot cache, or from [`recordings`] (the
//!    sled [`store`], whose replay [`tape`] serves hits without sled, or a
//!    [`fixtures`] folder), byte for byte.
//! 5. A miss joins or leads a [`flight`] (identical concurrent misses share
//!    one upstream call), goes to [`upstream`], and a successful answer
//!    becomes an [`entry`] via [`record`] ([`sse`] splits streams into
//!    events; [`redact`] drops credentials first). A replay-mode miss is
//!    explained by [`miss`].
//!
//! Around it: [`config`] and [`cli`] describe the knobs, [`app`] runs
//! commands, [`inspect`] prints recordings, [`export`] and [`lint`] move and
//! check fixture files, [`audit`] compares answers (used by [`verify`] and
//! [`probe`]), [`diff`] finds differing JSON paths, [`metrics`] counts, [`logs`]
//! formats log lines.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub(crate) mod audit;
pub mod body;
pub mod cli;
pub mod cmd;
pub mod config;
pub(crate) mod diff;
pub mod error;
pub mod key;
pub mod logs;
pub mod record;
pub(crate) mod route;
pub mod serve;
pub mod store;
mod sync;
