//! The accept loop survives running out of file descriptors: `accept` fails with EMFILE (logged, retried
//! after a backoff) and the waiting client is served once descriptors free up.
//!
//! Its own test binary (one process, one test): it lowers this process's RLIMIT_NOFILE and fills the
//! descriptor table, which would break any test running beside it.

mod common;
mod raw_tls;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// Collects what the mock logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn rlimit() -> libc::rlimit {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    r
}

fn set_rlimit(r: &libc::rlimit) {
    // SAFETY: setrlimit only reads the struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, r) }, 0);
}

#[tokio::test]
async fn accept_error_is_logged_backed_off_and_survived() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let (mock, client) = start_example().await;
    let health = format!("{}/_admin/health", mock.url());
    assert_eq!(client.get(&health).send().await.unwrap().status(), 200);

    // Fill the descriptor table: a low soft limit (highest fd in use + headroom), then /dev/null until
    // EMFILE, then free one for the client's socket.
    let saved = rlimit();
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    set_rlimit(&libc::rlimit {
        rlim_cur: highest + 32,
        rlim_max: saved.rlim_max,
    });
    let mut fillers = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
    }
    assert!(!fillers.is_empty());
    drop(fillers.pop());
    // The kernel completes this connection into the backlog; the mock's accept has no descriptor for it.
    let tcp = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();

    drop(fillers);
    set_rlimit(&saved);

    let failures = during.matches("accept failed").count();
    eprintln!("{failures} accept failures logged while the descriptor table was full");
    assert!(
        failures >= 2,
        "expected repeated, backed-off accept failures in the log, got:\n{during}"
    );
    assert!(
        during.contains("Too many open files") || during.contains("os error 24"),
        "{during}"
    );
    // Backed off, not spinning: 300 ms at 10 ms doubling to 500 ms is a handful of attempts.
    assert!(
        failures < 20,
        "{failures} accept failures in 300 ms: spinning"
    );

    // The client that waited in the backlog is served, and so is a new one.
    let mut tls = tokio::time::timeout(Duration::from_secs(5), raw_tls::tls_over(&mock, tcp))
        .await
        .expect("handshake after descriptors freed up");
    let (status, json) = raw_tls::parse_response(&raw_tls::get(&mut tls, "/_admin/health").await);
    assert_eq!((status, json["status"].as_str()), (200, Some("ok")));
    assert_eq!(client.get(&health).send().await.unwrap().status(), 200);
}
