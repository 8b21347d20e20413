//! What a request that did not hit carries on: past the local store or,
//! for a repeat sequence, to the sequence's own path ([`KeyedRequest`]),
//! then to the upstream call ([`Miss`]). A leaf, so the proxy and the paths it hands requests to
//! share these without importing each other.

use crate::config::{Mode, Timing};
use crate::key::{Canonical, RequestKey};
use crate::route::Dialect;
use crate::serve::flight::Lead;
use crate::store::tiered::LeaseTicket;

/// A miss on its way upstream: what recording its answer needs.
pub(super) struct Miss {
    pub(super) canonical: Canonical,
    pub(super) key: RequestKey,
    /// The caller asked for a fresh answer (record mode, `no-cache`): the
    /// recording it replaces may have another fingerprint.
    pub(super) re_record: bool,
    /// Rewrite an existing fixture (record mode).
    pub(super) replace: bool,
    /// Followers to share the answer with.
    pub(super) lead: Option<Lead>,
    /// A sequence call's number (`x-llmtape-repeats: sequence`).
    pub(super) call: Option<u32>,
    /// The API it speaks: its upstream and its errors' shape.
    pub(super) dialect: Dialect,
    /// The shared store's lease on this key, while this proxy leads it.
    pub(super) lease: Option<LeaseTicket>,
}

/// A request with its key, as `Proxy::route` found it: on its way
/// through a sequence, or past a local miss.
pub(super) struct KeyedRequest {
    /// The plain key.
    pub(super) key: RequestKey,
    /// The canonical form, if it was computed.
    pub(super) canonical: Option<Canonical>,
    /// The request's mode.
    pub(super) mode: Mode,
    /// The caller asked for a fresh answer.
    pub(super) re_record: bool,
    /// Replay pacing.
    pub(super) timing: Timing,
    /// The API it speaks.
    pub(super) dialect: Dialect,
}
