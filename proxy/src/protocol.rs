//! The parts of the PostgreSQL wire protocol the proxy reads and writes. Pure functions
//! over byte slices: the first packet of a connection, startup messages, the messages of
//! the authentication phase, and the few messages the proxy writes itself.

use std::fmt;

/// Largest first packet accepted (an SSLRequest, CancelRequest or StartupMessage). Real
/// startup messages are a few hundred bytes; PostgreSQL itself allows 10,000.
pub const MAX_STARTUP_LEN: usize = 10_000;

/// Largest message accepted from either side during authentication. SASL exchanges and
/// parameter statuses are small; the limit bounds memory per handshaking connection.
pub const MAX_AUTH_MESSAGE_LEN: usize = 64 * 1024;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
const PROTOCOL_3_0: u32 = 196_608;

/// What a connection opens with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPacket {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption (answered with 'N').
    GssEncRequest,
    /// The client cancels a running query of another session.
    Cancel(CancelKey),
    /// Protocol 3.0 startup parameters, in order.
    Startup(Vec<(String, String)>),
}

/// A session's cancel key: process id and secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKey {
    /// Process id (as the client sees it).
    pub pid: u32,
    /// Secret key.
    pub secret: u32,
}

/// A protocol violation in what a peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A length field out of range.
    BadLength(usize),
    /// A request code the proxy does not speak.
    UnsupportedCode(u32),
    /// A startup message whose parameters are not NUL-terminated UTF-8 pairs.
    MalformedStartup(&'static str),
    /// A message type not expected at this point.
    Unexpected(u8),
    /// Bytes that came before the proxy answered an SSLRequest or GSSENCRequest: a client
    /// must wait for the answer, and bytes sent in the clear ahead of a TLS handshake could
    /// be an injection (PostgreSQL refuses them too, CVE-2021-23214).
    DataBeforeAnswer,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadLength(n) => write!(f, "invalid packet length {n}"),
            ProtocolError::UnsupportedCode(c) => write!(f, "unsupported protocol request {c}"),
            ProtocolError::MalformedStartup(why) => write!(f, "malformed startup message: {why}"),
            ProtocolError::Unexpected(t) => write!(f, "unexpected message type {:?}", char::from(*t)),
            ProtocolError::DataBeforeAnswer => f.write_str("data sent after an SSLRequest or GSSENCRequest before its answer"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Checks the length word of a first packet (it counts itself) and returns the number of
/// bytes that follow it.
pub fn first_packet_body_len(header: [u8; 4]) -> Result<usize, ProtocolError> {
    let len = u32::from_be_bytes(header) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(ProtocolError::BadLength(len));
    }
    Ok(len - 4)
}

/// Parses the body of a first packet (everything after the length word).
pub fn parse_first_packet(body: &[u8]) -> Result<FirstPacket, ProtocolError> {
    if body.len() < 4 || body.len() + 4 > MAX_STARTUP_LEN {
        return Err(ProtocolError::BadLength(body.len() + 4));
    }
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(FirstPacket::SslRequest),
        GSSENC_REQUEST if rest.is_empty() => Ok(FirstPacket::GssEncRequest),
        CANCEL_REQUEST if rest.len() == 8 => Ok(FirstPacket::Cancel(CancelKey {
            pid: u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
            secret: u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
        })),
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => Err(ProtocolError::BadLength(body.len() + 4)),
        PROTOCOL_3_0 => parse_startup_params(rest).map(FirstPacket::Startup),
        other => Err(ProtocolError::UnsupportedCode(other)),
    }
}

fn parse_startup_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        let (key, after) = cstr(rest)?;
        if key.is_empty() {
            if !after.is_empty() {
                return Err(ProtocolError::MalformedStartup("data after the terminator"));
            }
            break;
        }
        let (value, after) = cstr(after)?;
        if params.iter().any(|(k, _): &(String, String)| k == key) {
            return Err(ProtocolError::MalformedStartup("a parameter appears twice"));
        }
        params.push((key.to_owned(), value.to_owned()));
        rest = after;
    }
    if !params.iter().any(|(k, _)| k == "user") {
        return Err(ProtocolError::MalformedStartup("no user"));
    }
    Ok(params)
}

fn cstr(bytes: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let end = bytes.iter().position(|&b| b == 0).ok_or(ProtocolError::MalformedStartup("missing NUL terminator"))?;
    let s = std::str::from_utf8(&bytes[..end]).map_err(|_| ProtocolError::MalformedStartup("not UTF-8"))?;
    Ok((s, &bytes[end + 1..]))
}

/// Encodes a protocol 3.0 StartupMessage.
pub fn startup_message(params: &[(String, String)]) -> Vec<u8> {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    with_length(None, &body)
}

/// An SSLRequest, as the proxy sends it to a backend it speaks TLS to.
pub fn ssl_request() -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..4].copy_from_slice(&8u32.to_be_bytes());
    m[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    m
}

