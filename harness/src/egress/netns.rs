//! A sealed network namespace: only `lo`, no route anywhere, and TCP forwards for exactly the addresses the
//! harness serves.
//!
//! The KEDA operator runs inside it. It sees `127.0.0.1:APISERVER`, the egress proxy and the Entra front at
//! the same addresses as outside, because the harness listens on those addresses *inside* the namespace (a
//! socket keeps the namespace it was created in, whichever thread uses it later) and relays each connection to
//! the real listener outside. Anything else the operator dials fails at once: the routing table is empty, so a
//! packet for another host has no interface to leave by (ENETUNREACH), and loopback ports nobody forwarded are
//! closed. Names resolve only through the private hosts file, and the resolver the namespace names is a closed
//! loopback port.
//!
//! The namespace is held by a file descriptor only (no `/run/netns` entry), so it vanishes with the harness and
//! the processes inside it: nothing to clean up, even after SIGKILL.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::EgressError;

/// A private network namespace with `lo` up and nothing else; see the module docs.
pub struct SealedNetwork {
    ns: Arc<OwnedFd>,
    /// Forwarders; aborted on drop.
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for SealedNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedNetwork")
            .field("ns_fd", &self.ns.as_raw_fd())
            .finish()
    }
}

fn os_err(what: &str) -> EgressError {
    EgressError::Netns {
        what: what.to_string(),
        source: std::io::Error::last_os_error(),
    }
}

