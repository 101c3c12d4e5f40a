//! A TLS client below HTTP: for requests no HTTP client library sends (a body shorter than its
//! Content-Length, a connection that stays silent).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use mock_aad::EntraMock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub fn connector(mock: &EntraMock) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut mock.ca_pem().as_bytes()) {
        roots
            .add(cert.expect("CA PEM parses"))
            .expect("CA is a valid root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// TLS over an already connected TCP stream, to `localhost` (a name the mock's certificate carries).
pub async fn tls_over(mock: &EntraMock, tcp: TcpStream) -> TlsStream<TcpStream> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector(mock)
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the mock")
}

pub async fn tls(mock: &EntraMock) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(mock.addr()).await.expect("connect");
    tls_over(mock, tcp).await
}

/// Everything the server sends until it closes the connection (or `limit` passes: then `None`).
pub async fn read_to_close(stream: &mut TlsStream<TcpStream>, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let r = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    r.ok().map(|()| String::from_utf8_lossy(&out).into_owned())
}

/// A `Connection: close` GET; returns the whole response text.
pub async fn get(stream: &mut TlsStream<TcpStream>, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    read_to_close(stream, Duration::from_secs(10))
        .await
        .expect("the mock answers and closes")
}

/// Status code and JSON body of a raw HTTP/1.1 response (`Content-Length`-framed, as the mock sends).
pub fn parse_response(text: &str) -> (u16, serde_json::Value) {
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, json)
}
