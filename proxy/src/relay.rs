//! Both directions of a session spliced, with no buffer held between messages.
//!
//! The relay follows the PostgreSQL messages as they pass (each one's type byte and
//! length, never its body), to see a session end cleanly: when the client's last message
//! is a Terminate, every query it sent has been answered, and it closes its end, the
//! backend owes it nothing and will only close too, so both ends are closed at once.
//! Waiting for the backend's close, as a byte relay must, costs a half-close, a wake-up
//! and a read per session (tests/bench/proxy.sh, mode connect). Any other end passes on
//! as a half-close, and a stream the relay cannot follow is relayed as bytes only.
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

/// Relays `client` to `backend` and back until both directions have ended, or until the
/// client has ended the session cleanly (see the module's documentation).
///
/// When one side ends its stream, the other side's write half is shut down (a half-close
/// passes through). When the second direction ends, the first has already closed its
/// end, so nothing is shut down: dropping the streams closes them, and a shutdown would
/// only cost a system call.
///
/// `follow`: whether the message counts start at zero, true for a session just past its
/// ReadyForQuery with nothing sent by the client since; false relays bytes only.
pub async fn relay<A, B>(client: &mut A, backend: &mut B, follow: bool) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut to_backend = Direction::default();
    let mut to_client = Direction::default();
    let mut session = Follow { lost: !follow, ..Follow::default() };
    std::future::poll_fn(|cx| {
        let forward = to_backend.poll(cx, client, backend, to_client.done, (&mut session, Side::Client))?;
        if forward.is_ready() && !to_backend.shut_down && to_client.pending.is_empty() && session.ended_cleanly() {
            // Everything the client sent, its Terminate last, is written and flushed.
            return Poll::Ready(Ok(()));
        }
        let backward = to_client.poll(cx, backend, client, to_backend.done, (&mut session, Side::Backend))?;
        if let Poll::Ready(()) = backward {
            session.lost = true;
        }
        if forward.is_ready() && backward.is_ready() { Poll::Ready(Ok(())) } else { Poll::Pending }
    })
    .await
}

/// The side a direction reads from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Backend,
}

/// Where a session stands, from the messages seen pass each way.
#[derive(Default)]
struct Follow {
    client: Framing,
    backend: Framing,
    /// Query, Sync and FunctionCall messages from the client (each answered by one
    /// ReadyForQuery) less the ReadyForQuery messages from the backend.
    owed: i64,
    /// Not following (told so, a framing that made no sense, an owed count below zero, or
    /// the backend ended first): relay bytes only.
    lost: bool,
}

impl Follow {
    fn client_sent(&mut self, data: &[u8]) {
        let owed = &mut self.owed;
        self.lost |= !self.client.pass(data, |tag| {
            if matches!(tag, b'Q' | b'S' | b'F') {
                *owed += 1;
            }
        });
    }

    fn backend_sent(&mut self, data: &[u8]) {
        let owed = &mut self.owed;
        self.lost |= !self.backend.pass(data, |tag| {
            if tag == b'Z' {
                *owed -= 1;
            }
        });
        self.lost |= self.owed < 0;
    }

    /// The client's last message is a Terminate, whole, nothing is owed to it, and the
    /// backend is between messages.
    fn ended_cleanly(&self) -> bool {
        !self.lost && self.owed == 0 && self.client.last_was(b'X') && self.backend.between()
    }
}

/// The framing of one direction: a type byte and a four-byte length that counts itself.
#[derive(Default)]
struct Framing {
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current message not yet passed.
    body: usize,
    /// Type of the last message whose header passed.
    last: Option<u8>,
}

impl Framing {
    /// Passes `data`, calling `on_message` with each message's type as its header
    /// completes; false when a length makes no sense (the stream is not followed further).
    fn pass(&mut self, mut data: &[u8], mut on_message: impl FnMut(u8)) -> bool {
        while !data.is_empty() {
            if self.body > 0 {
                let n = self.body.min(data.len());
                self.body -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.have = 0;
                let len = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as usize;
                let Some(body) = len.checked_sub(4) else { return false };
                self.body = body;
                self.last = Some(self.header[0]);
                on_message(self.header[0]);
            }
        }
        true
    }

    fn between(&self) -> bool {
        self.have == 0 && self.body == 0
    }

    fn last_was(&self, tag: u8) -> bool {
        self.between() && self.last == Some(tag)
    }
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
    /// The writer's half was shut down (the end passed on as a half-close).
    shut_down: bool,
}

