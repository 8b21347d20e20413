//! `server.body_read_timeout`: a bound on the pauses in a request body
//! while the proxy reads it.
//!
//! Owns the body wrapper and its error only. The connection wraps every
//! request body in it (`serve::connection`); the proxy turns the error
//! into a 408 (`ProxyError::BodyReadTimeout`). The clock runs only while
//! someone waits for the body, so a request the proxy has not started to
//! read, and a long answer streaming back, are never cut by it.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;

/// The error a [`BodyReadTimeout`] body yields: no data for this long.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeoutError(pub Duration);

impl fmt::Display for BodyReadTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no request body data for {} (server.body_read_timeout)",
            humantime::format_duration(self.0)
        )
    }
}

impl StdError for BodyReadTimeoutError {}

/// Fails a request body that pauses longer than `timeout` while it is read.
///
/// The pause is measured from the second poll in a row that finds no data
/// after the last frame. The first such poll only asks to be polled again
/// at once: hyper hands a body's first bytes over only after its reader
/// asked for them (that first poll), so a body that arrives with its head
/// (nearly all of them) is there by the next poll and never arms a timer,
/// which would cost a timer registration and its removal per request.
pub struct BodyReadTimeout<B, F> {
    inner: B,
    timeout: Duration,
    /// Armed on the second wait in a row; `None` until then.
    sleep: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since the timer was armed: re-arm on the next wait.
    progressed: bool,
    /// The last poll found nothing and asked to be polled again.
    waited: bool,
    /// Called once when the timeout fires (metrics, closing the connection).
    on_stall: Option<F>,
    expired: bool,
}

impl<B, F: FnOnce()> BodyReadTimeout<B, F> {
    /// Wraps `inner`; `on_stall` runs once if the timeout fires.
    pub fn new(inner: B, timeout: Duration, on_stall: F) -> Self {
        BodyReadTimeout {
            inner,
            timeout,
            sleep: None,
            progressed: false,
            waited: false,
            on_stall: Some(on_stall),
            expired: false,
        }
    }
}

impl<B, F> Body for BodyReadTimeout<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    F: FnOnce() + Unpin,
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
                this.progressed = true;
                this.waited = false;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending if !this.waited && (this.progressed || this.sleep.is_none()) => {
                // The first wait since the last frame: look again at once
                // (a wake-up the connection usually has coming anyway).
                this.waited = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => {
                this.waited = false;
                let deadline = Instant::now() + this.timeout;
                let sleep = match &mut this.sleep {
                    Some(sleep) => {
                        if this.progressed {
                            sleep.as_mut().reset(deadline);
                        }
                        sleep
                    }
                    None => this
                        .sleep
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                this.progressed = false;
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.expired = true;
                        if let Some(on_stall) = this.on_stall.take() {
                            on_stall();
                        }
                        Poll::Ready(Some(Err(Box::new(BodyReadTimeoutError(this.timeout)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
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
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    type Sender = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

    fn channel_body() -> (Sender, impl Body<Data = Bytes, Error = BoxError> + Unpin) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let stream = Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        (tx, StreamBody::new(stream))
    }

    fn counting() -> (Arc<AtomicUsize>, impl FnOnce() + Unpin) {
        let count = Arc::new(AtomicUsize::new(0));
        let inner = count.clone();
        (count, move || {
            inner.fetch_add(1, Ordering::Relaxed);
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_timeout_fails_the_body_once() {
        let (tx, inner) = channel_body();
        let (stalls, on_stall) = counting();
        let mut body = BodyReadTimeout::new(inner, Duration::from_secs(5), on_stall);
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        // Nothing more: with time paused the clock jumps to the deadline.
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.downcast_ref::<BodyReadTimeoutError>().is_some());
        assert!(body.frame().await.is_none(), "ended after the error");
        assert_eq!(stalls.load(Ordering::Relaxed), 1);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_shorter_than_the_timeout_add_up_to_more_without_failing() {
        let (tx, inner) = channel_body();
        let (stalls, on_stall) = counting();
        let body = BodyReadTimeout::new(inner, Duration::from_secs(5), on_stall);
        let sender = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
        });
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"xxxx", "16 s in all, no pause over 5 s");
        assert_eq!(stalls.load(Ordering::Relaxed), 0);
        sender.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_nobody_reads_never_times_out() {
        let (_tx, inner) = channel_body();
        let (stalls, on_stall) = counting();
        let body = BodyReadTimeout::new(inner, Duration::from_secs(1), on_stall);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(stalls.load(Ordering::Relaxed), 0);
        drop(body);
    }
}
