//! Where cases meet servers: fixtures built once per process, servers launched once per
//! (server, fixture, dialect), cases run side by side, results gathered per target.
//!
//! Used by `nbd-conform run` and by the `cargo test` harness alike. `one` runs one case on one
//! kind of server; this module runs many, side by side, against a [`Subject`]; `probe` asks a
//! target how it serves; `snapshot` is the text insta compares.

mod one;
mod probe;
mod snapshot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use super::case::{Case, Need};
use super::dead_server;
use super::outcome::{Capabilities, CaseResult, ConnectionLoss, Grade, TargetResult};
use super::run::Settings;
use crate::client::{Handshake, Target};
use crate::launch::{Launcher, Pool, ServerKind};
use crate::server::Behaviour;
use crate::Dialect;

pub use one::{
    built_fixture, run_in_pool, run_on_launched, run_on_local, run_on_target,
    run_on_target_with_bitmaps,
};
use one::{could_not_start, run_on_pooled};
use probe::{listed_bitmaps, ONE_AT_A_TIME};
pub use probe::{probe_clients, Clients};
pub use snapshot::snapshot_text;

/// Runs the cases of `dialect` against the reference server with faults injected or variants
/// taken (design §7), `parallel` at a time, on servers from `pool` (a pool of the caller's, so
/// that it can stop them afterwards). Results come back in case order.
pub async fn run_with_behaviour(
    pool: Arc<Pool>,
    cases: &[Case],
    dialect: Dialect,
    behaviour: &Behaviour,
    settings: Settings,
    parallel: usize,
) -> Vec<CaseResult> {
    let cases: Vec<Case> = cases
        .iter()
        .filter(|c| c.dialect == dialect)
        .cloned()
        .collect();
    let behaviour = Arc::new(behaviour.clone());
    let (_never, stop) = watch::channel(false);
    side_by_side(&cases, parallel, stop, &|_| {}, move |case| {
        let (pool, behaviour) = (pool.clone(), behaviour.clone());
        async move {
            let reference = Launcher::Known(ServerKind::Reference);
            run_on_pooled(&pool, &case, &reference, dialect, &behaviour, settings).await
        }
    })
    .await
    .into_iter()
    .map(|(result, _)| result)
    .collect()
}

/// Runs every case through `run`, `parallel` at a time; results come back in case order. A
/// case whose task panicked (a bug of the harness's own) is graded `error` with the panic,
/// never lost. Once `stop` turns true the cases still running are dropped (their connections
/// and own servers with them) and only the finished ones come back. `finished` hears of each
/// case as it finishes, in the order they finish.
async fn side_by_side<F, Fut>(
    cases: &[Case],
    parallel: usize,
    mut stop: watch::Receiver<bool>,
    finished: &(dyn Fn(&CaseResult) + Sync),
    run: F,
) -> Vec<(CaseResult, Capabilities)>
where
    F: Fn(Case) -> Fut,
    Fut: std::future::Future<Output = (CaseResult, Capabilities)> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut index = HashMap::new();
    for (i, case) in cases.iter().enumerate() {
        let permits = permits.clone();
        let running = run(case.clone());
        let task = tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            running.await
        });
        index.insert(task.id(), i);
    }
    let mut results: Vec<Option<(CaseResult, Capabilities)>> = vec![None; cases.len()];
    loop {
        let joined = tokio::select! {
            biased;
            () = stopped(&mut stop) => {
                tasks.abort_all();
                None
            }
            joined = tasks.join_next_with_id() => joined,
        };
        let Some(joined) = joined else {
            break;
        };
        let (id, outcome) = match joined {
            Ok((id, outcome)) => (id, outcome),
            Err(e) => {
                let case = &cases[index[&e.id()]];
                let why = format!("the case panicked: {e}");
                let result = could_not_start(case, Grade::Error, why);
                (e.id(), (result, Capabilities::default()))
            }
        };
        finished(&outcome.0);
        results[index[&id]] = Some(outcome);
    }
    // Reap the aborted tasks, so that what they held is dropped before the caller goes on; one
    // that finished in the meantime still counts.
    while let Some(joined) = tasks.join_next_with_id().await {
        if let Ok((id, outcome)) = joined {
            results[index[&id]] = Some(outcome);
        }
    }
    results.into_iter().flatten().collect()
}

