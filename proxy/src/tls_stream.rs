//! The client's TLS, ended here, over rustls' unbuffered API: the proxy owns the buffers,
//! and holds them only while bytes are in flight.
//!
//! rustls' buffered connection keeps a 4 KiB receive buffer from the first read to the
//! end of the connection, idle or not; with 10,000 idle clients that was most of the
//! proxy's memory. Here a read goes through a buffer on the stack and only the bytes of
//! an unfinished record are kept on the heap; encrypted output is kept until the socket
//! takes it. An idle connection holds no buffer at all.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest TLS record on the wire (16 KiB of payload, the 5-byte header and the most
/// expansion a cipher may add): one read of this size can always complete a record.
const READ_CHUNK: usize = 16 * 1024 + 2048 + 5;

/// Most plaintext encrypted per write: one full record.
const WRITE_CHUNK: usize = 16 * 1024;

/// A server-side TLS stream over `S`.
pub struct TlsServerStream<S> {
    io: S,
    conn: UnbufferedServerConnection,
    /// Received bytes not yet processed: the start of a record that has not fully
    /// arrived. Unallocated while empty.
    incoming: Vec<u8>,
    /// Encrypted bytes for the peer, `sent` of them already written.
    outgoing: Vec<u8>,
    sent: usize,
    /// Decrypted bytes the reader has not taken yet, from `taken` on: a record larger
    /// than the reader's buffer.
    plaintext: Vec<u8>,
    taken: usize,
    /// The peer sent close_notify, or closed TCP between records.
    peer_closed: bool,
    /// close_notify is queued.
    close_sent: bool,
    /// The SNI host name the client sent.
    sni: Option<String>,
}

/// What processing the received bytes came to.
enum Next {
    /// The handshake needs more bytes from the peer.
    NeedData,
    /// Application data may flow; anything received has been decrypted.
    Traffic,
    /// The connection is closed both ways.
    Closed,
}

/// What to do when application data may be written.
enum Write<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Most a record adds to its plaintext: a 5-byte header, TLS 1.3's content type byte and
/// a 16-byte tag, or TLS 1.2 AES-GCM's 8-byte explicit nonce and tag; with room to spare.
const RECORD_OVERHEAD: usize = 64;

