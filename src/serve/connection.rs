//! One client connection, from the first byte to the close: hyper's
//! HTTP/1.1 or HTTP/2 connection over the socket, with the client bounds
//! around it.
//!
//! Layers, outside in:
//! 1. [`Watched`] (`serve::socket`) wraps the socket (plain or TLS),
//!    tells the connection's `watchdog::Activity` when bytes arrive, and
//!    reads the first bytes to tell an HTTP/2 preface from HTTP/1 (TLS
//!    tells by ALPN); on the way out it hands the socket back, so a slow
//!    head can still be told 408.
//! 2. hyper's connection for that protocol ([`Http`]) and [`ConnService`],
//!    which counts a request in flight from the service call to the end
//!    (or drop) of its answer's body ([`TrackedBody`]), tags the peer for
//!    the admin endpoints, and wraps the request body in
//!    `server.body_read_timeout`.
//! 3. [`serve`], the connection's task: it drives the hyper connection
//!    and sleeps towards the watchdog's deadline, and closes the
//!    connection when the head or an idle wait took too long (HTTP/1: a
//!    408 when part of a head came, then the close; HTTP/2: a GOAWAY), or
//!    shuts it down gracefully when the server stops.
//!
//! Does not decide what a request gets (`serve::proxy`) nor which
//! connections are served (`serve::admission`).

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{oneshot, watch};

use crate::body::{BoxError, ProxyBody};
use crate::serve::admin;
use crate::serve::error::ProxyError;
use crate::serve::metrics::Metrics;
use crate::serve::proxy::Proxy;
use crate::serve::read_timeout::BodyReadTimeout;
use crate::serve::socket::{Protocol, Watched};
use crate::serve::watchdog::{Activity, Bounds, ClientTimeout, InFlightRequest, Verdict};

/// After a timeout, the last bytes (a 408, a GOAWAY, TLS close_notify)
/// get this long to leave; a client that does not take them is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub(crate) proxy: Proxy,
    pub(crate) metrics: Arc<Metrics>,
    /// hyper's HTTP/1.1 side, and its HTTP/2 side (prior knowledge or ALPN).
    pub(crate) http1: http1::Builder,
    pub(crate) http2: http2::Builder<TokioExecutor>,
    pub(crate) bounds: Bounds,
    pub(crate) body_read_timeout: Duration,
    /// The whole HTTP/1.1 408 answer to a slow head, rendered once.
    pub(crate) head_timeout_answer: Bytes,
}

