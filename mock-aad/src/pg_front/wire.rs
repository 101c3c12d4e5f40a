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
    #[error("connection closed after {got} of the {expected} bytes of the {what}")]
    Truncated {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("timed out waiting for the {what} ({after:?})")]
    TimedOut {
        what: &'static str,
        after: std::time::Duration,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

/// Why the front refuses a StartupMessage's parameter list (FATAL 08P01, before anything else happens).
///
/// PostgreSQL (`ProcessStartupPacket`, src/backend/postmaster/postmaster.c up to 16,
/// src/backend/tcop/backend_startup.c from 17) walks `name\0value\0 ... \0` and, if the list does not end in
/// a terminator exactly at the last byte, raises FATAL 08P01 `invalid startup packet layout: expected terminator
/// as last byte`: an empty name ends the list, so an empty name with bytes after it, a name without a value and a
/// list without its final NUL all get that message. The front sends the same message and says in the detail
/// which case it was. It refuses two more things PostgreSQL lets through: a repeated parameter (PostgreSQL keeps
/// the last `user`, so a front that checked the first would open a session as another role) and names or values
/// that are not UTF-8 (the front compares and rebuilds them as text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "{}: an empty parameter name ends the list, but {trailing} more bytes follow it",
        LAYOUT_TERMINATOR
    )]
    BytesAfterTerminator { trailing: usize },
    #[error("{}: parameter \"{name}\" has no value", LAYOUT_TERMINATOR)]
    MissingValue { name: String },
    #[error(
        "{}: the value of parameter \"{name}\" runs to the end of the packet",
        LAYOUT_TERMINATOR
    )]
    UnterminatedValue { name: String },
    #[error(
        "{}: the list ends without its terminating NUL byte",
        LAYOUT_TERMINATOR
    )]
    NoTerminator,
    #[error("invalid startup packet layout: parameter \"{name}\" appears more than once")]
    Repeated { name: String },
    #[error("invalid startup packet layout: parameter name \"{lossy}\" is not valid UTF-8")]
    NameNotUtf8 { lossy: String },
    #[error("invalid startup packet layout: the value of parameter \"{name}\" is not valid UTF-8")]
    ValueNotUtf8 { name: String },
}

const LAYOUT_TERMINATOR: &str = "invalid startup packet layout: expected terminator as last byte";

impl LayoutError {
    /// The FATAL the client gets: PostgreSQL's message where PostgreSQL has one, the specifics in the detail.
    pub fn to_server_error(&self) -> ServerError {
        let (message, detail) = match self {
            LayoutError::BytesAfterTerminator { .. }
            | LayoutError::MissingValue { .. }
            | LayoutError::UnterminatedValue { .. }
            | LayoutError::NoTerminator => {
                let full = self.to_string();
                let detail = full[LAYOUT_TERMINATOR.len() + 2..].to_string();
                (LAYOUT_TERMINATOR.to_string(), Some(detail))
            }
            LayoutError::Repeated { name } => (
                self.to_string(),
                Some(format!(
                    "PostgreSQL would keep only the last \"{name}\"; the front refuses the packet rather than \
                     check one value and forward another. Send each parameter once."
                )),
            ),
            LayoutError::NameNotUtf8 { .. } | LayoutError::ValueNotUtf8 { .. } => (
                self.to_string(),
                Some("The front reads startup parameters as UTF-8 text.".into()),
            ),
        };
        ServerError {
            detail,
            hint: Some(FRONT_HINT.into()),
            ..protocol_violation(message)
        }
    }
}