/// Resolves once `stop` is true; never, if its sender is gone without saying so.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What to run cases against.
#[derive(Debug, Clone)]
pub enum Subject {
    /// A server the harness knows, launched per fixture.
    Local { kind: ServerKind, dialect: Dialect },
    /// A known server in a container, or any server from a `--spawn` template, launched per
    /// fixture. No snapshots are compared for these.
    Launched {
        launcher: Launcher,
        dialect: Dialect,
    },
    /// A server someone else runs (`--target`), with the names of its dirty bitmaps if the
    /// user gave them (`--bitmap`); otherwise they are found with LIST_META_CONTEXT.
    Remote {
        target: Target,
        dialect: Dialect,
        bitmaps: Vec<String>,
    },
}

impl Subject {
    pub fn dialect(&self) -> Dialect {
        match self {
            Subject::Local { dialect, .. }
            | Subject::Launched { dialect, .. }
            | Subject::Remote { dialect, .. } => *dialect,
        }
    }

    pub fn name(&self) -> String {
        let d = match self.dialect() {
            Dialect::Standard => "",
            Dialect::Draft => " (draft)",
        };
        match self {
            Subject::Local { kind, .. } => format!("{}{d}", kind.name()),
            Subject::Launched { launcher, .. } => format!("{}{d}", launcher.name()),
            Subject::Remote { target, .. } => format!("{target}{d}"),
        }
    }
}

/// Runs `cases` (those of the subject's dialect) against one subject, `parallel` at a time.
pub async fn run_subject(
    subject: &Subject,
    cases: &[Case],
    settings: Settings,
    parallel: usize,
) -> TargetResult {
    let (_never, stop) = watch::channel(false);
    run_subject_until(subject, cases, settings, parallel, stop).await
}

/// [`run_subject`] that ends early once `stop` turns true (`run` interrupted): the result holds
/// the cases that finished, with a note that says so.
pub async fn run_subject_until(
    subject: &Subject,
    cases: &[Case],
    settings: Settings,
    parallel: usize,
    stop: watch::Receiver<bool>,
) -> TargetResult {
    run_subject_observed(subject, cases, settings, parallel, stop, &()).await
}

/// Hears how a subject's run goes, case by case: what a progress display needs. The engine
/// itself prints nothing; `()` hears nothing.
pub trait Observer: Sync {
    /// The run of `subject` begins, with `total` cases of its dialect to run.
    fn started(&self, subject: &str, total: usize) {
        let _ = (subject, total);
    }
    /// A case finished: `done` of `total` now have (cases run again alone, after a server
    /// dropped several connections at once, are not counted twice).
    fn finished(&self, result: &CaseResult, done: usize, total: usize) {
        let _ = (result, done, total);
    }
}

impl Observer for () {}

