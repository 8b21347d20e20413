//! Bodies: the one body type the proxy answers with, collecting a request
//! body under a size limit, and an idle timeout between chunks.
//!
//! Does not decide what to store; it only moves and bounds bytes.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::{Instant, Sleep};

/// Errors inside bodies, boxed (hyper's convention).
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The body of every response the proxy sends and every request it
/// forwards: bytes in hand (a replay, an error, an admin answer) sent in
/// one frame, or any other body in a box. A replay's body is the first:
/// a box made and freed per hit was a cache hit's cost for no reason.
pub struct ProxyBody(Inner);

enum Inner {
    /// The bytes not yet sent (`None` once sent, or when there were none).
    Full(Option<Bytes>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl ProxyBody {
    /// `body`, boxed.
    pub fn boxed<B>(body: B) -> ProxyBody
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        ProxyBody(Inner::Boxed(body.map_err(Into::into).boxed_unsync()))
    }
}

impl fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Full(bytes) => f
                .debug_tuple("ProxyBody::Full")
                .field(&bytes.as_ref().map_or(0, Bytes::len))
                .finish(),
            Inner::Boxed(_) => f.write_str("ProxyBody::Boxed"),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Boxed(body) => body.size_hint(),
        }
    }
}

/// A body holding `bytes`, sent in one frame (none when empty).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    let bytes = bytes.into();
    ProxyBody(Inner::Full((!bytes.is_empty()).then_some(bytes)))
}

/// A JSON response with `status`.
pub fn json_response(
    status: http::StatusCode,
    body: impl Into<Bytes>,
) -> http::Response<ProxyBody> {
    let mut response = http::Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A body with no bytes.
pub fn empty() -> ProxyBody {
    ProxyBody(Inner::Full(None))
}

/// Why a request body could not be collected.
#[derive(Debug)]
pub enum CollectError {
    /// More than the limit.
    TooLarge,
    /// The client's stream failed.
    Read(BoxError),
}

/// Reads a whole body, refusing more than `limit` bytes.
pub async fn collect_limited<B>(body: B, limit: usize) -> Result<Bytes, CollectError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(CollectError::TooLarge),
        Err(e) => Err(CollectError::Read(e)),
    }
}

/// A request body as it arrived: one piece or several, joined only when
/// something needs it whole. hyper hands a large body over in pieces (its
/// read buffer is bounded by `server.max_header_bytes`), and a hit needs
/// only its key, which the key memo finds piece by piece: joining a
/// 100 KB body was a fifth of such a hit's CPU.
#[derive(Debug, Default)]
pub struct Pieces {
    /// The body, when it came in one piece (or none).
    one: Bytes,
    /// Every piece, in order, when it came in more than one.
    many: Vec<Bytes>,
}

impl Pieces {
    /// The pieces, in order.
    pub fn as_slice(&self) -> &[Bytes] {
        if self.many.is_empty() {
            std::slice::from_ref(&self.one)
        } else {
            &self.many
        }
    }

    /// The whole body, joined now if it came in pieces (once: it stays
    /// joined).
    pub fn joined(&mut self) -> &Bytes {
        if !self.many.is_empty() {
            let mut whole = Vec::with_capacity(self.many.iter().map(Bytes::len).sum());
            for piece in self.many.drain(..) {
                whole.extend_from_slice(&piece);
            }
            self.one = Bytes::from(whole);
        }
        &self.one
    }

    /// The whole body.
    pub fn into_bytes(mut self) -> Bytes {
        self.joined();
        self.one
    }

    fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        if self.many.is_empty() && self.one.is_empty() {
            self.one = piece;
            return;
        }
        if self.many.is_empty() {
            self.many.push(std::mem::take(&mut self.one));
        }
        self.many.push(piece);
    }
}

/// Reads a whole body into its [`Pieces`], refusing more than `limit`
/// bytes. Borrowed, not taken: a request's future stores what each of its
/// layers is given, and is allocated per request.
pub async fn collect_pieces<B>(body: &mut B, limit: usize) -> Result<Pieces, CollectError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut pieces = Pieces::default();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CollectError::Read(e.into()))?;
        // Trailers are not part of a request's bytes (as with `collect`).
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total > limit {
                return Err(CollectError::TooLarge);
            }
            pieces.push(data);
        }
    }
    Ok(pieces)
}

/// The error an [`IdleTimeout`] body yields when a gap is too long.
#[derive(Debug, Clone, Copy)]
pub struct IdleTimeoutError(pub Duration);

impl fmt::Display for IdleTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no data for {} (upstream.idle_timeout)",
            humantime::format_duration(self.0)
        )
    }
}

impl StdError for IdleTimeoutError {}

