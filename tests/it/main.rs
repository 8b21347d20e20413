//! llmtape's integration tests, one module per area, built as one test
//! binary (`cargo test --test it`; a filter such as `soak::` or
//! `proxy::a_repeat` picks tests). `support` is the harness they share.
//!
//! Every test runs as a thread of this one process, next to the others:
//! a test must not change anything process-wide (environment variables,
//! the current directory, signal handlers, limits) and must not measure
//! anything process-wide (this process's memory or CPU time); what needs
//! its own process runs in a child.

mod support;

mod access_log;
mod anthropic;
mod audit;
mod bad_input;
mod cli;
mod crash;
mod fixtures;
mod fuzz;
mod limits;
mod presets;
mod proxy;
mod remote;
mod remote_fleet;
mod repeats;
mod routes;
mod sdk;
mod serving;
mod singleflight;
mod slow_clients;
mod soak;
mod stats;
mod stream;
mod tls;
mod ui;
mod ui_api;
mod verify;