/// A complete HTTP/1.1 answer to `error` that closes the connection: for
/// what is written outside hyper (a slow head, a refused connection).
pub(crate) fn raw_answer(error: &ProxyError, extra_headers: &[(&str, &str)]) -> Bytes {
    let status = error.status();
    let body = error.body();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// Serves one connection until it ends, times out, or (after `closing`
/// turns) finishes its requests. `h2`: TLS negotiated HTTP/2.
pub(crate) async fn serve<IO>(
    shared: Arc<Shared>,
    io: IO,
    peer: SocketAddr,
    h2: bool,
    closing: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = shared.metrics.clone();
    let activity = Activity::new(
        h2,
        Some(Box::new(move || metrics.timed_out(ClientTimeout::Body))),
    );
    let (handback, mut handed_back) = oneshot::channel();
    let io = Watched::new(io, activity.clone(), handback);
    let service = ConnService {
        shared: shared.clone(),
        activity: activity.clone(),
        peer,
    };
    let mut connection = if h2 {
        Http::serve(&shared, io, service, Protocol::Http2)
    } else {
        Http::Sniffing(Some((io, service)))
    };
    let mut shutting_down = false;
    // The watchdog is never told of a change (a read, a request, an
    // answer's end): each change starts a deadline at least `check` after
    // it, so a watchdog that looks again at least every `check` (and at
    // the deadline it knows, when sooner) is never late, and a request
    // costs no wake-up of it, nor a timer move.
    let check = shared
        .bounds
        .header
        .min(shared.bounds.idle)
        .max(Duration::from_millis(1));
    // One timer for the connection's life, moved to each next look.
    let mut timer = Timer::new();
    let mut armed_for = None;
    let closed = shutdown_signal(closing);
    tokio::pin!(closed);
    let expired = loop {
        let now = tokio::time::Instant::now();
        let next = match activity.verdict_at(now, shared.bounds) {
            Verdict::Busy => now + check,
            Verdict::WaitUntil(deadline) => deadline.min(now + check),
            Verdict::HeadTimedOut { partial } => break Expired::Head { partial },
            Verdict::IdleTimedOut => break Expired::Idle,
        };
        if armed_for != Some(next) {
            timer.reset(next);
            armed_for = Some(next);
        }
        // Biased: the connection first (it is what wakes the task almost
        // always), and no random draw per wake-up.
        tokio::select! {
            biased;
            result = poll_fn(|cx| connection.poll(&shared, cx)) => {
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
                return;
            }
            () = poll_fn(|cx| timer.poll_due(cx)) => {}
            // An error means the server is gone: stop all the same.
            _ = &mut closed, if !shutting_down => {
                shutting_down = true;
                connection.graceful_shutdown();
            }
        }
    };
    let which = expired.timeout();
    shared.metrics.timed_out(which);
    tracing::debug!(%peer, timeout = which.as_str(), "closing a client connection that waited too long");
    if activity.is_h2() {
        // A GOAWAY: the client knows to open a new connection.
        connection.graceful_shutdown();
        let _ = tokio::time::timeout(CLOSE_GRACE, poll_fn(|cx| connection.poll(&shared, cx))).await;
        return;
    }
    // Dropping hyper's connection hands the socket back.
    drop(connection);
    let Ok(mut io) = handed_back.try_recv() else {
        return;
    };
    let answer = match expired {
        Expired::Head { partial: true } => Some(&shared.head_timeout_answer[..]),
        Expired::Head { partial: false } | Expired::Idle => None,
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, close_with(&mut io, answer)).await;
}

/// The socket as hyper reads it.
type HyperIo<IO> = TokioIo<Watched<IO>>;

/// hyper's connection for the protocol the client speaks, once its first
/// bytes told it (or TLS did).
enum Http<IO> {
    /// Reading the first bytes: the socket and the service wait for them.
    Sniffing(Option<(Watched<IO>, ConnService)>),
    Http1(Pin<Box<http1::Connection<HyperIo<IO>, ConnService>>>),
    Http2(Pin<Box<http2::Connection<HyperIo<IO>, ConnService, TokioExecutor>>>),
    /// Shut down before it knew.
    Closed,
}

impl<IO> Http<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// hyper's connection for `protocol` over `io`.
    fn serve(shared: &Shared, io: Watched<IO>, service: ConnService, protocol: Protocol) -> Self {
        let io = TokioIo::new(io);
        match protocol {
            Protocol::Http1 => Http::Http1(Box::pin(shared.http1.serve_connection(io, service))),
            Protocol::Http2 => Http::Http2(Box::pin(shared.http2.serve_connection(io, service))),
        }
    }

    /// Drives the connection: ready when it ended.
    fn poll(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            match self {
                Http::Http1(connection) => return connection.as_mut().poll(cx).map_err(Into::into),
                Http::Http2(connection) => return connection.as_mut().poll(cx).map_err(Into::into),
                Http::Closed => return Poll::Ready(Ok(())),
                Http::Sniffing(waiting) => {
                    let (io, _) = waiting.as_mut().expect("taken only to serve");
                    let protocol = ready!(io.poll_sniff(cx))?;
                    let (io, service) = waiting.take().expect("taken only to serve");
                    *self = Http::serve(shared, io, service, protocol);
                }
            }
        }
    }

    /// Finishes the requests under way and ends (HTTP/2: a GOAWAY); a
    /// connection that has not said what it speaks just closes.
    fn graceful_shutdown(&mut self) {
        match self {
            Http::Http1(connection) => connection.as_mut().graceful_shutdown(),
            Http::Http2(connection) => connection.as_mut().graceful_shutdown(),
            Http::Sniffing(_) => *self = Http::Closed,
            Http::Closed => {}
        }
    }
}

/// The connection's timer, whose `Sleep` is polled only when it may be
/// due: when it was just set (to register it), or when its own waker
/// fired. A task's wake-ups are nearly all for the socket, and polling
/// the `Sleep` at each (the runtime's budget, the timer entry's state
/// and waker) cost a cache hit about 250 instructions.
struct Timer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    fired: Arc<TimerFired>,
    /// The waker the `Sleep` is polled with: it marks `fired`, then wakes
    /// the task.
    waker: Waker,
    /// Set since it was last polled.
    reset: bool,
    /// The task's waker `fired` holds, to compare without its lock.
    task: Option<Waker>,
}

/// What the timer's waker shares with the timer.
struct TimerFired {
    fired: AtomicBool,
    task: std::sync::Mutex<Option<Waker>>,
}

impl Wake for TimerFired {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Some(task) = &*crate::sync::lock(&self.task) {
            task.wake_by_ref();
        }
    }
}

impl Timer {
    fn new() -> Timer {
        let fired = Arc::new(TimerFired {
            fired: AtomicBool::new(false),
            task: std::sync::Mutex::new(None),
        });
        Timer {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            waker: Waker::from(fired.clone()),
            fired,
            reset: true,
            task: None,
        }
    }