impl Direction {
    /// `follow`: the session, and which side this direction reads.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        other_done: bool,
        (session, side): (&mut Follow, Side),
    ) -> Poll<io::Result<()>>
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
                // A clean end needs no half-close: the relay ends here (see `relay`).
                let clean = side == Side::Client && session.ended_cleanly();
                if !other_done && !clean {
                    ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                    self.shut_down = true;
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
            match side {
                _ if session.lost => {}
                Side::Client => session.client_sent(data),
                Side::Backend => session.backend_sent(data),
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
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_both_ways_with_backpressure_and_passes_the_end_on() {
        // Pipes of 64 bytes: 100 KiB forces the writer to fill and the relay to hold
        // bytes back many times.
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut server) = tokio::io::duplex(64);
        // Bytes, not PostgreSQL messages: relayed without following them.
        let relay = tokio::spawn(async move { relay(&mut a, &mut b, false).await });
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

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn answer() -> Vec<u8> {
        let mut answer = message(b'C', b"SELECT 1\0");
        answer.extend(message(b'Z', b"I"));
        answer
    }

    #[tokio::test]
    async fn a_terminate_with_nothing_owed_ends_the_session_without_waiting_for_the_backend() {
        // Pipes of 2 bytes split every header across reads; 64 KiB pipes split nothing.
        for pipe in [2, 64 * 1024] {
            let (mut client, mut a) = tokio::io::duplex(pipe);
            let (mut b, mut server) = tokio::io::duplex(pipe);
            let relay = tokio::spawn(async move { relay(&mut a, &mut b, true).await });
            let query = message(b'Q', b"select 1\0");
            let client_side = async {
                client.write_all(&query).await.unwrap();
                let mut got = vec![0u8; answer().len()];
                client.read_exact(&mut got).await.unwrap();
                assert_eq!(got, answer());
                client.write_all(&message(b'X', b"")).await.unwrap();
                drop(client);
            };
            // The backend never closes its end: everything it reads after the query comes
            // before the relay's own close.
            let server_side = async {
                let mut got = vec![0u8; query.len()];
                server.read_exact(&mut got).await.unwrap();
                assert_eq!(got, query);
                server.write_all(&answer()).await.unwrap();
                let mut rest = Vec::new();
                server.read_to_end(&mut rest).await.unwrap();
                rest
            };
            let ((), rest) =
                tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(client_side, server_side) }).await.expect("no deadlock");
            assert_eq!(rest, message(b'X', b""), "pipe {pipe}: the Terminate reached the backend, then the end");
            // The backend's end is still open here: a relay that waits for it never ends.
            tokio::time::timeout(Duration::from_secs(5), relay)
                .await
                .expect("the relay ended without waiting for the backend")
                .unwrap()
                .unwrap();
            drop(server);
        }
    }

    #[tokio::test]
    async fn a_terminate_behind_an_unanswered_query_passes_on_as_a_half_close() {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut server) = tokio::io::duplex(64);
        let relay = tokio::spawn(async move { relay(&mut a, &mut b, true).await });
        let (first, second) = (message(b'Q', b"select 1\0"), message(b'Q', b"select 2\0"));
        let client_side = async {
            client.write_all(&first).await.unwrap();
            let mut got = vec![0u8; answer().len()];
            client.read_exact(&mut got).await.unwrap();
            // A second query, then Terminate and a half-close before its answer: the
            // answer is still owed and must reach the client.
            let mut bytes = second.clone();
            bytes.extend(message(b'X', b""));
            client.write_all(&bytes).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        };
        let server_side = async {
            let mut got = vec![0u8; first.len()];
            server.read_exact(&mut got).await.unwrap();
            server.write_all(&answer()).await.unwrap();
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            let mut expected = second.clone();
            expected.extend(message(b'X', b""));
            assert_eq!(rest, expected, "the second query, the Terminate, then the half-close");
            server.write_all(&answer()).await.unwrap();
            drop(server);
        };
        let (back, ()) =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(client_side, server_side) }).await.expect("no deadlock");
        assert_eq!(back, answer(), "the owed answer reached the client");
        relay.await.unwrap().unwrap();
    }

    #[test]
    fn a_length_under_four_stops_the_following() {
        let mut framing = Framing::default();
        assert!(!framing.pass(&[b'Q', 0, 0, 0, 3], |_| {}));
        let mut session = Follow::default();
        session.client_sent(&[b'X', 0, 0, 0, 2]);
        assert!(session.lost && !session.ended_cleanly());
    }
}