/// [`run_subject_until`] that tells `observer` of each case as it finishes.
pub async fn run_subject_observed(
    subject: &Subject,
    cases: &[Case],
    settings: Settings,
    parallel: usize,
    stop: watch::Receiver<bool>,
    observer: &dyn Observer,
) -> TargetResult {
    let dialect = subject.dialect();
    let cases: Vec<Case> = cases
        .iter()
        .filter(|c| c.dialect == dialect)
        .cloned()
        .collect();
    let total = cases.len();
    observer.started(&subject.name(), total);
    let done = AtomicUsize::new(0);
    let finished = |result: &CaseResult| {
        let done = done.fetch_add(1, Ordering::Relaxed) + 1;
        observer.finished(result, done, total);
    };
    let (uri, server) = match subject {
        Subject::Local { kind, .. } => (
            String::from("(launched per fixture)"),
            Launcher::Known(*kind).describe(),
        ),
        Subject::Launched { launcher, .. } => {
            (String::from("(launched per fixture)"), launcher.describe())
        }
        Subject::Remote { target, .. } => (target.to_string(), "unknown".to_owned()),
    };
    let mut result = TargetResult {
        name: subject.name(),
        uri,
        server,
        dialect,
        capabilities: Capabilities::default(),
        cases: Vec::new(),
        notes: Vec::new(),
        server_deaths: 0,
        interrupted: false,
    };
    let mut parallel = parallel.max(1);
    // An unreachable target is reported once and quickly, not once per case after timeouts;
    // a target that serves one client at a time gets its cases one at a time.
    let mut bitmaps = Vec::new();
    if let Subject::Remote {
        target,
        bitmaps: given,
        ..
    } = subject
    {
        match probe_clients(target, settings.timeout).await {
            Ok(Clients::Many) => {}
            Ok(Clients::OneAtATime) => {
                parallel = 1;
                result.notes.push(ONE_AT_A_TIME.to_owned());
            }
            Err(why) => {
                result.notes.push(why.clone());
                result.cases = cases
                    .iter()
                    .map(|c| could_not_start(c, Grade::Error, why.clone()))
                    .collect();
                return result;
            }
        }
        bitmaps = if given.is_empty() {
            listed_bitmaps(target, settings.timeout).await
        } else {
            given.clone()
        };
        if !bitmaps.is_empty() {
            result.notes.push(format!(
                "dirty bitmaps {} stand in for the cases' bm0, bm1 ({})",
                bitmaps.join(", "),
                if given.is_empty() {
                    "found with LIST_META_CONTEXT; --bitmap NAME chooses"
                } else {
                    "from --bitmap"
                }
            ));
        }
    }
    if let Subject::Launched {
        launcher: Launcher::Spawn(template),
        ..
    } = subject
    {
        if !template.bitmaps().is_empty() {
            result.notes.push(format!(
                "dirty bitmaps {} (from --bitmap) stand in for the fixture's; cases judged by \
                 what the fixture's bitmaps recorded are unsupported",
                template.bitmaps().join(", ")
            ));
        }
    }
    let bitmaps = Arc::new(bitmaps);
    // On a target someone else runs, cases that write share the export with every other
    // case: they run after the others, one at a time, so that no map sees them half done.
    let writes_remote = |c: &Case| {
        matches!(subject, Subject::Remote { .. })
            && settings.writable
            && c.needs().contains(&Need::Writable)
    };
    let (writers, readers): (Vec<Case>, Vec<Case>) = cases.iter().cloned().partition(writes_remote);
    let mut outcomes = Vec::new();
    for (batch, parallel) in [(readers, parallel), (writers, 1)] {
        if *stop.borrow() {
            break;
        }
        outcomes.extend(
            side_by_side(&batch, parallel, stop.clone(), &finished, |case| {
                let (subject, bitmaps) = (subject.clone(), bitmaps.clone());
                async move { run_one(&subject, &case, &bitmaps, settings).await }
            })
            .await,
        );
    }
    // Reported in the cases' own order, whichever batch ran them.
    outcomes.sort_by_key(|(r, _)| cases.iter().position(|c| c.id == r.id));
    for (case, caps) in outcomes {
        result.capabilities.structured_replies |= caps.structured_replies;
        result.capabilities.extended_headers |= caps.extended_headers;
        for c in caps.contexts {
            if !result.capabilities.contexts.contains(&c) {
                result.capabilities.contexts.push(c);
            }
        }
        result.cases.push(case);
    }
    result.capabilities.contexts.sort();
    if *stop.borrow() {
        result.interrupted = true;
        result.notes.push(format!(
            "interrupted: {} of {} cases finished before the run was stopped; the others are \
             not in this report",
            result.cases.len(),
            cases.len()
        ));
        return result;
    }
    if result.cases.iter().any(|c| c.lost.is_some()) {
        after_lost_connections(subject, &cases, &bitmaps, settings, &mut result).await;
    }
    note_deaths(subject, &mut result);
    result
}

