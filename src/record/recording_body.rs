//! The recording body: the upstream's body, forwarded as it arrives and
//! recorded on the side.
//!
//! [`RecordingBody`] wraps the upstream's body. Each chunk goes to whoever
//! polls the body (the client, or a caller reading the answer whole) the
//! moment it arrives; on the way it is handed to a [`Sink`] (single flight
//! shares it with followers) and kept by a [`Recorder`]. When the answer is
//! complete (the body's clean end, or a stream's terminal event) the
//! recording goes to the sink's [`Sink::commit`]; a break, a spoiled stream
//! or a drop means nothing is committed. Every answer ends exactly once, in
//! [`Sink::end`], which is where answers are counted.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::BoxError;
use crate::record::recorder::{Exchange, NotRecorded, Recorder, State};
use crate::record::recording::Recording;

/// How one answer ended; each answer ends exactly once.
#[derive(Debug)]
pub enum End<'a> {
    /// The upstream's body ended cleanly.
    Complete,
    /// The upstream broke off (or stalled past its idle timeout).
    Broken(&'a BoxError),
    /// The body was dropped before its end.
    Dropped,
}

/// What happens to an answer as it passes: implemented by the proxy (store
/// the recording, share chunks with followers) and by `verify` (keep it).
pub trait Sink: Send + Unpin + 'static {
    /// Each body chunk, before it is forwarded.
    fn chunk(&mut self, _chunk: &Bytes) {}
    /// The complete recording; called at most once, before the answer's
    /// last chunk is forwarded.
    fn commit(&mut self, recording: Recording);
    /// The answer will not be recorded; called at most once.
    fn not_recorded(&mut self, _why: NotRecorded) {}
    /// The answer ended; called exactly once, last.
    fn end(&mut self, exchange: &Exchange, end: End<'_>);
    /// Whether the upstream should still be read after the client left
    /// (others wait on the rest).
    fn wants_rest(&self) -> bool {
        false
    }
}

/// The upstream's body, forwarded chunk by chunk and recorded on the side.
///
/// Dropped before its end (the client left), it aborts: nothing is
/// committed. With [`RecordingBody::drain_after_drop`] set it first keeps
/// reading the upstream in a task of its own, for at most that long, so
/// that a paid-for answer is still recorded and followers still get it.
pub struct RecordingBody<B, S>
where
    B: UpstreamBody,
    S: Sink,
{
    /// `None` only once dropped.
    inner: Option<Inner<B, S>>,
    /// The answer has ended (and the sink heard so).
    ended: bool,
    /// An upstream break held back for one poll (see `poll_frame`).
    held_back: Option<BoxError>,
    drain: Option<Duration>,
}

struct Inner<B, S> {
    upstream: B,
    recorder: Recorder,
    sink: S,
    /// Whether the sink has heard that nothing will be committed.
    told: bool,
}

impl<B: UpstreamBody, S: Sink> RecordingBody<B, S> {
    /// Wraps the upstream body `upstream`.
    pub fn new(upstream: B, recorder: Recorder, sink: S) -> Self {
        RecordingBody {
            inner: Some(Inner {
                upstream,
                recorder,
                sink,
                told: false,
            }),
            ended: false,
            held_back: None,
            drain: None,
        }
    }

    /// Keep reading for at most `bound` after being dropped unfinished.
    pub fn drain_after_drop(mut self, bound: Duration) -> Self {
        self.drain = Some(bound);
        self
    }

    /// Where the recording stands.
    pub fn state(&self) -> State {
        self.inner
            .as_ref()
            .map_or(State::NotRecorded(NotRecorded::Dropped), |i| {
                i.recorder.state()
            })
    }

    /// The sink, for what it learnt while the answer passed (also after
    /// the end).
    pub fn sink_mut(&mut self) -> Option<&mut S> {
        self.inner.as_mut().map(|i| &mut i.sink)
    }
}

impl<B, S: Sink> Inner<B, S> {
    fn chunk(&mut self, chunk: &Bytes) {
        self.sink.chunk(chunk);
        if let Some(recording) = self.recorder.push(chunk) {
            self.sink.commit(recording);
        }
        self.report_give_up();
    }