/// Run `f` on a new thread that first joins the namespace `ns` (a thread joins for good: never a pooled one).
fn in_namespace<T: Send + 'static>(
    ns: &Arc<OwnedFd>,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let ns = ns.clone();
    std::thread::spawn(move || {
        // SAFETY: setns on the calling thread with a namespace fd we own.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?
}

/// `ifr_name` + `ifr_flags` of `struct ifreq` (the union is padded to its full 24 bytes).
#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Bring `lo` up in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a struct laid out as the kernel's ifreq; the fd is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let mut req: IfReqFlags = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl SealedNetwork {
    /// A new namespace (needs CAP_SYS_ADMIN: root). The error says what to do when it cannot be made.
    pub fn new() -> Result<Self, EgressError> {
        let fd = std::thread::spawn(|| -> Result<OwnedFd, EgressError> {
            // SAFETY: unshare on this short-lived thread only; the namespace is kept by the fd opened next.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(EgressError::NetnsNotPermitted {
                    source: std::io::Error::last_os_error(),
                });
            }
            // SAFETY: opening a path we name, O_CLOEXEC so children never inherit it by accident.
            let raw = unsafe {
                libc::open(
                    c"/proc/thread-self/ns/net".as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                )
            };
            if raw < 0 {
                return Err(os_err("opening /proc/thread-self/ns/net"));
            }
            // SAFETY: raw is a fresh fd we own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            loopback_up().map_err(|source| EgressError::Netns {
                what: "bringing lo up in the sealed namespace".into(),
                source,
            })?;
            Ok(fd)
        })
        .join()
        .map_err(|_| EgressError::Netns {
            what: "the namespace thread panicked".into(),
            source: std::io::Error::other("panic"),
        })??;
        Ok(Self {
            ns: Arc::new(fd),
            tasks: JoinSet::new(),
        })
    }

    /// The namespace's inode, as `/proc/PID/ns/net` of a process inside it shows it (`net:[INODE]`).
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/self/fd/{}", self.ns.as_raw_fd()))
            .map(|m| m.ino())
            .unwrap_or(0)
    }

    /// Listen on `addr` inside the namespace and relay every connection to `addr` outside (where the harness
    /// serves it).
    pub async fn expose(&mut self, addr: SocketAddr) -> Result<(), EgressError> {
        let listener = in_namespace(&self.ns, move || {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .map_err(|source| EgressError::Netns {
            what: format!("listening on {addr} inside the sealed namespace"),
            source,
        })?;
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|source| EgressError::Netns {
                what: format!("adopting the listener on {addr}"),
                source,
            })?;
        self.tasks.spawn(relay_loop(listener, move || async move {
            tokio::net::TcpStream::connect(addr).await
        }));
        Ok(())
    }

    /// Listen on a free loopback port outside and relay every connection to `inside` in the namespace (how the
    /// harness reaches the operator's health probe). Returns the outside address.
    pub async fn reach_inside(&mut self, inside: SocketAddr) -> Result<SocketAddr, EgressError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| EgressError::Netns {
                what: "listening on loopback for a relay into the namespace".into(),
                source,
            })?;
        let outside = listener.local_addr().map_err(|source| EgressError::Netns {
            what: "reading the relay's address".into(),
            source,
        })?;
        let ns = self.ns.clone();
        self.tasks.spawn(relay_loop(listener, move || {
            let ns = ns.clone();
            async move {
                let s = tokio::task::spawn_blocking(move || {
                    in_namespace(&ns, move || {
                        let s = std::net::TcpStream::connect_timeout(
                            &inside,
                            std::time::Duration::from_secs(5),
                        )?;
                        s.set_nonblocking(true)?;
                        Ok(s)
                    })
                })
                .await
                .map_err(std::io::Error::other)??;
                tokio::net::TcpStream::from_std(s)
            }
        }));
        Ok(outside)
    }

    /// Make `cmd` start inside the namespace (its `pre_exec` joins it before anything else runs).
    pub fn enter(&self, cmd: &mut Command) {
        let ns = self.ns.clone();
        // SAFETY: setns is async-signal-safe; the fd stays open in the forked child until exec (O_CLOEXEC).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// The namespace's routes, IPv4 (`/proc/net/route`, main table) and IPv6 (`/proc/net/ipv6_route`), as
    /// `(destination, interface)` — what a test shows before it proves a refusal, so that proof never sends a
    /// packet anywhere.
    pub fn routes(&self) -> Result<Vec<(String, String)>, EgressError> {
        in_namespace(&self.ns, || {
            let mut out = Vec::new();
            let v4 = std::fs::read_to_string("/proc/thread-self/net/route")?;
            for line in v4.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() > 1 {
                    out.push((format!("ipv4 {}", f[1]), f[0].to_string()));
                }
            }
            // IPv6 may be disabled on the machine: then there is no such file and no IPv6 route either.
            if let Ok(v6) = std::fs::read_to_string("/proc/thread-self/net/ipv6_route") {
                for line in v6.lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if f.len() >= 10 {
                        out.push((format!("ipv6 {}/{}", f[0], f[1]), f[9].to_string()));
                    }
                }
            }
            Ok(out)
        })
        .map_err(|source| EgressError::Netns {
            what: "reading the sealed namespace's routes".into(),
            source,
        })
    }

    /// Move the calling thread into the namespace for good: every socket it creates from now on is sealed. Only
    /// for a thread of the caller's own that ends afterwards (a scoped thread running an in-process client);
    /// never a pooled one, which would carry the namespace into unrelated work.
    pub fn join_current_thread(&self) -> std::io::Result<()> {
        // SAFETY: setns on the calling thread with a namespace fd we own.
        if unsafe { libc::setns(self.ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Connect to `addr` from inside the namespace (for tests of what the operator can reach).
    pub fn connect_inside(&self, addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
        in_namespace(&self.ns, move || {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
        })
    }
}

async fn relay_loop<F, Fut>(listener: tokio::net::TcpListener, dial: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = std::io::Result<tokio::net::TcpStream>> + Send,
{
    let dial = Arc::new(dial);
    let mut conns = JoinSet::new();
    loop {
        let (mut inbound, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends pass; the loop must not end on them.
                tracing::warn!("sealed-namespace relay: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let dial = dial.clone();
        conns.spawn(async move {
            match dial().await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::debug!("sealed-namespace relay: dial failed: {e}"),
            }
        });
        // Reap finished connections so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A sealed namespace, or `None` (after saying why) where this user may not make one; the error must
    /// then say what to do. CI runs as root, where it must work.
    fn sealed() -> Option<SealedNetwork> {
        match SealedNetwork::new() {
            Ok(n) => Some(n),
            Err(e @ EgressError::NetnsNotPermitted { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("run as root"), "{msg}");
                // SAFETY: geteuid has no preconditions.
                assert_ne!(unsafe { libc::geteuid() }, 0, "root must be able to: {msg}");
                eprintln!("SKIPPED: {msg}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn only_exposed_addresses_are_reachable_and_there_is_no_route_out() {
        let Some(mut net) = sealed() else { return };
        // First show that the namespace has no route but loopback: nothing below can leave this machine.
        let routes = net.routes().unwrap();
        assert!(
            routes.iter().all(|(_, dev)| dev == "lo"),
            "routes other than lo: {routes:?}"
        );
        assert!(
            !routes.iter().any(|(d, _)| d.starts_with("ipv4")),
            "the IPv4 main table must be empty: {routes:?}"
        );
        // An outside address (TEST-NET-1, RFC 5737) is unreachable at once: no interface to send it by.
        let err = net
            .connect_inside("192.0.2.1:443".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ENETUNREACH),
            "connecting out of the sealed namespace: {err}"
        );

        // A harness listener, exposed: reachable at the same address inside.
        let served = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = served.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = served.accept().unwrap();
            s.write_all(b"hello from outside").unwrap();
        });
        // Not yet exposed: refused (the namespace's own loopback has nothing there).
        let refused = net.connect_inside(addr).unwrap_err();
        assert_eq!(
            refused.raw_os_error(),
            Some(libc::ECONNREFUSED),
            "{refused}"
        );
        net.expose(addr).await.unwrap();
        let mut inside = tokio::task::spawn_blocking({
            let ns = net.ns.clone();
            move || in_namespace(&ns, move || std::net::TcpStream::connect(addr))
        })
        .await
        .unwrap()
        .unwrap();
        let mut got = String::new();
        tokio::task::spawn_blocking(move || {
            inside.read_to_string(&mut got).unwrap();
            got
        })
        .await
        .map(|got| assert_eq!(got, "hello from outside"))
        .unwrap();
        server.join().unwrap();
    }

    #[tokio::test]
    async fn a_listener_inside_is_reached_through_reach_inside() {
        let Some(mut net) = sealed() else { return };
        let inside_listener =
            in_namespace(&net.ns, || std::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let inside = inside_listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = inside_listener.accept().unwrap();
            s.write_all(b"ready").unwrap();
        });
        let outside = net.reach_inside(inside).await.unwrap();
        let mut s = tokio::net::TcpStream::connect(outside).await.unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut got)
            .await
            .unwrap();
        assert_eq!(got, b"ready");
        server.join().unwrap();
    }

    #[test]
    fn a_command_started_inside_sees_only_lo() {
        let Some(net) = sealed() else { return };
        let mut cmd = Command::new("cat");
        cmd.arg("/proc/net/dev");
        net.enter(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let ifaces: Vec<&str> = text
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert_eq!(ifaces, vec!["lo"], "{text}");
    }
}
