//! llmtape: a record-and-replay caching reverse proxy for OpenAI-compatible
//! APIs.
//!
//! The modules follow a request's data flow; dependencies run one way,
//! from the top of this list down.
//!
//! **The serve path** ([`serve`]):
//! 1. `serve::server` accepts a connection (plain or TLS) if
//!    `serve::admission` has room; `serve::connection` serves it, with
//!    `serve::watchdog` bounding slow heads and idle waits and
//!    `serve::read_timeout` stalled bodies, and hands each request to the
//!    `serve::proxy` service; `/_llmtape/*` goes to `serve::admin` (the
//!    web view's page and assets, `assets/ui/`, to `serve::ui`, its JSON
//!    to `serve::ui_api`, which pages through the in-memory rows of
//!    `serve::catalog`).
//! 2. `serve::proxy` decides: the mode (`serve::request` reads the
//!    override headers), the `route`, the [`key`] (the body collected by
//!    [`body`], canonicalised, or found in `key::cache` for repeated
//!    bytes; `key::presets` drop volatile fields first), then the tier;
//!    `serve::sequence` keys the Nth identical call of a run
//!    (`serve::runs` counts them). It returns an `serve::answer::Answer`, the
//!    response with its outcome (`serve::headers`).
//! 3. A hit is replayed (`serve::replay`) from `serve::hot_cache`, or from
//!    the [`store`]'s tier, byte for byte.
//! 4. A miss joins or leads a `serve::flight` (identical concurrent misses
//!    share one upstream call), and `serve::upstream_call` sends it through
//!    `serve::upstream`; a replay-mode miss is explained by `serve::nearest`.
//!
//! **Recording internals** ([`record`]): the answer comes back through
//! `record::recording_body::RecordingBody`, which forwards each chunk and
//! feeds the `record::recorder` on the side (`record::sse` finds a
//! stream's events and its end, [`record::redact`] drops credentials); the
//! result is a [`record::recording::Recording`].
//!
//! **Where recordings live** ([`store`]): the `store::Tier` seam, with the
//! sled store (`store::SledStore`, whose private response log serves hits
//! without sled) and a fixtures folder (`store::FixtureDir`, files in the
//! [`store::fixtures`] format) behind it. With `[remote]`, `store::Tiered`
//! puts a shared Redis tier (`store::remote`) behind the local one:
//! `store::lease` makes identical misses on several proxies go upstream
//! once, `store::remote_changes` carries re-recordings to every proxy,
//! `store::remote_sync` copies whole stores (push, pull); the request's
//! side of it is `serve::shared_store`.
//!
//! **Commands** ([`cmd`]): ls, show, explain, audit, export, import, rm,
//! prune, rekey, lint, verify, probe (`--html`: a report built from the
//! web view's assets) and stats, each with plain options; `audit`
//! compares answers and `diff` finds differing JSON paths for them. The
//! ones on recordings are a [`cmd::job::Job`], run on the tier [`app`]
//! opens, or, while a `serve` holds the store, sent through its
//! `serve.json` ([`remote`]) to `serve::admin_commands` and run there.
//! [`cli`] holds the clap types (and [`usage`] words their errors as one line), [`app`] turns them into a command's
//! options, [`error`] is the commands' one error type.
//!
//! **Around it**: [`config`] (two-stage: raw TOML, then validated types;
//! `[prices]` among them), [`summary`] (what a recording amounts to in a
//! tally or a list row: its model, usage and texts, read once),
//! [`logs`] (the plain log line), `sync` (lock poisoning, handled once).

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
pub mod remote;
pub mod route;
pub mod serve;
pub mod store;
pub mod summary;
mod sync;
pub mod usage;