    fn end(&mut self, end: End<'_>) {
        let recording = match end {
            End::Complete => self.recorder.finish(),
            End::Broken(_) => self.recorder.give_up(NotRecorded::Broken),
            End::Dropped => self.recorder.give_up(NotRecorded::Dropped),
        };
        if let Some(recording) = recording {
            self.sink.commit(recording);
        }
        self.report_give_up();
        self.sink.end(self.recorder.exchange(), end);
    }

    /// Tells the sink, once, that the recording was given up.
    fn report_give_up(&mut self) {
        if let (State::NotRecorded(why), false) = (self.recorder.state(), self.told) {
            self.told = true;
            self.sink.not_recorded(why);
        }
    }
}

impl<B: UpstreamBody, S: Sink> Body for RecordingBody<B, S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(error) = this.held_back.take() {
            return Poll::Ready(Some(Err(error)));
        }
        let Some(inner) = this.inner.as_mut().filter(|_| !this.ended) else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut inner.upstream).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    inner.chunk(chunk);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                inner.end(End::Broken(&error));
                this.ended = true;
                // hyper closes the connection at a body error without
                // flushing what it has buffered: pausing once lets it send
                // the head and the chunks that arrived before the break.
                this.held_back = Some(error);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) => {
                inner.end(End::Complete);
                this.ended = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.held_back.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) if !self.ended => inner.upstream.size_hint(),
            _ => SizeHint::with_exact(0),
        }
    }
}

impl<B: UpstreamBody, S: Sink> Drop for RecordingBody<B, S> {
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take().filter(|_| !self.ended) else {
            return;
        };
        let wanted = inner.recorder.state() == State::Open || inner.sink.wants_rest();
        match (self.drain, tokio::runtime::Handle::try_current()) {
            (Some(bound), Ok(runtime)) if wanted => {
                tracing::info!(key = %inner.recorder.exchange().key, "client left mid-stream; reading the upstream to the end to record it");
                runtime.spawn(drain(inner, bound));
            }
            _ => inner.end(End::Dropped),
        }
    }
}

/// Reads the rest of an answer nobody is forwarding to, for at most `bound`.
async fn drain<B: UpstreamBody, S: Sink>(mut inner: Inner<B, S>, bound: Duration) {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if inner.recorder.state() != State::Open && !inner.sink.wants_rest() {
            return inner.end(End::Dropped);
        }
        let next = std::future::poll_fn(|cx| Pin::new(&mut inner.upstream).poll_frame(cx));
        match tokio::time::timeout_at(deadline, next).await {
            Err(_) => {
                tracing::warn!(key = %inner.recorder.exchange().key, "client left and the upstream did not finish within the drain bound; not recorded");
                return inner.end(End::Dropped);
            }
            Ok(None) => return inner.end(End::Complete),
            Ok(Some(Err(error))) => return inner.end(End::Broken(&error)),
            Ok(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    inner.chunk(chunk);
                }
            }
        }
    }
}

/// What a [`RecordingBody`] can wrap: an upstream body that can be moved
/// into a task of its own to be drained.
pub trait UpstreamBody: Body<Data = Bytes, Error = BoxError> + Unpin + Send + 'static {}

