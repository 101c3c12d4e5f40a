//! Progress of long steps (Go builds, stand-up phases, waits) as tracing events; library code never prints.
//!
//! Every step is one event with target [`TARGET`], a `scope` (a cell label such as `seed@2.15.0`,
//! `keda 2.15.0 build`, or [`MATRIX`] for the run as a whole) and a message; `done = true` marks a scope's last
//! line (a verdict). [`ProgressLayer`] renders them for a person: on a terminal one line per scope with its phase
//! and elapsed time (indicatif), otherwise one plain line per event (`[scope 12.3s] message`), which is what CI
//! logs and the interrupt tests read. The binary installs it; tests get it through [`show_in_tests`] (called by
//! the prerequisite gates), so a ten-minute Go build in `cargo test` never looks like a hang.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The tracing target of progress events.
pub const TARGET: &str = "keda_harness::progress";
/// The scope of steps that belong to the whole run, not to one cell.
pub const MATRIX: &str = "matrix";

/// Report a step: `progress!(scope, "starting {}", what)`; `progress!(done: scope, "PASS")` for a scope's last.
#[macro_export]
macro_rules! progress {
    (done: $scope:expr, $($arg:tt)+) => {
        ::tracing::info!(target: $crate::progress::TARGET, scope = %$scope, done = true, $($arg)+)
    };
    ($scope:expr, $($arg:tt)+) => {
        ::tracing::info!(target: $crate::progress::TARGET, scope = %$scope, $($arg)+)
    };
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// One line per scope, redrawn in place (stderr is a terminal).
    Terminal,
    /// One line per event (CI logs, pipes, tests).
    Plain,
}

impl Display {
    /// [`Display::Terminal`] when stderr is a terminal and `TERM` is not `dumb`, else [`Display::Plain`].
    pub fn for_stderr() -> Self {
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if std::io::stderr().is_terminal() && !dumb {
            Display::Terminal
        } else {
            Display::Plain
        }
    }
}

/// One progress event, as the layer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub scope: String,
    pub message: String,
    pub done: bool,
}

impl Step {
    /// The step of a progress event; `None` for any other event.
    pub fn of(event: &Event<'_>) -> Option<Step> {
        if event.metadata().target() != TARGET {
            return None;
        }
        let mut v = StepVisitor::default();
        event.record(&mut v);
        Some(Step {
            scope: v.scope.unwrap_or_else(|| MATRIX.to_string()),
            message: v.message,
            done: v.done,
        })
    }
}

#[derive(Default)]
struct StepVisitor {
    scope: Option<String>,
    message: String,
    done: bool,
}

impl Visit for StepVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "scope" => self.scope = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            _ => {}
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "done" {
            self.done = value;
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "scope" => self.scope = Some(format!("{value:?}")),
            "message" => {
                self.message.clear();
                let _ = write!(self.message, "{value:?}");
            }
            _ => {}
        }
    }
}

/// Renders progress events on stderr (see the module docs).
pub struct ProgressLayer {
    display: Display,
    started: Instant,
    state: Arc<Mutex<Scopes>>,
}

/// Ends the layer's live lines before the binary prints its results (a line still spinning would be redrawn
/// over them).
#[derive(Clone)]
pub struct ProgressHandle(Arc<Mutex<Scopes>>);

impl ProgressHandle {
    /// Stop every line that has not ended, leaving its last message.
    pub fn finish(&self) {
        if let Ok(mut s) = self.0.lock() {
            for (_, bar) in s.bars.drain() {
                bar.abandon();
            }
            // Dropped, not cleared: the finished lines (each cell's verdict) stay on the screen.
            s.multi = None;
        }
    }
}

#[derive(Default)]
struct Scopes {
    first_seen: HashMap<String, Instant>,
    multi: Option<indicatif::MultiProgress>,
    bars: HashMap<String, indicatif::ProgressBar>,
}

impl ProgressLayer {
    pub fn new(display: Display) -> Self {
        Self {
            display,
            started: Instant::now(),
            state: Arc::new(Mutex::new(Scopes::default())),
        }
    }

