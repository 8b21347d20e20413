//! What the proxy hands back for one request: the response, and what
//! happened as a value (logs and metrics read it; nothing parses headers
//! back).

use http::Response;

use crate::body::{json_response, ProxyBody};
use crate::key::RequestKey;
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
        }
    }

    /// The OpenAI-shaped answer for `error`, logged at its fault's level. A
    /// replay miss is a miss; every other error has no outcome.
    pub fn error(error: &ProxyError, key: Option<&RequestKey>) -> Answer {
        let response = error_response(error, key);
        let outcome = matches!(error, ProxyError::ReplayMiss { .. }).then_some(Outcome::Miss);
        Answer::new(response, outcome, key.copied())
    }

    /// The word for logs: the outcome, or `error`.
    pub fn outcome_str(&self) -> &'static str {
        self.outcome.map_or("error", Outcome::as_str)
    }
}

/// The response for `error`, with the key (and, for a replay miss, the
/// miss outcome) in its headers.
pub fn error_response(error: &ProxyError, key: Option<&RequestKey>) -> Response<ProxyBody> {
    match error.fault() {
        Fault::Client => tracing::debug!(%error, "client error"),
        Fault::Upstream => tracing::warn!(%error, "upstream error"),
        Fault::Proxy => tracing::error!(%error, "internal error"),
    }
    let mut response = json_response(error.status(), error.body());
    if let Some(key) = key {
        response
            .headers_mut()
            .insert(headers::KEY_HEADER, headers::hex_value(key));
    }
    if matches!(error, ProxyError::ReplayMiss { .. }) {
        headers::mark(response.headers_mut(), Outcome::Miss, None);
    }
    response
}