impl<B: Body<Data = Bytes, Error = BoxError> + Unpin + Send + 'static> UpstreamBody for B {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recorder::tests::exchange;
    use crate::record::redact::Redactor;
    use bytes::BytesMut;
    use http_body_util::{BodyExt, StreamBody};

    /// Remembers what the recorder told it.
    #[derive(Default)]
    struct Log {
        chunks: usize,
        committed: Option<Recording>,
        not_recorded: Vec<NotRecorded>,
        ends: Vec<&'static str>,
    }

    impl Sink for Log {
        fn chunk(&mut self, _chunk: &Bytes) {
            self.chunks += 1;
        }
        fn commit(&mut self, recording: Recording) {
            assert!(self.committed.is_none(), "committed twice");
            self.committed = Some(recording);
        }
        fn not_recorded(&mut self, why: NotRecorded) {
            self.not_recorded.push(why);
        }
        fn end(&mut self, _exchange: &Exchange, end: End<'_>) {
            self.ends.push(match end {
                End::Complete => "complete",
                End::Broken(_) => "broken",
                End::Dropped => "dropped",
            });
        }
    }

    type Chunks = Vec<Result<Frame<Bytes>, BoxError>>;

    fn body(chunks: Chunks) -> impl UpstreamBody {
        StreamBody::new(futures_util::stream::iter(chunks))
    }

    fn data(text: &'static str) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from_static(text.as_bytes())))
    }

    /// Reads a recording body to its end; returns the bytes forwarded and
    /// what the sink heard.
    async fn forward(
        chunks: Chunks,
        content_type: &'static str,
        cap: usize,
    ) -> (Result<Bytes, BoxError>, State, Log) {
        let recorder = Recorder::new(exchange(content_type), Redactor::default(), cap, true);
        let mut tee = RecordingBody::new(body(chunks), recorder, Log::default());
        let mut forwarded = BytesMut::new();
        let mut result = Ok(());
        while let Some(frame) = tee.frame().await {
            match frame {
                Ok(frame) => forwarded.extend_from_slice(frame.data_ref().unwrap()),
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        let state = tee.state();
        let log = std::mem::take(tee.sink_mut().expect("kept until drop"));
        (result.map(|()| forwarded.freeze()), state, log)
    }

    #[tokio::test]
    async fn a_plain_answer_is_forwarded_whole_and_committed_at_its_end() {
        let (bytes, state, log) = forward(
            vec![data("{\"model\":"), data("\"m\"}")],
            "application/json",
            1024,
        )
        .await;
        assert_eq!(&bytes.unwrap()[..], b"{\"model\":\"m\"}");
        assert_eq!(state, State::Committed);
        assert_eq!(log.chunks, 2);
        let recording = log.committed.expect("committed");
        assert_eq!(&recording.body[..], b"{\"model\":\"m\"}");
        assert_eq!(recording.meta.model.as_deref(), Some("m"));
        assert_eq!(log.ends, ["complete"]);
    }

    #[tokio::test]
    async fn a_break_or_an_oversized_answer_commits_nothing_and_ends_once() {
        let (bytes, state, log) = forward(
            vec![data("{\"partial\":"), Err("upstream reset".into())],
            "application/json",
            1024,
        )
        .await;
        assert!(bytes.is_err());
        assert_eq!(state, State::NotRecorded(NotRecorded::Broken));
        assert!(log.committed.is_none());
        assert_eq!(log.not_recorded, [NotRecorded::Broken]);
        assert_eq!(log.ends, ["broken"]);

        let (bytes, state, log) = forward(
            vec![data("0123456789"), data("0123456789")],
            "text/plain",
            15,
        )
        .await;
        assert_eq!(bytes.unwrap().len(), 20, "forwarded whole all the same");
        assert_eq!(state, State::NotRecorded(NotRecorded::TooLarge));
        assert!(log.committed.is_none());
        assert_eq!(log.not_recorded, [NotRecorded::TooLarge]);
        assert_eq!(log.ends, ["complete"]);
    }

    #[tokio::test]
    async fn a_stream_commits_before_its_terminal_event_is_forwarded() {
        let recorder = Recorder::new(
            exchange("text/event-stream"),
            Redactor::default(),
            1024,
            true,
        );
        let chunks = vec![data("data: {}\n\n"), data("data: [DONE]\n\n")];
        let mut tee = RecordingBody::new(body(chunks), recorder, Log::default());
        tee.frame().await.unwrap().unwrap();
        assert!(tee.sink_mut().unwrap().committed.is_none());
        let last = tee.frame().await.unwrap().unwrap();
        assert_eq!(
            last.data_ref().unwrap(),
            &Bytes::from_static(b"data: [DONE]\n\n")
        );
        assert!(
            tee.sink_mut().unwrap().committed.is_some(),
            "stored by the time the client sees the end"
        );
    }

    #[tokio::test]
    async fn a_body_dropped_unread_commits_nothing() {
        let recorder = Recorder::new(
            exchange("application/json"),
            Redactor::default(),
            1024,
            true,
        );
        let ended = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<String>>>);
        impl Sink for Shared {
            fn commit(&mut self, _recording: Recording) {
                self.0.lock().unwrap().push("commit".into());
            }
            fn end(&mut self, _exchange: &Exchange, end: End<'_>) {
                self.0.lock().unwrap().push(format!("{end:?}"));
            }
        }
        let tee = RecordingBody::new(body(vec![data("{}")]), recorder, Shared(ended.clone()));
        drop(tee);
        assert_eq!(*ended.lock().unwrap(), ["Dropped"]);
    }
}