/// Marks the errors the front makes up itself (PostgreSQL would not send them).
pub const FRONT_HINT: &str =
    "This error comes from the keda-harness Entra front, not from PostgreSQL.";

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
    ///
    /// Strict where PostgreSQL is lenient (see [`LayoutError`]): every name once, names and values UTF-8, the
    /// list ending in its terminator at the last byte. Names are compared for repeats without regard to case,
    /// as PostgreSQL looks server settings up (`DateStyle` and `datestyle` are one setting).
    pub fn parameters(&self) -> Result<Vec<(String, String)>, LayoutError> {
        let body = &self.body;
        let mut out: Vec<(String, String)> = Vec::new();
        let mut offset = 0;
        loop {
            let rest = body.get(offset..).unwrap_or_default();
            if rest.is_empty() {
                return Err(LayoutError::NoTerminator);
            }
            let Some(name_len) = rest.iter().position(|b| *b == 0) else {
                return Err(LayoutError::MissingValue {
                    name: String::from_utf8_lossy(rest).into_owned(),
                });
            };
            if name_len == 0 {
                let trailing = rest.len() - 1;
                if trailing != 0 {
                    return Err(LayoutError::BytesAfterTerminator { trailing });
                }
                return Ok(out);
            }
            let name =
                std::str::from_utf8(&rest[..name_len]).map_err(|_| LayoutError::NameNotUtf8 {
                    lossy: String::from_utf8_lossy(&rest[..name_len]).into_owned(),
                })?;
            let after_name = &rest[name_len + 1..];
            if after_name.is_empty() {
                return Err(LayoutError::MissingValue { name: name.into() });
            }
            let Some(value_len) = after_name.iter().position(|b| *b == 0) else {
                return Err(LayoutError::UnterminatedValue { name: name.into() });
            };
            let value = std::str::from_utf8(&after_name[..value_len])
                .map_err(|_| LayoutError::ValueNotUtf8 { name: name.into() })?;
            if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return Err(LayoutError::Repeated { name: name.into() });
            }
            out.push((name.to_string(), value.to_string()));
            offset += name_len + 1 + value_len + 1;
        }
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
    let body = read_body(r, len as usize - 8, "startup packet").await?;
    Ok(StartupPacket { code, body })
}

