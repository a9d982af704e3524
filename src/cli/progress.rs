//! The progress line of `run` on a terminal: which target of how many, cases done of its
//! total, seconds since it began, redrawn in place on standard error. Nothing at all when
//! standard error is not a terminal (a CI log, a file): there every line is for keeps.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nbd_conform::engine::outcome::CaseResult;
use nbd_conform::engine::suite::Observer;

/// Back to the start of the line (`\r`) and clear it (`ESC [K`), what a longer line left too.
const WIPE: &str = "\r\x1b[K";

/// What to print before a line for keeps while the progress line may be up: [`WIPE`] on a
/// terminal, nothing elsewhere.
pub fn wipe() -> &'static str {
    if std::io::stderr().is_terminal() {
        WIPE
    } else {
        ""
    }
}

/// How often the line is redrawn while no case finishes, so that the seconds keep counting
/// against a server that hangs.
const TICK: Duration = Duration::from_secs(1);

/// The progress line, shared by the engine (which tells it of cases) and a ticker.
pub struct Progress {
    state: Mutex<State>,
    /// How many targets the run has, for `[2/5]`.
    targets: usize,
}

#[derive(Default)]
struct State {
    /// None between targets: nothing is drawn then.
    running: Option<Running>,
    /// Targets begun so far.
    begun: usize,
}

struct Running {
    subject: String,
    done: usize,
    total: usize,
    since: Instant,
}

impl Progress {
    /// A progress line for a run of `targets` targets, if standard error is a terminal.
    pub fn on_terminal(targets: usize) -> Option<Arc<Progress>> {
        std::io::stderr().is_terminal().then(|| {
            Arc::new(Progress {
                state: Mutex::default(),
                targets,
            })
        })
    }

    /// Redraws the line every [`TICK`] (while a target runs) until the ticker is dropped.
    pub fn tick(self: &Arc<Self>) -> Ticker {
        let me = self.clone();
        Ticker(tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                me.draw(&me.lock());
            }
        }))
    }

    /// The target is done: the line is wiped, so that what is printed next starts clean.
    pub fn end_target(&self) {
        let mut state = self.lock();
        if state.running.take().is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{WIPE}");
            let _ = err.flush();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn draw(&self, state: &State) {
        let Some(r) = &state.running else {
            return;
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "{WIPE}  [{}/{}] {}: {}/{} cases, {} s",
            state.begun,
            self.targets,
            r.subject,
            r.done,
            r.total,
            r.since.elapsed().as_secs()
        );
        let _ = err.flush();
    }
}

impl Observer for Progress {
    fn started(&self, subject: &str, total: usize) {
        let mut state = self.lock();
        state.begun += 1;
        state.running = Some(Running {
            subject: subject.to_owned(),
            done: 0,
            total,
            since: Instant::now(),
        });
        self.draw(&state);
    }

    fn finished(&self, _: &CaseResult, done: usize, _: usize) {
        let mut state = self.lock();
        if let Some(r) = &mut state.running {
            r.done = done;
        }
        self.draw(&state);
    }
}

/// The ticker's task, aborted when dropped.
pub struct Ticker(tokio::task::JoinHandle<()>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}
