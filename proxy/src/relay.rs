//! Both directions of a session spliced, with no buffer held between messages.
//!
//! Each direction reads into a buffer on the stack and writes straight from it; only
//! bytes the writer cannot take yet are copied to the heap, and held until it does (and,
//! until then, nothing more is read from that side: backpressure). An idle session holds
//! no buffer, and a new one costs no allocation or zeroing of buffers (tokio's
//! `copy_bidirectional` allocates and zeroes two for the life of every session: 32 KiB
//! here, most of the memory of an idle session).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes read at once from one side: a full TLS record's worth.
const CHUNK: usize = 16 * 1024;

/// Relays `a` to `b` and `b` to `a` until both directions have ended.
///
/// When one side ends its stream, the other side's write half is shut down (a half-close
/// passes through). When the second direction ends, the first has already closed its
/// end, so nothing is shut down: dropping the streams closes them, and a shutdown would
/// only cost a system call.
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    std::future::poll_fn(|cx| {
        let forward = a_to_b.poll(cx, a, b, b_to_a.done)?;
        let backward = b_to_a.poll(cx, b, a, a_to_b.done)?;
        if forward.is_ready() && backward.is_ready() { Poll::Ready(Ok(())) } else { Poll::Pending }
    })
    .await
}

/// One direction's state.
#[derive(Default)]
struct Direction {
    /// Bytes read but not yet taken by the writer, `sent` of them written since.
    pending: Vec<u8>,
    sent: usize,
    /// The writer has bytes it may hold until flushed.
    unflushed: bool,
    /// The reader reached its end.
    eof: bool,
    /// Everything is written and the end passed on.
    done: bool,
}

impl Direction {
    fn poll<R, W>(&mut self, cx: &mut Context<'_>, reader: &mut R, writer: &mut W, other_done: bool) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while self.sent < self.pending.len() {
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, &self.pending[self.sent..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.sent += n;
                self.unflushed = true;
            }
            if !self.pending.is_empty() {
                self.pending = Vec::new();
                self.sent = 0;
            }
            if self.eof {
                if self.unflushed {
                    ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                    self.unflushed = false;
                }
                if !other_done {
                    ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                }
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [MaybeUninit::<u8>::uninit(); CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
                Poll::Ready(result) => result?,
                Poll::Pending => {
                    // Nothing more to read now: push out what was written.
                    if self.unflushed {
                        ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
            let data = buf.filled();
            if data.is_empty() {
                self.eof = true;
                continue;
            }
            let mut written = 0;
            while written < data.len() {
                match Pin::new(&mut *writer).poll_write(cx, &data[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        self.unflushed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // The writer is full: keep the rest, read no more until it is sent.
                        self.pending.extend_from_slice(&data[written..]);
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_both_ways_with_backpressure_and_passes_the_end_on() {
        // Pipes of 64 bytes: 100 KiB forces the writer to fill and the relay to hold
        // bytes back many times.
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut server) = tokio::io::duplex(64);
        let relay = tokio::spawn(async move { relay(&mut a, &mut b).await });
        let sent: Vec<u8> = (0..100 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expected = sent.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, expected, "client to server, then its end");
        server.write_all(b"bye").await.unwrap();
        drop(server);
        assert_eq!(writer.await.unwrap(), b"bye");
        relay.await.unwrap().unwrap();
    }
}