    /// Sets it to fire at `deadline`.
    fn reset(&mut self, deadline: tokio::time::Instant) {
        self.sleep.as_mut().reset(deadline);
        self.reset = true;
    }

    /// Ready once the deadline has passed.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self
            .task
            .as_ref()
            .is_some_and(|task| task.will_wake(cx.waker()))
        {
            let task = cx.waker().clone();
            *crate::sync::lock(&self.fired.task) = Some(task.clone());
            self.task = Some(task);
        }
        if !self.reset && !self.fired.fired.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        self.reset = false;
        // Cleared before the poll (acquire: the poll's reads come after),
        // so a firing after it is seen at the next wake-up.
        self.fired.fired.swap(false, Ordering::AcqRel);
        self.sleep
            .as_mut()
            .poll(&mut Context::from_waker(&self.waker))
    }
}

/// Resolves when `closing` turns (or its sender is gone: the server is).
/// Polled at every wake-up of a connection's task, so once its wait is
/// registered with the channel, and while the task's waker is the one it
/// registered, a poll only reads the channel's version (an atomic load):
/// polling the channel's wait again takes its waiter lock, every time.
fn shutdown_signal(mut closing: watch::Receiver<bool>) -> impl Future<Output = ()> {
    let peek = closing.clone();
    let mut registered: Option<std::task::Waker> = None;
    async move {
        let changed = closing.changed();
        tokio::pin!(changed);
        poll_fn(|cx| {
            if peek.has_changed().unwrap_or(true) {
                return Poll::Ready(());
            }
            if registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                // The send that turns `closing` wakes that waker.
                return Poll::Pending;
            }
            match changed.as_mut().poll(cx) {
                Poll::Ready(_) => Poll::Ready(()),
                Poll::Pending => {
                    registered = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy)]
enum Expired {
    Head { partial: bool },
    Idle,
}

impl Expired {
    fn timeout(self) -> ClientTimeout {
        match self {
            Expired::Head { .. } => ClientTimeout::Header,
            Expired::Idle => ClientTimeout::Idle,
        }
    }
}

/// Writes `answer` (if any), closes the write side, and reads what the
/// client still sends until it closes too, so the answer is not lost to
/// a reset (closing a socket with unread data resets it). The caller
/// bounds the time.
async fn close_with<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    answer: Option<&[u8]>,
) -> io::Result<()> {
    if let Some(mut rest) = answer {
        while !rest.is_empty() {
            let n = poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, rest)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            rest = &rest[n..];
        }
        poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx)).await?;
    }
    poll_fn(|cx| Pin::new(&mut *io).poll_shutdown(cx)).await?;
    let mut scratch = [0u8; 1024];
    loop {
        let mut buf = ReadBuf::new(&mut scratch);
        poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, &mut buf)).await?;
        if buf.filled().is_empty() {
            return Ok(());
        }
    }
}

/// The service hyper calls for each request of one connection.
struct ConnService {
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let h2 = request.version() == Version::HTTP_2;
        let in_flight = self.activity.request_started(h2);
        // The admin endpoints need to know who is asking.
        admin::tag_peer(&mut request, self.peer);
        let on_stall = {
            let activity = self.activity.clone();
            move || activity.body_stalled()
        };
        let (parts, body) = request.into_parts();
        let body = BodyReadTimeout::new(body, self.shared.body_read_timeout, on_stall);
        // One reference for the proxy; the activity is the in-flight
        // guard's (each reference counted is an atomic add and sub).
        let shared = self.shared.clone();
        Box::pin(async move {
            let mut response = shared.proxy.respond(&parts, body).await;
            // The rest of a stalled body is never read: HTTP/1 cannot go
            // on with the next request (HTTP/2 resets just the stream).
            if !h2 && in_flight.activity().take_body_stalled() {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
            }))
        })
    }
}