/// Appends what `fill` writes to `out`, given `room` bytes first and then as many as
/// `fill` says it needs.
fn append<E>(
    out: &mut Vec<u8>,
    mut room: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needed: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = out.len();
    loop {
        out.resize(start + room, 0);
        match fill(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(e) => match needed(&e) {
                Some(required) if required > room => room = required,
                _ => {
                    out.truncate(start);
                    return Err(e);
                }
            },
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsServerStream<S> {
    /// Runs the server side of the handshake on `io`.
    pub async fn accept(io: S, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = Self {
            io,
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            plaintext: Vec::new(),
            taken: 0,
            peer_closed: false,
            close_sent: false,
            sni: None,
        };
        std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    /// The SNI host name the client sent, if any (once: the stream keeps no copy).
    pub fn take_server_name(&mut self) -> Option<String> {
        self.sni.take()
    }

    /// The stream under the TLS.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send(cx))?;
            // The resolver records the name while `process` runs (see `crate::tls`);
            // clear what an earlier connection on this thread may have left.
            let _ = crate::tls::take_sni();
            let next = self.process(None, Write::Nothing)?;
            if let Some(name) = crate::tls::take_sni() {
                self.sni = Some(name);
            }
            if !self.outgoing.is_empty() {
                continue;
            }
            match next {
                Next::Traffic if !self.conn.is_handshaking() => return Poll::Ready(Ok(())),
                Next::Closed => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Next::Traffic | Next::NeedData => {
                    if ready!(self.poll_receive(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }

    /// Processes the received bytes: decrypted data goes to `out` and what does not fit
    /// to `self.plaintext`; handshake records are queued in `self.outgoing`; once
    /// application data may be written, `write` is encrypted into `self.outgoing`.
    fn process(&mut self, mut out: Option<&mut ReadBuf<'_>>, mut write: Write<'_>) -> io::Result<Next> {
        loop {
            let status = self.conn.process_tls_records(&mut self.incoming);
            let discard = status.discard;
            let next = match status.state.map_err(tls_error)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let mut payload = record.map_err(tls_error)?.payload;
                        if let Some(out) = out.as_deref_mut() {
                            let n = payload.len().min(out.remaining());
                            out.put_slice(&payload[..n]);
                            payload = &payload[n..];
                        }
                        self.plaintext.extend_from_slice(payload);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    append(
                        &mut self.outgoing,
                        RECORD_OVERHEAD,
                        |buf| encode.encode(buf),
                        |e| match e {
                            EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => Some(*required_size),
                            _ => None,
                        },
                    )
                    .map_err(|e| io::Error::other(format!("encoding a TLS record: {e}")))?;
                    None
                }
                // Queued records are sent from `outgoing` before anything written later.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Next::NeedData),
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    None
                }
                ConnectionState::Closed => Some(Next::Closed),
                ConnectionState::WriteTraffic(mut traffic) => {
                    let sized = |e: &EncryptError| match e {
                        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => Some(*required_size),
                        _ => None,
                    };
                    let encrypted = match std::mem::replace(&mut write, Write::Nothing) {
                        Write::Nothing => Ok(()),
                        // Room for the whole record at once: one encryption, no retry.
                        Write::Data(data) => {
                            append(&mut self.outgoing, data.len() + RECORD_OVERHEAD, |buf| traffic.encrypt(data, buf), sized)
                        }
                        Write::CloseNotify => append(&mut self.outgoing, RECORD_OVERHEAD, |buf| traffic.queue_close_notify(buf), sized),
                    };
                    encrypted.map_err(|e| io::Error::other(format!("encrypting a TLS record: {e}")))?;
                    Some(Next::Traffic)
                }
                // Early data is not enabled, so rustls never yields it.
                _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected TLS state")),
            };
            self.incoming.drain(..discard);
            if let Some(next) = next {
                if self.incoming.is_empty() {
                    // Nothing half-received: give the memory back while the peer is quiet.
                    self.incoming = Vec::new();
                }
                return Ok(next);
            }
        }
    }

    /// Reads what the socket has into `incoming`, through a buffer on the stack so that
    /// nothing is allocated until bytes arrive. Ready(0) at end of stream.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        self.incoming.extend_from_slice(buf.filled());
        Poll::Ready(Ok(buf.filled().len()))
    }

    /// Writes `outgoing` to the socket; releases it once all is sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsServerStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken < this.plaintext.len() {
                let n = (this.plaintext.len() - this.taken).min(buf.remaining());
                buf.put_slice(&this.plaintext[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let next = this.process(Some(buf), Write::Nothing)?;
            // Handshake records (a key update's answer) go out as they are made; a
            // socket that cannot take them now gets them with the next write or flush.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            if this.taken < this.plaintext.len() {
                continue;
            }
            if matches!(next, Next::Closed) || this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if ready!(this.poll_receive(cx))? == 0 {
                if this.incoming.is_empty() {
                    // TCP closed between records without close_notify: many clients do
                    // that, and nothing is lost, so it is an end of stream.
                    this.peer_closed = true;
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "TCP closed in the middle of a TLS record")));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsServerStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Backpressure: nothing more is taken while earlier records wait for the socket.
        ready!(this.poll_send(cx))?;
        let data = &buf[..buf.len().min(WRITE_CHUNK)];
        match this.process(None, Write::Data(data))? {
            Next::Traffic => {}
            Next::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Next::NeedData => return Poll::Ready(Err(io::Error::other("write before the TLS handshake finished"))),
        }
        // Accepted once encrypted; a socket that cannot take it all now gets the rest on
        // the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            ready!(this.poll_send(cx))?;
            this.close_sent = true;
            // Best effort: a connection already closed needs no close_notify.
            let _ = this.process(None, Write::CloseNotify);
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{CertFiles, SniResolver};
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A CA and a leaf for `sql.test`, made with the openssl CLI.
    fn certificates(dir: &std::path::Path) {
        let made = std::process::Command::new("bash")
            .arg("-c")
            .arg(
                "set -e
                 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=stream-test-ca 2>/dev/null
                 openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr -subj /CN=sql.test 2>/dev/null
                 printf 'subjectAltName=DNS:sql.test\\n' > ext
                 openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out leaf.crt -days 2 -extfile ext 2>/dev/null",
            )
            .current_dir(dir)
            .status()
            .expect("run openssl");
        assert!(made.success());
    }

    #[tokio::test]
    async fn a_megabyte_each_way_through_a_narrow_pipe_then_the_end() {
        let dir = tempfile::tempdir().unwrap();
        certificates(dir.path());
        let resolver = SniResolver::load(vec![CertFiles { cert: dir.path().join("leaf.crt"), key: dir.path().join("leaf.key") }]).unwrap();
        let server_config = crate::tls::server_config(Arc::new(resolver));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from_pem_file(dir.path().join("ca.crt")).unwrap()).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // 1 KiB of pipe: records arrive in pieces, and both sides fill it many times over.
        let (client_io, server_io) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            let mut tls = TlsServerStream::accept(server_io, server_config).await.unwrap();
            assert_eq!(tls.take_server_name().as_deref(), Some("sql.test"));
            let mut got = Vec::new();
            tls.read_to_end(&mut got).await.unwrap();
            // Echoed back reversed, after the client's end: a half-close passes.
            got.reverse();
            tls.write_all(&got).await.unwrap();
            tls.shutdown().await.unwrap();
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let name = rustls::pki_types::ServerName::try_from("sql.test").unwrap();
        let mut tls = connector.connect(name, client_io).await.unwrap();
        let sent: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 253) as u8).collect();
        tls.write_all(&sent).await.unwrap();
        tls.shutdown().await.unwrap();
        let mut back = Vec::new();
        tls.read_to_end(&mut back).await.unwrap();
        back.reverse();
        assert!(back == sent, "{} bytes back of {}", back.len(), sent.len());
        server.await.unwrap();
    }
}