/// Says in the target's notes which of its launched servers died during the run, and counts
/// them (the cases they cut off were graded as each death deserved: `dead_server::cut_off`).
fn note_deaths(subject: &Subject, result: &mut TargetResult) {
    let launcher = match subject {
        Subject::Local { kind, .. } => Launcher::Known(*kind),
        Subject::Launched { launcher, .. } => launcher.clone(),
        Subject::Remote { .. } => return,
    };
    Pool::global().notice_deaths();
    let deaths = crate::launch::take_deaths(&launcher, subject.dialect());
    result.server_deaths = deaths.len();
    result.notes.extend(dead_server::deaths_note(&deaths));
}

async fn run_one(
    subject: &Subject,
    case: &Case,
    bitmaps: &[String],
    settings: Settings,
) -> (CaseResult, Capabilities) {
    match subject {
        Subject::Local { kind, dialect } => run_on_local(case, *kind, *dialect, settings).await,
        Subject::Launched { launcher, dialect } => {
            run_on_launched(case, launcher, *dialect, settings).await
        }
        Subject::Remote {
            target, dialect, ..
        } => run_on_target_with_bitmaps(case, target, *dialect, bitmaps, settings).await,
    }
}

/// Some cases lost the server. A `--target` that accepts no more connections died, and
/// [`dead_server::apportion`] says what that means for each case. A launched server is
/// restarted by the pool, so when several cases had their connection dropped (one of them may
/// have crashed a server the others shared), each of those is run again alone: a case whose
/// solo run keeps its connection was a neighbour's victim, and its solo result stands.
async fn after_lost_connections(
    subject: &Subject,
    cases: &[Case],
    bitmaps: &[String],
    settings: Settings,
    result: &mut TargetResult,
) {
    if let Subject::Remote { target, .. } = subject {
        match Handshake::start(target, settings.timeout, None).await {
            Ok(h) => {
                let _ = h.abort().await;
            }
            Err(_) => {
                let death = dead_server::apportion(&mut result.cases);
                result.notes.push(death.note());
            }
        }
        return;
    }
    let dropped: Vec<usize> = result
        .cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.lost == Some(ConnectionLoss::Dropped))
        .map(|(i, _)| i)
        .collect();
    if dropped.len() < 2 {
        return;
    }
    let mut solos = Vec::new();
    for i in dropped {
        let Some(case) = cases.iter().find(|c| c.id == result.cases[i].id) else {
            continue;
        };
        let (solo, _) = run_one(subject, case, bitmaps, settings).await;
        solos.push((i, solo));
    }
    // Only a drop that one case reproduces alone explains the others: without one, every drop
    // stays as it was seen (the server did close connections with requests outstanding).
    if !solos
        .iter()
        .any(|(_, s)| s.lost == Some(ConnectionLoss::Dropped))
    {
        result.notes.push(
            "the server dropped several cases' connections at once, and no case alone makes \
             it do so: the drops stand as seen"
                .to_owned(),
        );
        return;
    }
    let mut victims = Vec::new();
    for (i, mut solo) in solos {
        if solo.lost != Some(ConnectionLoss::Dropped) {
            victims.push(solo.id.clone());
            solo.not_checked.push(
                "run again alone: its connection had been dropped while other cases ran \
                 (another case's request took the shared server down); this is the solo result"
                    .to_owned(),
            );
            result.cases[i] = solo;
        }
    }
    if !victims.is_empty() {
        result.notes.push(format!(
            "the server dropped several cases' connections at once; run again alone, {} kept \
             theirs, so the drop was another case's doing: {}",
            victims.len(),
            victims.join(", ")
        ));
    }
}