    /// A handle that ends the live lines ([`ProgressHandle::finish`]).
    pub fn handle(&self) -> ProgressHandle {
        ProgressHandle(self.state.clone())
    }

    /// The plain line of `step` (what [`Display::Plain`] writes), `elapsed` since its scope's first step.
    pub fn plain_line(step: &Step, elapsed: Duration) -> String {
        if step.scope == MATRIX {
            format!("==> {}", step.message)
        } else {
            format!(
                "[{} {:.1}s] {}",
                step.scope,
                elapsed.as_secs_f64(),
                step.message
            )
        }
    }

    fn render(&self, step: Step) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        let since = *s.first_seen.entry(step.scope.clone()).or_insert(now);
        match self.display {
            Display::Plain => {
                let line = Self::plain_line(&step, now - since);
                // Straight to the process's stderr: the test harness captures `eprintln!`, not the fd.
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            Display::Terminal => {
                let multi = s
                    .multi
                    .get_or_insert_with(indicatif::MultiProgress::new)
                    .clone();
                if step.scope == MATRIX {
                    let _ = multi.println(format!(
                        "==> {} ({:.0} s)",
                        step.message,
                        self.started.elapsed().as_secs_f64()
                    ));
                    return;
                }
                let bar = s
                    .bars
                    .entry(step.scope.clone())
                    .or_insert_with(|| {
                        let bar = multi.add(indicatif::ProgressBar::new_spinner());
                        bar.set_style(
                            indicatif::ProgressStyle::with_template(
                                "{spinner} {prefix:.bold} {elapsed:>4} {wide_msg}",
                            )
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                        );
                        bar.set_prefix(step.scope.clone());
                        bar.enable_steady_tick(Duration::from_millis(200));
                        bar
                    })
                    .clone();
                if step.done {
                    bar.finish_with_message(step.message);
                    s.bars.remove(&step.scope);
                } else {
                    bar.set_message(step.message);
                }
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for ProgressLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if let Some(step) = Step::of(event) {
            self.render(step);
        }
    }
}

/// Install a subscriber for a test binary (once): progress as plain lines, and other events by
/// `KEDA_HARNESS_LOG` (default `warn`). A subscriber already installed is left alone.
pub fn show_in_tests() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEDA_HARNESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::registry()
        .with(ProgressLayer::new(Display::Plain))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Collects the steps the layer would render.
    struct Collect(Arc<Mutex<Vec<Step>>>);
    impl<S: Subscriber> Layer<S> for Collect {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            if let Some(s) = Step::of(event) {
                self.0.lock().unwrap().push(s);
            }
        }
    }

    #[test]
    fn progress_events_carry_scope_message_and_done_and_other_events_are_not_steps() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Collect(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let cell = "seed@2.15.0".to_string();
            crate::progress!(cell, "starting {}", "etcd");
            tracing::info!(scope = "seed@2.15.0", "not progress");
            crate::progress!(done: cell, "PASS in {:.1} s", 3.25);
        });
        let seen = seen.lock().unwrap();
        assert_eq!(
            *seen,
            vec![
                Step {
                    scope: "seed@2.15.0".into(),
                    message: "starting etcd".into(),
                    done: false
                },
                Step {
                    scope: "seed@2.15.0".into(),
                    message: "PASS in 3.2 s".into(),
                    done: true
                },
            ]
        );
    }

    #[test]
    fn plain_lines_name_the_scope_and_its_elapsed_time_and_run_steps_stand_out() {
        let step = Step {
            scope: "seed@2.14.1".into(),
            message: "applying the scenario's 4 manifests".into(),
            done: false,
        };
        assert_eq!(
            ProgressLayer::plain_line(&step, Duration::from_millis(2340)),
            "[seed@2.14.1 2.3s] applying the scenario's 4 manifests"
        );
        let run = Step {
            scope: MATRIX.into(),
            message: "running 3 cell(s) side by side".into(),
            done: false,
        };
        assert_eq!(
            ProgressLayer::plain_line(&run, Duration::ZERO),
            "==> running 3 cell(s) side by side"
        );
    }
}
