//! What a run leaves behind: nothing. Every process group, temp dir and container the harness creates is
//! recorded — in memory and in a per-process state file — and removed again on every way out:
//!
//! - normal end and test failure: the owning value's `Drop` (a [`crate::process::ManagedChild`], a
//!   [`TrackedDir`], a container handle) removes it and forgets the record;
//! - Ctrl-C, SIGTERM, SIGHUP: [`shutdown`] asks the run to stop (the CLI drops its run, so every `Drop` runs),
//!   refuses to start anything new, then sweeps whatever is still recorded; a process that never asked for the
//!   graceful path (a test binary) is swept at once;
//! - SIGKILL of the harness: its children get `PR_SET_PDEATHSIG` (set by a spawner thread that lives as long as
//!   the process, so the signal means "the harness died", not "some thread ended") and die with it; what a
//!   signal cannot remove (temp dirs, containers, grandchildren) stays in the dead run's state file, and the next
//!   harness start — or `keda-harness clean` — reaps it ([`reap_orphans`]).
//!
//! The state files live in [`state_root`] (one JSON file per live harness process, named by pid and start
//! time, so a recycled pid is never mistaken for its owner).

mod reap;
mod shutdown;
pub(crate) mod state;
mod temp;

pub use reap::{reap_orphans, ReapReport, Reaped};
pub use shutdown::{
    begin_shutdown, install_graceful_handlers, is_shutting_down, shutdown_requested, sweep,
    SweepOnDrop,
};
pub use state::{
    forget, record, recorded, state_file_path, state_root, LifecycleError, Resource, STATE_DIR_ENV,
};
pub use temp::TrackedDir;

pub(crate) use reap::process_start_ticks;