/// Encodes a CancelRequest.
pub fn cancel_request(key: CancelKey) -> Vec<u8> {
    let mut body = CANCEL_REQUEST.to_be_bytes().to_vec();
    body.extend_from_slice(&key.pid.to_be_bytes());
    body.extend_from_slice(&key.secret.to_be_bytes());
    with_length(None, &body)
}

/// Encodes a FATAL ErrorResponse with a SQLSTATE code and a message meant for the client.
pub fn error_response(sqlstate: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', sqlstate), (b'M', message)] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    with_length(Some(b'E'), &body)
}

/// Encodes a BackendKeyData message.
pub fn backend_key_data(key: CancelKey) -> Vec<u8> {
    let mut body = key.pid.to_be_bytes().to_vec();
    body.extend_from_slice(&key.secret.to_be_bytes());
    with_length(Some(b'K'), &body)
}

fn with_length(tag: Option<u8>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend(tag);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The header of a regular message: its type and the length of its body.
pub fn message_header(header: [u8; 5], limit: usize) -> Result<(u8, usize), ProtocolError> {
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len < 4 || len - 4 > limit {
        return Err(ProtocolError::BadLength(len));
    }
    Ok((header[0], len - 4))
}

/// What a backend message during authentication asks of the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStep {
    /// Forward it; the client answers with one message.
    ClientResponds,
    /// Forward it; nothing to answer.
    Forward,
    /// The backend's cancel key: keep it, send the client the proxy's own.
    BackendKey(CancelKey),
    /// Forward it; the session is ready (authentication is over).
    Ready,
    /// Forward it; the backend refused and will close.
    Failed,
}

/// Classifies a backend message of the authentication phase.
pub fn auth_step(tag: u8, body: &[u8]) -> Result<AuthStep, ProtocolError> {
    match tag {
        b'R' => {
            let code =
                body.get(..4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).ok_or(ProtocolError::BadLength(body.len() + 4))?;
            match code {
                // Ok, SASLFinal: informational.
                0 | 12 => Ok(AuthStep::Forward),
                // Cleartext, MD5, GSS, GSS continue, SSPI, SASL, SASL continue: the client answers.
                3 | 5 | 7 | 8 | 9 | 10 | 11 => Ok(AuthStep::ClientResponds),
                _ => Err(ProtocolError::Unexpected(tag)),
            }
        }
        b'K' if body.len() == 8 => Ok(AuthStep::BackendKey(CancelKey {
            pid: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            secret: u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        })),
        b'S' | b'N' | b'v' => Ok(AuthStep::Forward),
        b'Z' => Ok(AuthStep::Ready),
        b'E' => Ok(AuthStep::Failed),
        other => Err(ProtocolError::Unexpected(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(packet: &[u8]) -> &[u8] {
        &packet[4..]
    }

    #[test]
    fn startup_round_trips() {
        let params = vec![("user".to_owned(), "alice".to_owned()), ("database".to_owned(), "dev".to_owned())];
        let packet = startup_message(&params);
        assert_eq!(first_packet_body_len(packet[..4].try_into().unwrap()).unwrap(), packet.len() - 4);
        assert_eq!(parse_first_packet(body(&packet)).unwrap(), FirstPacket::Startup(params));
    }

    #[test]
    fn requests_and_cancel() {
        assert_eq!(parse_first_packet(&SSL_REQUEST.to_be_bytes()).unwrap(), FirstPacket::SslRequest);
        assert_eq!(parse_first_packet(&GSSENC_REQUEST.to_be_bytes()).unwrap(), FirstPacket::GssEncRequest);
        let key = CancelKey { pid: 7, secret: 0xdead_beef };
        assert_eq!(parse_first_packet(body(&cancel_request(key))).unwrap(), FirstPacket::Cancel(key));
    }

    #[test]
    fn hostile_first_packets_are_refused() {
        let cases: [(&[u8], &str); 7] = [
            (&[0, 0, 0, 1], "too short"),
            (&[0, 1, 0, 0, 1, 2], "unknown code"),
            (&[0, 3, 0, 0, b'u', b's', b'e', b'r', 0], "no terminator"),
            (&[0, 3, 0, 0, b'u', b's', b'e', b'r', 0, b'a', 0, 0, b'x'], "data after terminator"),
            (&[0, 3, 0, 0, b'd', 0, b'x', 0, 0], "no user"),
            (&[0, 3, 0, 0, b'u', b's', b'e', b'r', 0, 0xff, 0, 0], "not UTF-8"),
            (&[4, 210, 22, 47, 1], "ssl request with payload"),
        ];
        for (bytes, why) in cases {
            assert!(parse_first_packet(bytes).is_err(), "{why}");
        }
        assert_eq!(first_packet_body_len(10_001u32.to_be_bytes()), Err(ProtocolError::BadLength(10_001)));
        assert_eq!(first_packet_body_len(7u32.to_be_bytes()), Err(ProtocolError::BadLength(7)));
    }

    #[test]
    fn error_response_layout() {
        let e = error_response("28000", "no");
        assert_eq!(e[0], b'E');
        assert_eq!(u32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize, e.len() - 1);
        assert!(e.windows(6).any(|w| w == b"C28000"));
    }
}
