//! The HTTP CONNECT proxy that routes chosen `host:port` destinations to local mocks and refuses the rest.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::EgressError;

/// A request head larger than this is refused: CONNECT heads are a few hundred bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What the proxy did with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressVerdict {
    /// Tunnelled to this local address.
    Routed(SocketAddr),
    /// Answered 403: the destination is not in the route table (or the request was not a CONNECT).
    Refused,
    /// Routed, but the local address did not accept the connection (answered 502).
    UpstreamFailed(SocketAddr),
    /// Not an HTTP proxy request at all (answered 400).
    Malformed,
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRecord {
    /// Request method: `CONNECT`, or `GET`/`POST`/... for plain proxied HTTP.
    pub method: String,
    /// `host:port` for CONNECT; the absolute URL for plain proxied HTTP.
    pub destination: String,
    pub verdict: EgressVerdict,
    pub at: SystemTime,
}

/// The proxy's record of every request, shared with the accept loop (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct EgressJournal {
    records: Arc<Mutex<Vec<EgressRecord>>>,
}

impl EgressJournal {
    /// Every request so far, oldest first.
    pub fn records(&self) -> Vec<EgressRecord> {
        self.lock().clone()
    }

    /// Destinations that were refused, oldest first: what tried to leave the machine.
    pub fn refused(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|r| r.verdict == EgressVerdict::Refused)
            .map(|r| r.destination.clone())
            .collect()
    }

    /// Destinations that were tunnelled to a mock, oldest first.
    pub fn routed(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|r| matches!(r.verdict, EgressVerdict::Routed(_)))
            .map(|r| r.destination.clone())
            .collect()
    }

    fn push(&self, record: EgressRecord) {
        self.lock().push(record);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<EgressRecord>> {
        // A panic while holding the lock cannot leave the Vec half-written; keep serving the journal.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Routes for [`EgressProxy`], then [`EgressProxyBuilder::start`].
#[derive(Debug, Default)]
pub struct EgressProxyBuilder {
    routes: HashMap<String, SocketAddr>,
    listen: Option<SocketAddr>,
}

impl EgressProxyBuilder {
    /// Tunnel CONNECTs to `host_port` (e.g. `login.microsoftonline.com:443`, matched case-insensitively) to `to`.
    pub fn route(mut self, host_port: &str, to: SocketAddr) -> Result<Self, EgressError> {
        let key = normalize_host_port(host_port).ok_or_else(|| EgressError::BadRoute {
            route: host_port.to_string(),
        })?;
        self.routes.insert(key, to);
        Ok(self)
    }

    /// Listen here instead of 127.0.0.1 on a free port.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Bind and start serving on the current tokio runtime. The proxy stops when the [`EgressProxy`] drops.
    pub async fn start(self) -> Result<EgressProxy, EgressError> {
        let addr = self
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EgressError::Listen { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EgressError::Listen { addr, source })?;
        let journal = EgressJournal::default();
        let routes = Arc::new(self.routes);
        tracing::info!(%addr, routes = ?routes, "egress proxy listening");
        let accept = tokio::spawn(accept_loop(listener, routes.clone(), journal.clone()));
        Ok(EgressProxy {
            addr,
            routes,
            journal,
            accept,
        })
    }
}

/// A running HTTP CONNECT proxy on loopback. Dropping it stops accepting; open tunnels finish on their own.
#[derive(Debug)]
pub struct EgressProxy {
    addr: SocketAddr,
    routes: Arc<HashMap<String, SocketAddr>>,
    journal: EgressJournal,
    accept: JoinHandle<()>,
}

impl EgressProxy {
    pub fn builder() -> EgressProxyBuilder {
        EgressProxyBuilder::default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the value for `HTTPS_PROXY` / `HTTP_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The route table, `host:port` (lower case) → local address.
    pub fn routes(&self) -> &HashMap<String, SocketAddr> {
        &self.routes
    }

    pub fn journal(&self) -> EgressJournal {
        self.journal.clone()
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    routes: Arc<HashMap<String, SocketAddr>>,
    journal: EgressJournal,
) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: say so, keep serving.
                tracing::warn!(error = %e, "egress proxy: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let routes = routes.clone();
        let journal = journal.clone();
        let span = tracing::debug_span!("egress_connection", %peer);
        tokio::spawn(
            async move {
                if let Err(e) = serve_connection(client, &routes, &journal).await {
                    tracing::debug!(error = %e, "egress proxy connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
}

async fn serve_connection(
    mut client: TcpStream,
    routes: &HashMap<String, SocketAddr>,
    journal: &EgressJournal,
) -> std::io::Result<()> {
    let (head, rest) = match read_head(&mut client).await? {
        Some(h) => h,
        None => return Ok(()), // closed before sending a full head
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/") => (m.to_string(), t.to_string()),
        _ => {
            journal.push(EgressRecord {
                method: String::new(),
                destination: request_line.chars().take(200).collect(),
                verdict: EgressVerdict::Malformed,
                at: SystemTime::now(),
            });
            return respond(
                &mut client,
                400,
                "Bad Request",
                "not an HTTP proxy request\n",
            )
            .await;
        }
    };

    let route = if method.eq_ignore_ascii_case("CONNECT") {
        normalize_host_port(&target).and_then(|k| routes.get(&k).copied())
    } else {
        // Plain proxied HTTP: every Azure client talks HTTPS, so nothing legitimate arrives here.
        None
    };
    let Some(to) = route else {
        tracing::warn!(%method, destination = %target, "egress refused: destination is not routed to a mock");
        journal.push(EgressRecord {
            method,
            destination: target.clone(),
            verdict: EgressVerdict::Refused,
            at: SystemTime::now(),
        });
        let body = format!(
            "keda-harness egress proxy: {target} is not routed to a mock; the harness never contacts real hosts\n"
        );
        return respond(&mut client, 403, "Forbidden", &body).await;
    };

    let mut upstream = match TcpStream::connect(to).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(destination = %target, %to, error = %e, "egress route target refused the connection");
            journal.push(EgressRecord {
                method,
                destination: target,
                verdict: EgressVerdict::UpstreamFailed(to),
                at: SystemTime::now(),
            });
            return respond(
                &mut client,
                502,
                "Bad Gateway",
                "route target unreachable\n",
            )
            .await;
        }
    };
    tracing::debug!(destination = %target, %to, "egress routed");
    journal.push(EgressRecord {
        method,
        destination: target,
        verdict: EgressVerdict::Routed(to),
        at: SystemTime::now(),
    });
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    if !rest.is_empty() {
        // The client pipelined its TLS ClientHello behind the CONNECT head.
        upstream.write_all(&rest).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// Reads up to the end of the request head; returns it with any bytes that followed it.
async fn read_head(client: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Ok(Some((head, buf[end + 4..].to_vec())));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
}

async fn respond(
    client: &mut TcpStream,
    status: u16,
    reason: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

/// `Host:443` → `host:443`; `[::1]:443` stays bracketed. `None` unless it is `host:port` with a numeric port.
fn normalize_host_port(s: &str) -> Option<String> {
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return None;
    }
    Some(format!("{}:{port}", host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_keys_are_case_insensitive_and_need_a_port() {
        assert_eq!(
            normalize_host_port("Login.MicrosoftOnline.com:443").as_deref(),
            Some("login.microsoftonline.com:443")
        );
        assert_eq!(normalize_host_port("login.microsoftonline.com"), None);
        assert_eq!(normalize_host_port("http://x:80/"), None);
        assert_eq!(normalize_host_port("x:notaport"), None);
    }

    async fn roundtrip(proxy: SocketAddr, request: &str) -> (String, TcpStream) {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).await.unwrap() == 0 {
                break;
            }
            got.push(b[0]);
        }
        (String::from_utf8(got).unwrap(), s)
    }

    #[tokio::test]
    async fn routes_a_connect_to_the_local_target_and_tunnels_bytes() {
        // A real TCP echo-ish server standing in for the mock.
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_addr = target.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = target.accept().await.unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b.to_ascii_uppercase()).await.unwrap();
        });
        let proxy = EgressProxy::builder()
            .route("login.microsoftonline.com:443", target_addr)
            .unwrap()
            .start()
            .await
            .unwrap();
        let (head, mut tunnel) = roundtrip(
            proxy.addr(),
            "CONNECT LOGIN.microsoftonline.com:443 HTTP/1.1\r\nHost: login.microsoftonline.com:443\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        tunnel.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        tunnel.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"HELLO");
        assert_eq!(
            proxy.journal().routed(),
            vec!["LOGIN.microsoftonline.com:443"]
        );
        assert!(proxy.journal().refused().is_empty());
    }

    #[tokio::test]
    async fn refuses_and_records_unrouted_connects_and_plain_http() {
        let proxy = EgressProxy::builder().start().await.unwrap();
        let (head, _) = roundtrip(
            proxy.addr(),
            "CONNECT management.azure.com:443 HTTP/1.1\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        let (head, _) = roundtrip(
            proxy.addr(),
            "GET http://example.org/ HTTP/1.1\r\nHost: example.org\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        assert_eq!(
            proxy.journal().refused(),
            vec!["management.azure.com:443", "http://example.org/"]
        );
    }

    #[tokio::test]
    async fn garbage_gets_400_and_a_dead_target_gets_502() {
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let proxy = EgressProxy::builder()
            .route("postgres.example:5432", dead_addr)
            .unwrap()
            .start()
            .await
            .unwrap();
        let (head, _) = roundtrip(proxy.addr(), "\x16\x03\x01garbage\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
        let (head, _) = roundtrip(
            proxy.addr(),
            "CONNECT postgres.example:5432 HTTP/1.1\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 502"), "{head}");
        let verdicts: Vec<_> = proxy
            .journal()
            .records()
            .into_iter()
            .map(|r| r.verdict)
            .collect();
        assert_eq!(
            verdicts,
            vec![
                EgressVerdict::Malformed,
                EgressVerdict::UpstreamFailed(dead_addr)
            ]
        );
    }
}
