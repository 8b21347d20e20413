//! What the proxy hands back for one request: the response, and what
//! happened as a value (logs and metrics read it; nothing parses headers
//! back).

use http::Response;

use crate::body::{json_response, ProxyBody};
use crate::key::RequestKey;
use crate::route::Dialect;
use crate::serve::error::{Fault, ProxyError};
use crate::serve::headers::{self, Outcome};

/// A response with its outcome and key.
pub struct Answer {
    /// What goes to the client.
    pub response: Response<ProxyBody>,
    /// Hit, miss or bypass; `None` for answers that never reached the store
    /// or the upstream (admin, overload, a bad request).
    pub outcome: Option<Outcome>,
    /// The request key, once it was computed.
    pub key: Option<RequestKey>,
    /// For a replay miss, the key of the nearest recording (the one the
    /// 404 and `x-llmtape-miss-nearest` name), so the request log line can
    /// name it too; `None` otherwise. A key is a copy, so a hit pays
    /// nothing for it.
    pub nearest: Option<RequestKey>,
    /// For a hit replayed from a recording: the model and tokens it saved.
    pub saved: Option<crate::serve::metrics::Saved>,
}

impl Answer {
    /// A response that already carries its outcome's headers.
    pub fn new(
        response: Response<ProxyBody>,
        outcome: Option<Outcome>,
        key: Option<RequestKey>,
    ) -> Answer {
        Answer {
            response,
            outcome,
            key,
            nearest: None,
            saved: None,
        }
    }

    /// The OpenAI-shaped answer for `error`, logged at its fault's level,
    /// with the outcome [`error_outcome`] gives it.
    pub fn error(error: &ProxyError, key: Option<&RequestKey>) -> Answer {
        Answer::error_in(Dialect::OpenAi, error, key)
    }

    /// [`Answer::error`] with the body shaped like `dialect`'s errors.
    pub fn error_in(dialect: Dialect, error: &ProxyError, key: Option<&RequestKey>) -> Answer {
        let response = error_response_in(dialect, error, key);
        Answer::new(response, error_outcome(error, key), key.copied())
    }

    /// The word for logs: the outcome, or `error`.
    pub fn outcome_str(&self) -> &'static str {
        self.outcome.map_or("error", Outcome::as_str)
    }
}

/// What an error answer counts as. A request that has its key and then
/// fails for want of a recording (a replay miss) or of the upstream (502,
/// 504: unreachable, slow, broken off) is a miss, labelled and counted
/// like any other; a request refused before it got that far (the caller's
/// mistake, an overload) has no outcome.
pub fn error_outcome(error: &ProxyError, key: Option<&RequestKey>) -> Option<Outcome> {
    let missed = match error {
        ProxyError::ReplayMiss { .. }
        | ProxyError::SequenceMiss { .. }
        | ProxyError::RemoteUnavailable { .. } => true,
        ProxyError::UpstreamUnreachable { .. }
        | ProxyError::UpstreamTimeout { .. }
        | ProxyError::UpstreamBody { .. } => key.is_some(),
        ProxyError::BodyTooLarge { .. }
        | ProxyError::ClientBody { .. }
        | ProxyError::BadHeader { .. }
        | ProxyError::Overloaded { .. }
        | ProxyError::HeaderReadTimeout { .. }
        | ProxyError::BodyReadTimeout { .. }
        | ProxyError::TooManyConnections { .. }
        | ProxyError::Internal { .. } => false,
    };
    missed.then_some(Outcome::Miss)
}

/// The response for `error`, its body shaped like `dialect`'s errors,
/// with the key and the outcome ([`error_outcome`]) in its headers.
pub fn error_response_in(
    dialect: Dialect,
    error: &ProxyError,
    key: Option<&RequestKey>,
) -> Response<ProxyBody> {
    match error.fault() {
        Fault::Client => tracing::debug!(%error, "client error"),
        Fault::Upstream => tracing::warn!(%error, "upstream error"),
        Fault::Proxy => tracing::error!(%error, "internal error"),
    }
    let mut response = json_response(error.status(), error.body_in(dialect));
    match error_outcome(error, key) {
        Some(outcome) => headers::mark(response.headers_mut(), outcome, key),
        None => {
            if let Some(key) = key {
                response
                    .headers_mut()
                    .insert(headers::KEY_HEADER, headers::hex_value(key));
            }
        }
    }
    response
}