/// Read exactly `len` bytes, growing the buffer as they arrive: the length is the peer's claim, so it may cost
/// only what the peer actually sends (a megabyte claim followed by silence allocates next to nothing). Callers
/// check `len` against their cap first.
pub async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
    what: &'static str,
) -> Result<Vec<u8>, WireError> {
    let mut body = Vec::new();
    (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(WireError::Truncated {
            what,
            got: body.len(),
            expected: len,
        });
    }
    Ok(body)
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
    let body = read_body(r, len as usize - 4, "message").await?;
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

// Azure Database for PostgreSQL's own refusals of an Entra token. The texts are public (darold/ora2pg#1851,
// 2025: "FATAL:  The access token has expired. Please acquire a new token and retry."; microsoft/
// azuredatastudio-postgresql#505, 2024: "FATAL: The access token does not have a valid audience claim. Please
// acquire a new token for the resource "https://ossrdbms-aad.database.windows.net"."); the SQLSTATE is not
// published (neither report shows it). The front sends 28000
// (invalid_authorization_specification: PostgreSQL's code for authentication refusals that are not a wrong
// password) and no source-location fields, since Azure's extension is not PostgreSQL's auth.c.

/// A token whose `exp` has passed: `FATAL: The access token has expired. Please acquire a new token and retry.`
pub fn token_expired_error() -> ServerError {
    ServerError {
        severity: "FATAL",
        code: "28000",
        message: "The access token has expired. Please acquire a new token and retry.".into(),
        detail: None,
        hint: None,
        file: "",
        line: "",
        routine: "",
    }
}

/// A token for another resource: `FATAL: The access token does not have a valid audience claim. Please
/// acquire a new token for the resource "https://ossrdbms-aad.database.windows.net".`
pub fn token_wrong_audience_error(resource: &str) -> ServerError {
    ServerError {
        severity: "FATAL",
        code: "28000",
        message: format!(
            "The access token does not have a valid audience claim. Please acquire a new token for the resource \"{resource}\"."
        ),
        detail: None,
        hint: None,
        file: "",
        line: "",
        routine: "",
    }
}

/// `ClientAuthentication`: no pg_hba line matched — what Azure Database for PostgreSQL flexible server says to
/// a client without TLS while `require_secure_transport` is on, before any password is asked. Public samples:
/// ory/hydra#3762 (pgx 5.5 with sslmode=disable against Azure: "server error (FATAL: no pg_hba.conf entry for host
/// \"xxx\", user \"hydra\", database \"hydra\", no encryption (SQLSTATE 28000))"), amacneil/dbmate#347 (flexible
/// server, PostgreSQL 15, sslmode=disable), Azure/azure-cli-extensions#8410 (`FATAL:  no pg_hba.conf entry for host
/// "<MY-IP>", user "<MY-USER>", database "postgres", no encryption`).
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

// The startup-phase errors of `ProcessStartupPacket` / `BackendInitialize` (src/backend/postmaster/postmaster.c
// in PostgreSQL 15 and 16, src/backend/tcop/backend_startup.c from 17): same severity, SQLSTATE and message.

/// A major protocol version other than 3: PostgreSQL answers FATAL 0A000 (ERRCODE_FEATURE_NOT_SUPPORTED).
/// SSLRequest or GSSENCRequest codes repeated after their negotiation land here too, as in PostgreSQL.
pub fn unsupported_protocol_error(code: i32) -> ServerError {
    let code = code as u32;
    ServerError {
        code: "0A000",
        ..protocol_violation(format!(
            "unsupported frontend protocol {}.{}: server supports 3.0 to 3.0",
            code >> 16,
            code & 0xffff
        ))
    }
}

/// No `user` (or an empty one): FATAL 28000 (ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION).
pub fn no_user_error() -> ServerError {
    ServerError {
        code: "28000",
        ..protocol_violation("no PostgreSQL user name specified in startup packet".into())
    }
}

/// Over the connection cap (`CAC_TOOMANY`): FATAL 53300 (ERRCODE_TOO_MANY_CONNECTIONS), sent after the startup
/// packet, as PostgreSQL does, so a client that negotiated TLS reads it inside TLS where it expects an answer.
pub fn too_many_clients_error() -> ServerError {
    ServerError {
        code: "53300",
        ..protocol_violation("sorry, too many clients already".into())
    }
}

/// A startup parameter the front does not forward for an Entra role (FATAL 0A000, the front's own).
pub fn parameter_not_forwarded_error(name: &str, allowed: &[&str]) -> ServerError {
    let why = match name {
        "options" => {
            "\"options\" carries server command-line switches (-c name=value) the front cannot check.".to_string()
        }
        "replication" => {
            "\"replication\" asks for a WAL sender, which an Entra login through the front does not open."
                .to_string()
        }
        _ => format!("The front forwards only these startup parameters: user, database, {}.", allowed.join(", ")),
    };
    ServerError {
        code: "0A000",
        detail: Some(why),
        hint: Some(format!(
            "Connect without \"{name}\" and run SET after connecting (or ALTER ROLE ... SET). {FRONT_HINT}"
        )),
        ..protocol_violation(format!(
            "the Entra front does not forward startup parameter \"{name}\""
        ))
    }
}

/// The front could not open the session upstream after a valid token (08006: connection failure).
pub fn upstream_failure(message: String) -> ServerError {
    ServerError {
        severity: "FATAL",
        code: "08006",
        message,
        detail: None,
        hint: Some(FRONT_HINT.into()),
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

    fn packet(body: &[u8]) -> StartupPacket {
        StartupPacket {
            code: PROTOCOL_V3,
            body: body.to_vec(),
        }
    }

    #[test]
    fn startup_parameters_refuse_every_ambiguous_layout() {
        let cases: &[(&[u8], LayoutError)] = &[
            (
                b"user\0movies-mi\0database\0movies\0user\0postgres\0\0",
                LayoutError::Repeated {
                    name: "user".into(),
                },
            ),
            (
                b"DateStyle\0ISO\0datestyle\0SQL\0\0",
                LayoutError::Repeated {
                    name: "datestyle".into(),
                },
            ),
            // An empty name is PostgreSQL's terminator: anything after it is the layout error.
            (
                b"user\0movies-mi\0\0user\0postgres\0\0",
                LayoutError::BytesAfterTerminator { trailing: 15 },
            ),
            (
                b"user\0movies-mi\0database",
                LayoutError::MissingValue {
                    name: "database".into(),
                },
            ),
            (b"user\0movies-mi\0", LayoutError::NoTerminator),
            (
                b"user\0movies-mi",
                LayoutError::UnterminatedValue {
                    name: "user".into(),
                },
            ),
            (
                b"user\0",
                LayoutError::MissingValue {
                    name: "user".into(),
                },
            ),
            (b"", LayoutError::NoTerminator),
            (
                b"us\xffer\0x\0\0",
                LayoutError::NameNotUtf8 {
                    lossy: "us\u{fffd}er".into(),
                },
            ),
            (
                b"user\0movies\xc3\0\0",
                LayoutError::ValueNotUtf8 {
                    name: "user".into(),
                },
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                packet(body).parameters().as_ref(),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        // The client-facing form: PostgreSQL's severity, code and message for its own layout error.
        let err = LayoutError::MissingValue {
            name: "database".into(),
        }
        .to_server_error();
        assert_eq!((err.severity, err.code), ("FATAL", "08P01"));
        assert_eq!(
            err.message,
            "invalid startup packet layout: expected terminator as last byte"
        );
        assert_eq!(
            err.detail.as_deref(),
            Some("parameter \"database\" has no value")
        );
        let err = LayoutError::Repeated {
            name: "user".into(),
        }
        .to_server_error();
        assert_eq!(err.code, "08P01");
        assert!(err.detail.unwrap().contains("Send each parameter once"));
        // An empty list (just the terminator) is well formed.
        assert_eq!(packet(b"\0").parameters(), Ok(vec![]));
    }

    /// Hands out `data` in small pieces, then EOF; records the largest buffer a caller offered it, which is
    /// what the caller allocated ahead of the bytes.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        largest_offer: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            self.largest_offer = self.largest_offer.max(buf.remaining());
            let n = buf.remaining().min(self.data.len() - self.pos).min(7);
            let pos = self.pos;
            buf.put_slice(&self.data[pos..pos + n]);
            self.pos += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn trickle(data: Vec<u8>) -> Trickle {
        Trickle {
            data,
            pos: 0,
            largest_offer: 0,
        }
    }

    #[tokio::test]
    async fn a_length_claim_costs_only_the_bytes_that_arrive() {
        // A message claiming a 1 GiB body, followed by 10 bytes and EOF, read with a cap that lets it through.
        let mut wire = vec![b'p'];
        wire.extend_from_slice(&(1i32 << 30).to_be_bytes());
        wire.extend_from_slice(b"0123456789");
        let mut r = trickle(wire);
        let err = read_message(&mut r, usize::MAX).await.unwrap_err();
        assert!(
            matches!(
                err,
                WireError::Truncated {
                    got: 10,
                    expected,
                    ..
                } if expected == (1 << 30) - 4
            ),
            "{err:?}"
        );
        assert!(
            r.largest_offer <= 64 * 1024,
            "the reader was offered a {}-byte buffer for 10 bytes of data",
            r.largest_offer
        );

        // With the front's cap the claim is refused before a body byte is read.
        let mut wire = vec![b'p'];
        wire.extend_from_slice(&(1i32 << 30).to_be_bytes());
        wire.extend_from_slice(b"0123456789");
        let mut r = trickle(wire);
        let err = read_message(&mut r, 1024 * 1024).await.unwrap_err();
        assert!(
            matches!(err, WireError::BadLength { len, .. } if len == 1 << 30),
            "{err:?}"
        );
        assert_eq!(r.pos, 5, "only the tag and the length were read");

        // A startup packet claiming PostgreSQL's maximum, then EOF after the code.
        let mut wire = (MAX_STARTUP_PACKET as i32).to_be_bytes().to_vec();
        wire.extend_from_slice(&PROTOCOL_V3.to_be_bytes());
        wire.extend_from_slice(b"user\0");
        let mut r = trickle(wire);
        let err = read_startup_packet(&mut r).await.unwrap_err();
        assert!(
            matches!(err, WireError::Truncated { got: 5, .. }),
            "{err:?}"
        );
        assert!(
            r.largest_offer < MAX_STARTUP_PACKET - 8,
            "{}",
            r.largest_offer
        );

        // And a whole message still reads.
        let mut r = trickle(password_message("x".repeat(3000).as_str()));
        let msg = read_message(&mut r, 1024 * 1024).await.unwrap();
        assert_eq!((msg.tag, msg.body.len()), (b'p', 3001));
    }
}