/// Fails a body whose next frame takes longer than `timeout`.
///
/// tower-http's timeouts bound the time to response headers only; a long
/// body (a stream of tokens above all) needs a bound between chunks too.
pub struct IdleTimeout<B> {
    inner: B,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    expired: bool,
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: B, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            expired: false,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = Instant::now() + this.timeout;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.expired = true;
                    Poll::Ready(Some(Err(Box::new(IdleTimeoutError(this.timeout)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full, StreamBody};

    #[tokio::test]
    async fn a_full_body_is_one_frame_of_its_bytes_as_http_body_util_sends_it() {
        for bytes in [&b""[..], b"x", b"{\"id\":1}"] {
            let ours = full(Bytes::copy_from_slice(bytes));
            let theirs = Full::new(Bytes::copy_from_slice(bytes));
            assert_eq!(ours.is_end_stream(), theirs.is_end_stream(), "{bytes:?}");
            assert_eq!(ours.size_hint().exact(), theirs.size_hint().exact());
            let mut ours = std::pin::pin!(ours);
            let mut frames = Vec::new();
            while let Some(frame) = ours.frame().await {
                frames.push(frame.unwrap().into_data().unwrap());
            }
            assert!(ours.is_end_stream());
            assert_eq!(ours.size_hint().exact(), Some(0));
            let expected: Vec<Bytes> = if bytes.is_empty() {
                Vec::new()
            } else {
                vec![Bytes::copy_from_slice(bytes)]
            };
            assert_eq!(frames, expected);
        }
        let empty = empty();
        assert!(empty.is_end_stream());
        // Any other body goes in the box, frames and errors as they come.
        let stream = futures_util::stream::iter([
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"a"))),
            Err("cut".into()),
        ]);
        let boxed = ProxyBody::boxed(StreamBody::new(stream));
        let mut boxed = std::pin::pin!(boxed);
        assert_eq!(
            boxed.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        assert_eq!(boxed.frame().await.unwrap().unwrap_err().to_string(), "cut");
    }

    #[tokio::test]
    async fn collect_refuses_bodies_over_the_limit() {
        let ok = collect_limited(Full::new(Bytes::from_static(b"12345")), 5).await;
        assert_eq!(&ok.unwrap()[..], b"12345");
        let big = collect_limited(Full::new(Bytes::from_static(b"123456")), 5).await;
        assert!(matches!(big, Err(CollectError::TooLarge)));
    }

    #[tokio::test]
    async fn a_body_in_pieces_keeps_them_until_it_is_joined() {
        let frames = || {
            ["ab", "", "cde", "f"]
                .map(|piece| Ok::<_, BoxError>(Frame::data(Bytes::from_static(piece.as_bytes()))))
        };
        let mut body = StreamBody::new(futures_util::stream::iter(frames()));
        let mut pieces = collect_pieces(&mut body, 6).await.unwrap();
        let kept: Vec<&[u8]> = pieces.as_slice().iter().map(|b| &b[..]).collect();
        assert_eq!(kept, [&b"ab"[..], b"cde", b"f"], "empty frames are dropped");
        assert_eq!(&pieces.joined()[..], b"abcdef");
        assert_eq!(pieces.as_slice().len(), 1, "joined once, it stays joined");
        assert_eq!(&pieces.into_bytes()[..], b"abcdef");

        let one = collect_pieces(&mut Full::new(Bytes::from_static(b"12345")), 5).await;
        let one = one.unwrap();
        assert_eq!(one.as_slice().len(), 1);
        assert_eq!(&one.into_bytes()[..], b"12345");
        let none = collect_pieces(&mut Empty::<Bytes>::new(), 5).await.unwrap();
        assert!(none.into_bytes().is_empty());
        let big = collect_pieces(&mut Full::new(Bytes::from_static(b"123456")), 5).await;
        assert!(matches!(big, Err(CollectError::TooLarge)));
        // Over the limit only in its third piece.
        let mut body = StreamBody::new(futures_util::stream::iter(frames()));
        let big = collect_pieces(&mut body, 5).await;
        assert!(matches!(big, Err(CollectError::TooLarge)));
        // A read error is the body's, not a size.
        let failing = [
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err::<Frame<Bytes>, BoxError>("reset".into()),
        ];
        let mut body = StreamBody::new(futures_util::stream::iter(failing));
        match collect_pieces(&mut body, 5).await {
            Err(CollectError::Read(e)) => assert_eq!(e.to_string(), "reset"),
            other => panic!("{:?}", other.map(|p| p.into_bytes())),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fires_between_chunks() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stream = tokio_stream_from(rx);
        let mut body = IdleTimeout::new(StreamBody::new(stream), Duration::from_secs(5));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"a"));
        // Nothing more is sent: with time paused, the runtime advances the
        // clock to the deadline as soon as every task is idle.
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.downcast_ref::<IdleTimeoutError>().is_some());
        drop(tx);
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
