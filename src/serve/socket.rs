//! The client's socket as a connection reads it. [`Watched`] tells the
//! connection's `watchdog::Activity` when bytes arrive, reads the first
//! bytes itself to tell an HTTP/2 preface from an HTTP/1 request (and
//! hands them out again first), and on the way out hands the socket back,
//! so a slow head can still be told 408.
//!
//! Why it reads the first bytes rather than leave that to hyper-util's
//! auto builder: that builder puts a rewind buffer and a protocol wrapper
//! between hyper and the socket for the connection's whole life, a cost
//! on every read and every poll of every request (about 400 instructions
//! a cache hit in the profile, see the README's Performance); here one
//! comparison per read is left once the first bytes are handed out.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::serve::watchdog::Activity;

/// The first bytes an HTTP/2 client sends (prior knowledge, no TLS).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection's first bytes say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Anything but the HTTP/2 preface (or nothing: hyper sees the end).
    Http1,
    /// The HTTP/2 preface.
    Http2,
}

/// The socket, telling the watchdog when bytes arrive.
pub(crate) struct Watched<IO> {
    /// Always `Some` until dropped (then handed back).
    io: Option<IO>,
    activity: Arc<Activity>,
    /// The first bytes, read by [`Watched::poll_sniff`]: handed out before
    /// anything else is read.
    first: [u8; H2_PREFACE.len()],
    /// How many of `first` were read, and how many handed out since.
    first_read: u8,
    first_given: u8,
    handback: Option<oneshot::Sender<IO>>,
}

impl<IO: Unpin> Watched<IO> {
    /// `io`, reporting to `activity`; when dropped, the socket goes to
    /// `handback` (if it still waits).
    pub(crate) fn new(
        io: IO,
        activity: Arc<Activity>,
        handback: oneshot::Sender<IO>,
    ) -> Watched<IO> {
        Watched {
            io: Some(io),
            activity,
            first: [0; H2_PREFACE.len()],
            first_read: 0,
            first_given: 0,
            handback: Some(handback),
        }
    }

    fn io(&mut self) -> Pin<&mut IO> {
        Pin::new(self.io.as_mut().expect("the socket is only taken on drop"))
    }
}

impl<IO: AsyncRead + Unpin> Watched<IO> {
    /// Reads the first bytes until they tell the protocol: as soon as one
    /// differs from the HTTP/2 preface (two tell "PRI" from any HTTP/1
    /// method), when the whole preface came, or at the end of the stream
    /// (a stall part way through the preface meets the header timeout
    /// every new connection has, without a 408: it may be HTTP/2).
    /// What it read is read again after it.
    pub(crate) fn poll_sniff(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Protocol>> {
        loop {
            let had = usize::from(self.first_read);
            let io = Pin::new(self.io.as_mut().expect("the socket is only taken on drop"));
            let mut buf = ReadBuf::new(&mut self.first[had..]);
            ready!(io.poll_read(cx, &mut buf))?;
            let got = buf.filled().len();
            if got == 0 {
                return Poll::Ready(Ok(Protocol::Http1));
            }
            let have = had + got;
            // At most the preface's 24 bytes: fits.
            self.first_read = have as u8;
            // The watchdog hears of the bytes once they tell the protocol:
            // an HTTP/1 head has begun (a 408 has someone to read it); an
            // HTTP/2 preface is no head (the first request is still owed
            // within the header timeout from the connection's start).
            if self.first[..have] != H2_PREFACE[..have] {
                self.activity.read();
                return Poll::Ready(Ok(Protocol::Http1));
            }
            if have == H2_PREFACE.len() {
                self.activity.saw_h2_preface();
                self.activity.read();
                return Poll::Ready(Ok(Protocol::Http2));
            }
        }
    }
}

impl<IO> Drop for Watched<IO> {
    fn drop(&mut self) {
        if let (Some(io), Some(handback)) = (self.io.take(), self.handback.take()) {
            // Nobody waiting means nobody needs it: it closes here.
            let _ = handback.send(io);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.first_given < this.first_read {
            let rest = &this.first[usize::from(this.first_given)..usize::from(this.first_read)];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.first_given += n as u8;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(this.io().poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.activity.read();
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;

    /// Sends `chunks` one write at a time, sniffs, then reads everything
    /// back through the wrapper.
    async fn sniff(chunks: &[&[u8]]) -> Protocol {
        let (mut client, server) = tokio::io::duplex(256);
        let (handback, _handed_back) = oneshot::channel();
        let mut watched = Watched::new(server, Activity::new(false, None), handback);
        let sent: Vec<u8> = chunks.concat();
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for chunk in chunks {
                client.write_all(&chunk).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            // Dropped: the end of the stream.
        });
        let protocol = poll_fn(|cx| watched.poll_sniff(cx)).await.unwrap();
        writer.await.unwrap();
        let mut got = Vec::new();
        let mut scratch = [0u8; 7];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            poll_fn(|cx| Pin::new(&mut watched).poll_read(cx, &mut buf))
                .await
                .unwrap();
            if buf.filled().is_empty() {
                break;
            }
            got.extend_from_slice(buf.filled());
        }
        assert_eq!(got, sent, "every byte is read, the sniffed ones first");
        protocol
    }

    #[tokio::test]
    async fn the_first_bytes_tell_the_protocol_and_are_read_again() {
        let request: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n";
        assert_eq!(sniff(&[request]).await, Protocol::Http1);
        // "PR" could begin the preface; "PRO" cannot.
        assert_eq!(
            sniff(&[b"PR", b"OPFIND / HTTP/1.1\r\n\r\n"]).await,
            Protocol::Http1
        );
        assert_eq!(
            sniff(&[b"P", b"RI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\nframes"]).await,
            Protocol::Http2
        );
        assert_eq!(sniff(&[H2_PREFACE]).await, Protocol::Http2);
        // Nothing at all: hyper's HTTP/1 sees the end.
        assert_eq!(sniff(&[]).await, Protocol::Http1);
        // The preface cut short.
        assert_eq!(sniff(&[b"PRI * HTTP/2.0"]).await, Protocol::Http1);
    }
}
