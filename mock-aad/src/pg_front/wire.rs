//! The few PostgreSQL v3 protocol messages the front reads and writes itself.
//!
//! Everything after authentication is relayed byte for byte, so only the startup phase lives here: the
//! untagged startup packets (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest), tagged messages with a
//! length cap, and ErrorResponse built with the same fields PostgreSQL sends.

use std::collections::BTreeMap;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol version 3.0 in a StartupMessage.
pub const PROTOCOL_V3: i32 = 196_608;
/// Request codes of the untagged startup packets (PostgreSQL's pqcomm.h).
pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// PostgreSQL's own cap on a startup packet (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// Authentication request codes in an 'R' message.
pub const AUTH_OK: i32 = 0;
pub const AUTH_CLEARTEXT_PASSWORD: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed by the peer")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid length {len} in {what}")]
    BadLength { what: &'static str, len: i64 },
    #[error("malformed {0}")]
    Malformed(&'static str),
}

fn closed_or_io(e: std::io::Error) -> WireError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        WireError::Closed
    } else {
        WireError::Io(e)
    }
}

/// An untagged startup-phase packet: its request code and the bytes after the code.
#[derive(Debug)]
pub struct StartupPacket {
    pub code: i32,
    pub body: Vec<u8>,
}

impl StartupPacket {
    /// The packet as it came over the wire (to forward a StartupMessage or CancelRequest unchanged).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.body.len());
        out.extend_from_slice(&((8 + self.body.len()) as i32).to_be_bytes());
        out.extend_from_slice(&self.code.to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// The key/value parameters of a StartupMessage (user, database, application_name, ...), in order.
    pub fn parameters(&self) -> Result<Vec<(String, String)>, WireError> {
        let mut out = Vec::new();
        let mut parts = self.body.split(|b| *b == 0);
        loop {
            let key = parts
                .next()
                .ok_or(WireError::Malformed("startup parameters"))?;
            if key.is_empty() {
                break;
            }
            let value = parts
                .next()
                .ok_or(WireError::Malformed("startup parameters"))?;
            out.push((
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
        Ok(out)
    }
}

pub async fn read_startup_packet<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<StartupPacket, WireError> {
    let len = r.read_i32().await.map_err(closed_or_io)?;
    if !(8..=MAX_STARTUP_PACKET as i32).contains(&len) {
        return Err(WireError::BadLength {
            what: "startup packet",
            len: len.into(),
        });
    }
    let code = r.read_i32().await.map_err(closed_or_io)?;
    let mut body = vec![0; len as usize - 8];
    r.read_exact(&mut body).await.map_err(closed_or_io)?;
    Ok(StartupPacket { code, body })
}

/// A StartupMessage (protocol 3.0) with these parameters.
pub fn startup_message(params: &[(String, String)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    StartupPacket {
        code: PROTOCOL_V3,
        body,
    }
    .to_bytes()
}

/// A tagged message: type byte and body (without the length word).
#[derive(Debug)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    pub fn to_bytes(&self) -> Vec<u8> {
        tagged(self.tag, &self.body)
    }

    /// The int32 at the start of the body ('R' auth code, ...).
    pub fn leading_i32(&self) -> Option<i32> {
        self.body
            .get(..4)
            .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
    }
}

/// Read one tagged message whose body is at most `max_body` bytes; a longer one is refused unread.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max_body: usize,
) -> Result<Message, WireError> {
    let tag = r.read_u8().await.map_err(closed_or_io)?;
    let len = r.read_i32().await.map_err(closed_or_io)?;
    if len < 4 || (len as usize - 4) > max_body {
        return Err(WireError::BadLength {
            what: "message",
            len: len.into(),
        });
    }
    let mut body = vec![0; len as usize - 4];
    r.read_exact(&mut body).await.map_err(closed_or_io)?;
    Ok(Message { tag, body })
}

pub fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(tag);
    out.extend_from_slice(&((4 + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// AuthenticationRequest ('R') with this code.
pub fn auth_request(code: i32) -> Vec<u8> {
    tagged(b'R', &code.to_be_bytes())
}

/// A PasswordMessage ('p').
pub fn password_message(password: &str) -> Vec<u8> {
    let mut body = password.as_bytes().to_vec();
    body.push(0);
    tagged(b'p', &body)
}

/// The fields of an ErrorResponse, in the order PostgreSQL writes them (S, V, C, M, D, H, F, L, R).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub severity: &'static str,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// Source file, line and function PostgreSQL reports (F, L, R): kept so clients that print them match.
    pub file: &'static str,
    pub line: &'static str,
    pub routine: &'static str,
}

impl ServerError {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut field = |t: u8, v: &str| {
            body.push(t);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        };
        field(b'S', self.severity);
        field(b'V', self.severity);
        field(b'C', self.code);
        field(b'M', &self.message);
        if let Some(d) = &self.detail {
            field(b'D', d);
        }
        if let Some(h) = &self.hint {
            field(b'H', h);
        }
        if !self.file.is_empty() {
            field(b'F', self.file);
            field(b'L', self.line);
            field(b'R', self.routine);
        }
        body.push(0);
        tagged(b'E', &body)
    }
}

/// Parse the fields of an ErrorResponse / NoticeResponse body (tests and diagnostics).
pub fn parse_error_fields(body: &[u8]) -> BTreeMap<char, String> {
    body.split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| (f[0] as char, String::from_utf8_lossy(&f[1..]).into_owned()))
        .collect()
}

pub async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), WireError> {
    w.write_all(bytes).await?;
    w.flush().await?;
    Ok(())
}

// The exact errors PostgreSQL 15's src/backend/libpq/auth.c raises, fields as a PostgreSQL 15 server sends
// them (checked against one with pg_hba `password`/`hostssl` and pg8000, which prints every field).

/// `recv_password_packet`: the client answered the cleartext-password request with an empty password.
pub fn empty_password_error() -> ServerError {
    ServerError {
        severity: "FATAL",
        code: "28P01",
        message: "empty password returned by client".into(),
        detail: None,
        hint: None,
        file: "auth.c",
        line: "757",
        routine: "recv_password_packet",
    }
}

/// `auth_failed` for the password method: what Azure answers for a bad Entra token, too.
pub fn password_failed_error(user: &str) -> ServerError {
    ServerError {
        severity: "FATAL",
        code: "28P01",
        message: format!("password authentication failed for user \"{user}\""),
        detail: None,
        hint: None,
        file: "auth.c",
        line: "334",
        routine: "auth_failed",
    }
}

/// `ClientAuthentication`: no pg_hba line matched — what Azure Database for PostgreSQL flexible server says to
/// a client without TLS while `require_secure_transport` is on.
pub fn no_hba_entry_error(host: &str, user: &str, database: &str) -> ServerError {
    ServerError {
        severity: "FATAL",
        code: "28000",
        message: format!(
            "no pg_hba.conf entry for host \"{host}\", user \"{user}\", database \"{database}\", no encryption"
        ),
        detail: None,
        hint: None,
        file: "auth.c",
        line: "544",
        routine: "ClientAuthentication",
    }
}

/// A protocol violation in the startup phase (08P01).
pub fn protocol_violation(message: String) -> ServerError {
    ServerError {
        severity: "FATAL",
        code: "08P01",
        message,
        detail: None,
        hint: None,
        file: "",
        line: "",
        routine: "",
    }
}

/// The front could not open the session upstream after a valid token (08006: connection failure).
pub fn upstream_failure(message: String) -> ServerError {
    ServerError {
        severity: "FATAL",
        code: "08006",
        message,
        detail: None,
        hint: Some(
            "This error comes from the keda-harness Entra front, not from PostgreSQL.".into(),
        ),
        file: "",
        line: "",
        routine: "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_round_trips_with_postgres_field_order() {
        let bytes = empty_password_error().to_bytes();
        assert_eq!(bytes[0], b'E');
        let len = i32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        assert_eq!(len + 1, bytes.len());
        let fields = parse_error_fields(&bytes[5..]);
        assert_eq!(fields[&'S'], "FATAL");
        assert_eq!(fields[&'C'], "28P01");
        assert_eq!(fields[&'M'], "empty password returned by client");
        let order: Vec<u8> = bytes[5..]
            .split(|b| *b == 0)
            .filter(|f| !f.is_empty())
            .map(|f| f[0])
            .collect();
        assert_eq!(order, b"SVCMFLR");
    }

    #[test]
    fn startup_parameters_parse() {
        let msg = startup_message(&[
            ("user".into(), "movies-mi".into()),
            ("database".into(), "movies".into()),
        ]);
        let pkt = StartupPacket {
            code: PROTOCOL_V3,
            body: msg[8..].to_vec(),
        };
        assert_eq!(pkt.to_bytes(), msg);
        assert_eq!(
            pkt.parameters().unwrap(),
            vec![
                ("user".to_string(), "movies-mi".to_string()),
                ("database".to_string(), "movies".to_string())
            ]
        );
    }
}
