//! Recording internals: what an upstream answer becomes on its way to the
//! store.
//!
//! `recording_body` forwards an answer and [`recorder`] keeps it on the side, `sse` finds
//! a stream's events and its clean end, [`redact`] drops what must never be
//! stored, and [`recording`] is the schema and encoding of the result.

pub mod recorder;
pub mod recording;
pub(crate) mod recording_body;
pub mod redact;
pub(crate) mod sse;