/// An answer's body that keeps its request in flight until it ends or is
/// dropped: a long stream is never taken for an idle connection.
pub(crate) struct TrackedBody {
    inner: ProxyBody,
    _in_flight: InFlightRequest,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's future is moved into its box for every request, so its
    /// size is a per-request cost: the paths that call the upstream (whose
    /// states made it 5 KB long) are boxed on their own, when taken. In a
    /// release build the connection's future for a request is 968 bytes
    /// (`RUSTC_BOOTSTRAP=1 cargo rustc --release --lib -- -Zprint-type-sizes`,
    /// the `async block` of `connection.rs`), under the 1,032 bytes that
    /// glibc's malloc serves from its per-thread cache: past them a box
    /// cost about 700 instructions more to make and free. This debug
    /// build's figure is larger; its bound catches a state added to a
    /// hit's path.
    #[test]
    fn a_requests_future_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path()).unwrap();
        let proxy = Proxy::new(&crate::config::Config::defaults(), Arc::new(store)).unwrap();
        let (parts, body) = Request::post("/v1/chat/completions")
            .body(http_body_util::Full::new(Bytes::from_static(b"{}")))
            .unwrap()
            .into_parts();
        let body = BodyReadTimeout::new(body, Duration::from_secs(1), || {});
        let size = std::mem::size_of_val(&proxy.respond(&parts, body));
        // 568 bytes; 1.8 KB (with its head) before the head was lent, the
        // body borrowed while collected and the local store's misses
        // boxed; 5.4 KB before the miss paths were boxed.
        assert!(
            size <= 640,
            "the future of a request is {size} bytes (568 now)"
        );
    }

    /// Counts its wakes.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl futures_util::task::ArcWake for Wakes {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn the_shutdown_signal_wakes_its_task_after_many_polls_and_when_the_server_is_gone() {
        for drop_sender in [false, true] {
            let (tx, rx) = watch::channel(false);
            let signal = shutdown_signal(rx);
            let mut signal = std::pin::pin!(signal);
            let wakes = Arc::new(Wakes(Default::default()));
            let waker = futures_util::task::waker(wakes.clone());
            let mut cx = Context::from_waker(&waker);
            for _ in 0..5 {
                assert!(signal.as_mut().poll(&mut cx).is_pending());
            }
            assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 0);
            if drop_sender {
                drop(tx);
            } else {
                tx.send(true).unwrap();
            }
            assert!(
                wakes.0.load(std::sync::atomic::Ordering::SeqCst) >= 1,
                "{drop_sender}"
            );
            assert!(signal.as_mut().poll(&mut cx).is_ready(), "{drop_sender}");
        }
        // A new waker (the task moved) registers again and is woken.
        let (tx, rx) = watch::channel(false);
        let mut signal = std::pin::pin!(shutdown_signal(rx));
        let first = futures_util::task::waker(Arc::new(Wakes(Default::default())));
        assert!(signal
            .as_mut()
            .poll(&mut Context::from_waker(&first))
            .is_pending());
        let wakes = Arc::new(Wakes(Default::default()));
        let second = futures_util::task::waker(wakes.clone());
        assert!(signal
            .as_mut()
            .poll(&mut Context::from_waker(&second))
            .is_pending());
        tx.send(true).unwrap();
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_fires_at_its_deadline_whatever_else_wakes_the_task() {
        use tokio::time::Instant;
        let secs = Duration::from_secs;
        let start = Instant::now();
        let mut timer = Timer::new();
        timer.reset(start + secs(5));
        // Another wake-up of the task comes first: the timer is not due.
        let other = tokio::time::sleep_until(start + secs(2));
        tokio::pin!(other);
        let mut early = 0;
        let fired = tokio::time::timeout(secs(60), async {
            loop {
                tokio::select! {
                    biased;
                    () = poll_fn(|cx| timer.poll_due(cx)) => break Instant::now(),
                    () = &mut other, if early == 0 => early += 1,
                }
            }
        })
        .await
        .expect("the timer fires (its waker wakes the task)");
        assert_eq!(early, 1);
        assert!(
            fired >= start + secs(5) && fired < start + secs(6),
            "{:?}",
            fired - start
        );
        // Set again, later: due then, not before.
        timer.reset(fired + secs(3));
        tokio::time::timeout(secs(60), poll_fn(|cx| timer.poll_due(cx)))
            .await
            .expect("the timer fires again");
        assert!(Instant::now() >= fired + secs(3));
    }

    #[test]
    fn a_raw_answer_is_complete_http_that_closes() {
        let error = ProxyError::HeaderReadTimeout {
            timeout: Duration::from_millis(300),
        };
        let answer = raw_answer(&error, &[("retry-after", "1")]);
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(head.contains("\r\nretry-after: 1"), "{head}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "request_head_timeout");
    }

    #[tokio::test]
    async fn close_with_writes_the_answer_then_waits_for_the_client_to_close() {
        let (mut ours, mut theirs) = tokio::io::duplex(64);
        let closing = tokio::spawn(async move { close_with(&mut ours, Some(b"bye")).await });
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        loop {
            let mut read = ReadBuf::new(&mut buf);
            poll_fn(|cx| Pin::new(&mut theirs).poll_read(cx, &mut read))
                .await
                .unwrap();
            if read.filled().is_empty() {
                break;
            }
            got.extend_from_slice(read.filled());
        }
        assert_eq!(got, b"bye", "then end of stream");
        drop(theirs);
        closing.await.unwrap().unwrap();
    }
}
