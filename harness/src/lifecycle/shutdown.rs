//! Ctrl-C, SIGTERM and SIGHUP: ask the run to stop, start nothing new, and make sure nothing stays behind.
//!
//! Two ways to react, chosen per process:
//! - graceful ([`install_graceful_handlers`], the CLI): the first signal sets the shutdown flag and wakes
//!   [`shutdown_requested`]; the CLI drops its run, so every `Drop` runs (PostgreSQL's fast shutdown, temp dirs
//!   removed), then calls [`sweep`] for anything still recorded and exits 130. A second signal, or 30 s without
//!   an exit, sweeps and exits at once.
//! - immediate (the default, installed by the first [`super::record`] — test binaries): sweep and exit 130.
//!   Test threads cannot be asked to stop, and `cargo test` interrupted must leave nothing either.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::reap::{kill_group_members, processes_in_group, remove};
use super::state::{drain, remove_state_file, Resource};

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
const MODE_IMMEDIATE: u8 = 1;
const MODE_GRACEFUL: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(MODE_IMMEDIATE);
/// How long the graceful path may take before the watchdog sweeps.
const GRACEFUL_LIMIT: Duration = Duration::from_secs(30);
/// SIGTERM to SIGKILL during a sweep.
const SWEEP_GRACE: Duration = Duration::from_secs(5);

fn channel() -> &'static watch::Sender<bool> {
    static TX: OnceLock<watch::Sender<bool>> = OnceLock::new();
    TX.get_or_init(|| watch::channel(false).0)
}

/// True once shutdown began: nothing new is spawned or created after that.
pub fn is_shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::SeqCst)
}

/// Begin shutdown (idempotent): [`is_shutting_down`] turns true and [`shutdown_requested`] resolves.
pub fn begin_shutdown() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    channel().send_replace(true);
}

/// Resolves once shutdown began (at once if it already has).
pub async fn shutdown_requested() {
    let mut rx = channel().subscribe();
    let _ = rx.wait_for(|v| *v).await;
}

/// The CLI's handlers: the first signal asks the run to stop (see the module docs).
pub fn install_graceful_handlers() {
    MODE.store(MODE_GRACEFUL, Ordering::SeqCst);
    install_once();
}

/// The handlers a process gets when it first records something, unless it asked for the graceful ones.
pub(crate) fn install_default_handlers() {
    install_once();
}

fn install_once() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // ctrlc's `termination` feature: SIGINT, SIGTERM and SIGHUP, handled on a thread of its own (not in
        // signal context), so the handler may allocate, lock and sleep.
        if let Err(e) = ctrlc::set_handler(on_signal) {
            tracing::warn!("cannot install the Ctrl-C handler ({e}); what the harness started is only removed on drop and by the next start");
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            // A panic on the main thread unwinds through the CLI's `SweepOnDrop`; from here on nothing new starts.
            if std::thread::current().name() == Some("main") {
                SHUTTING_DOWN.store(true, Ordering::SeqCst);
            }
        }));
    });
}

fn on_signal() {
    static SIGNALS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SIGNALS.fetch_add(1, Ordering::SeqCst);
    if MODE.load(Ordering::SeqCst) == MODE_GRACEFUL && n == 0 {
        begin_shutdown();
        std::thread::spawn(|| {
            std::thread::sleep(GRACEFUL_LIMIT);
            eprintln!(
                "keda-harness: still stopping after {GRACEFUL_LIMIT:?}; removing what is left and exiting"
            );
            report_and_exit(sweep());
        });
        return;
    }
    report_and_exit(sweep());
}

fn report_and_exit(swept: Vec<Resource>) -> ! {
    // The one place library code writes to stderr: the process is about to end from a signal, and what was
    // stopped must be said somewhere.
    for r in &swept {
        eprintln!("keda-harness: interrupted; removed {r}");
    }
    // 130: the shell's code for "ended by SIGINT".
    std::process::exit(130)
}

/// Remove everything this process still has recorded — process groups (SIGTERM, SIGKILL after 5 s),
/// containers, kind clusters, directories — and its state file. Begins shutdown first, so nothing new starts
/// meanwhile. Returns what was removed.
pub fn sweep() -> Vec<Resource> {
    begin_shutdown();
    let all = drain();
    if all.is_empty() {
        remove_state_file();
        return all;
    }
    let groups: Vec<(i32, u64)> = all
        .iter()
        .filter_map(|r| match r {
            Resource::ProcessGroup {
                pgid, start_ticks, ..
            } => Some((*pgid, *start_ticks)),
            _ => None,
        })
        .collect();
    for (pgid, ticks) in &groups {
        kill_group_members(*pgid, *ticks, libc::SIGTERM);
    }
    let deadline = Instant::now() + SWEEP_GRACE;
    while Instant::now() < deadline
        && groups
            .iter()
            .any(|(g, t)| !processes_in_group(*g, *t).is_empty())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (pgid, ticks) in &groups {
        kill_group_members(*pgid, *ticks, libc::SIGKILL);
    }
    for r in all
        .iter()
        .filter(|r| !matches!(r, Resource::ProcessGroup { .. }))
    {
        if let Err(e) = remove(r) {
            tracing::warn!(what = %r, "could not remove: {e}");
        }
    }
    remove_state_file();
    all
}

/// Sweeps when dropped: the CLI holds one in `main`, so a panic that unwinds out of the run still removes
/// whatever its drops did not.
pub struct SweepOnDrop;

impl Drop for SweepOnDrop {
    fn drop(&mut self) {
        sweep();
    }
}
