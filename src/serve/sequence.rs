//! Repeat sequences in the proxy: with `x-llmtape-repeats: sequence` (or
//! `key.repeats = "sequence"`), the Nth identical request within a run
//! (`x-llmtape-run`) is looked up, recorded and replayed under the key of
//! call N (`crate::key::call_key`); call 1 is the plain key, so recordings
//! made without sequences still answer it.
//!
//! Sequence requests are never coalesced into a single flight: two
//! identical requests are two calls with two answers. Every answer says
//! which call it was in `x-llmtape-call`.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::request::Parts;

use crate::config::Mode;
use crate::key::{call_key, Canonical, RequestKey};
use crate::serve::answer::Answer;
use crate::serve::error::ProxyError;
use crate::serve::headers::{Outcome, CALL_HEADER, RUN_HEADER};
use crate::serve::pending::{KeyedRequest, Miss};
use crate::serve::proxy::Proxy;
use crate::serve::request;
use crate::serve::runs::DEFAULT_RUN;

/// The run a request counts in: `x-llmtape-run`, else the default run.
fn run(headers: &HeaderMap) -> Result<&str, ProxyError> {
    match headers.get(RUN_HEADER) {
        None => Ok(DEFAULT_RUN),
        Some(value) => value
            .to_str()
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ProxyError::BadHeader {
                header: RUN_HEADER,
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                expected: "a run id: any non-empty visible ASCII text",
            }),
    }
}

/// How messages name a run.
fn run_name(run: &str) -> String {
    if run == DEFAULT_RUN {
        "run \"default\", this serve's lifetime".to_string()
    } else {
        format!("run {run:?}")
    }
}

impl Proxy {
    /// Answers call N of a sequence request: its recording, or in `auto`
    /// and `record` an upstream call recorded as call N, or in `replay` a
    /// miss saying which call of how many.
    pub(super) async fn sequence(
        &self,
        parts: &Parts,
        body: Bytes,
        request: KeyedRequest,
    ) -> Answer {
        let s = &self.shared;
        let run = match run(&parts.headers) {
            Ok(run) => run,
            Err(error) => return Answer::error(&error, Some(&request.key)),
        };
        let call = s.runs.next(run, &request.key);
        let key = call_key(&request.key, call);
        let mut answer = self
            .sequence_answer(parts, body, request, run, call, key)
            .await;
        answer
            .response
            .headers_mut()
            .insert(CALL_HEADER, HeaderValue::from(call));
        answer
    }

    async fn sequence_answer(
        &self,
        parts: &Parts,
        body: Bytes,
        request: KeyedRequest,
        run: &str,
        call: u32,
        key: RequestKey,
    ) -> Answer {
        let s = &self.shared;
        if !request.re_record {
            if let Some(answer) = self.replay(&key, request.timing) {
                return answer;
            }
        }
        let canonical = request
            .canonical
            .unwrap_or_else(|| Canonical::new(&request::key_parts(parts, &body), s.memo.rules()));
        if request.mode == Mode::Replay && call == 1 {
            // Nothing of this request is recorded: say what is nearest.
            return self.replay_miss(parts, &canonical, &key, request.dialect);
        }
        if request.mode == Mode::Replay {
            // Calls 1, 2, ... recorded without a gap, below this one.
            let recorded = (1..call)
                .take_while(|n| s.tier.indexed(&call_key(&request.key, *n)))
                .count() as u32;
            let error = ProxyError::SequenceMiss {
                key: key.to_hex(),
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                call,
                recorded,
                run: run_name(run),
            };
            return Answer::error_in(request.dialect, &error, Some(&key));
        }
        let miss = Miss {
            canonical,
            key,
            re_record: request.re_record,
            replace: request.mode == Mode::Record,
            // Never coalesced: each call is its own upstream call.
            lead: None,
            call: Some(call),
            dialect: request.dialect,
            // The shared store's lease coalesces misses; sequences never are.
            lease: None,
        };
        Answer::new(
            self.call_upstream(parts, body, miss).await,
            Some(Outcome::Miss),
            Some(key),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Repeats;
    use crate::serve::headers::REPEATS_HEADER;
    use crate::serve::request::Asked;

    fn repeats(
        headers: &HeaderMap,
        default: Repeats,
    ) -> Result<Repeats, crate::serve::error::ProxyError> {
        Asked::of(headers).repeats(default)
    }

    #[test]
    fn the_headers_are_read_and_nonsense_is_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(repeats(&headers, Repeats::Same).unwrap(), Repeats::Same);
        assert_eq!(run(&headers).unwrap(), DEFAULT_RUN);
        headers.insert(REPEATS_HEADER, HeaderValue::from_static("sequence"));
        headers.insert(RUN_HEADER, HeaderValue::from_static("suite-7"));
        assert_eq!(repeats(&headers, Repeats::Same).unwrap(), Repeats::Sequence);
        assert_eq!(run(&headers).unwrap(), "suite-7");
        headers.insert(REPEATS_HEADER, HeaderValue::from_static("twice"));
        headers.insert(RUN_HEADER, HeaderValue::from_static(""));
        assert!(repeats(&headers, Repeats::Same).is_err());
        assert!(run(&headers).is_err());
    }
}
