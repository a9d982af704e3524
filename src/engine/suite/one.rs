//! One case on one server: a server the harness launches (pooled, or of its own), or a target
//! someone else runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::client::Target;
use crate::engine::case::{Case, Need};
use crate::engine::dead_server;
use crate::engine::outcome::{Capabilities, CaseResult, Grade};
use crate::engine::run::{run_case, Settings, TargetSpec};
use crate::fixtures::{self, Built};
use crate::launch::{Launched, Launcher, Pool, ServerDeath, ServerKind};
use crate::server::Behaviour;
use crate::Dialect;

type BuiltSlot = Arc<OnceCell<Result<Arc<Built>, String>>>;

/// Builds (or finds in the cache) the images of fixture `name`, once per process.
pub async fn built_fixture(name: &str) -> Result<Arc<Built>, String> {
    static BUILT: OnceLock<Mutex<HashMap<String, BuiltSlot>>> = OnceLock::new();
    let slot = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(name.to_owned())
        .or_default()
        .clone();
    slot.get_or_init(|| async {
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let fixture = fixtures::find(&name).map_err(|e| e.to_string())?;
            fixture
                .build(&fixtures::cache_dir())
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("fixture build panicked: {e}")))
    })
    .await
    .clone()
}

/// A result for a case that could not start.
pub(super) fn could_not_start(case: &Case, grade: Grade, why: String) -> CaseResult {
    CaseResult {
        id: case.id.clone(),
        title: case.title.clone(),
        grade,
        clauses: case.clause_ids(),
        findings: Vec::new(),
        note: Some(why),
        not_checked: Vec::new(),
        lost: None,
        lost_at: None,
        last_connected: None,
        transcript: Vec::new(),
        streams: Vec::new(),
        server_log: Vec::new(),
        duration: Duration::ZERO,
    }
}

/// Runs one case against a server the harness launches (pooled per process).
pub async fn run_on_local(
    case: &Case,
    kind: ServerKind,
    dialect: Dialect,
    settings: Settings,
) -> (CaseResult, Capabilities) {
    run_on_pooled(
        Pool::global(),
        case,
        &kind.into(),
        dialect,
        &Behaviour::default(),
        settings,
    )
    .await
}

/// Runs one case against the server `launcher` starts (pooled per process). The harness built
/// the fixture, so its truth applies, as for the servers it knows.
pub async fn run_on_launched(
    case: &Case,
    launcher: &Launcher,
    dialect: Dialect,
    settings: Settings,
) -> (CaseResult, Capabilities) {
    run_in_pool(Pool::global(), case, launcher, dialect, settings).await
}

/// Runs one case against the server `launcher` starts, from a pool of the caller's (which the
/// caller shuts down), so that nothing another run does to the global pool's servers (a case
/// that crashes one) reaches it.
pub async fn run_in_pool(
    pool: &Pool,
    case: &Case,
    launcher: &Launcher,
    dialect: Dialect,
    settings: Settings,
) -> (CaseResult, Capabilities) {
    run_on_pooled(
        pool,
        case,
        launcher,
        dialect,
        &Behaviour::default(),
        settings,
    )
    .await
}

/// Runs one case against a server from `pool` that behaves as `behaviour` says (faults and
/// variants: reference server only).
pub(super) async fn run_on_pooled(
    pool: &Pool,
    case: &Case,
    launcher: &Launcher,
    dialect: Dialect,
    behaviour: &Behaviour,
    settings: Settings,
) -> (CaseResult, Capabilities) {
    if case.dialect != dialect {
        return (
            could_not_start(
                case,
                Grade::Unsupported,
                format!("the case is for the {:?} dialect", case.dialect),
            ),
            Capabilities::default(),
        );
    }
    let built = match built_fixture(&case.fixture).await {
        Ok(b) => b,
        Err(e) => {
            return (
                could_not_start(case, Grade::Error, format!("fixture {}: {e}", case.fixture)),
                Capabilities::default(),
            )
        }
    };
    // A case cut off by a death from outside the server (a kill) says nothing about the server:
    // it runs once more, on a fresh server; cut off again, it is not tested.
    let mut killed_before = None;
    loop {
        let (mut result, caps, death) =
            run_on_launch(pool, case, launcher, dialect, behaviour, settings, &built).await;
        match (death, killed_before.take()) {
            (Some(death), None) if death.from_outside => killed_before = Some(death),
            (Some(death), _) => {
                dead_server::cut_off(&mut result, &death);
                return (result, caps);
            }
            (None, Some(first)) => {
                result.not_checked.push(dead_server::run_again_note(&first));
                return (result, caps);
            }
            (None, None) => return (result, caps),
        }
    }
}

/// One run of `case` on a server `launcher` starts (or `pool` has), and the server's death if
/// it died while the case ran.
async fn run_on_launch(
    pool: &Pool,
    case: &Case,
    launcher: &Launcher,
    dialect: Dialect,
    behaviour: &Behaviour,
    settings: Settings,
    built: &Built,
) -> (CaseResult, Capabilities, Option<ServerDeath>) {
    // A case that writes gets a server of its own on a private copy of the fixture, so that
    // no other case's fixture truth is disturbed (and it may write there: settings below).
    let writes = case.needs().contains(&Need::Writable);
    // A case that may crash its server gets one of its own, so that a crash costs the
    // servers of no other case.
    let launched = if writes {
        crate::launch::launch_writable(launcher, &case.fixture, built, dialect, behaviour)
            .await
            .map(Arc::new)
            .map_err(Arc::new)
    } else if case.own_server.is_some() {
        crate::launch::launch(launcher, &case.fixture, built, dialect, behaviour)
            .await
            .map(Arc::new)
            .map_err(Arc::new)
    } else {
        pool.get(launcher, &case.fixture, built, dialect, behaviour)
            .await
    };
    let launched = match launched {
        Ok(l) => l,
        Err(e) => {
            return (
                could_not_start(case, Grade::Error, e.to_string()),
                Capabilities::default(),
                None,
            )
        }
    };
    let spec = TargetSpec {
        target: launched.target.clone(),
        dialect,
        truth: Some(Arc::new(built.truth.clone())),
        bitmaps: Vec::new(),
    };
    let settings = Settings {
        writable: writes,
        ..settings
    };
    let (result, caps) = run_case(case, &spec, settings).await;
    // A connection lost, or a failure (a close without an answer, a truncated reply), may be
    // a kill's doing: then the server gets a moment to be seen dead.
    let suspect = result.lost.is_some() || result.grade == Grade::Fail;
    let death = death_of(&launched, suspect && !launched.in_process()).await;
    (result, caps, death)
}

/// How long a server whose connection dropped gets to be seen dead: its sockets close a
/// moment before its exit status is there (a container's, before its docker client exits).
const DEATH_GRACE: Duration = Duration::from_secs(1);

/// The death of `launched`, if it has died; a `suspect` one gets [`DEATH_GRACE`] to show.
async fn death_of(launched: &Launched, suspect: bool) -> Option<ServerDeath> {
    let deadline = tokio::time::Instant::now() + DEATH_GRACE;
    while suspect && launched.is_running() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    launched.notice_death()
}

/// Runs one case against a server someone else runs (`--target`): no fixture truth.
pub async fn run_on_target(
    case: &Case,
    target: &Target,
    dialect: Dialect,
    settings: Settings,
) -> (CaseResult, Capabilities) {
    run_on_target_with_bitmaps(case, target, dialect, &[], settings).await
}

/// [`run_on_target`] with the server's own dirty bitmaps standing in for the fixture's.
pub async fn run_on_target_with_bitmaps(
    case: &Case,
    target: &Target,
    dialect: Dialect,
    bitmaps: &[String],
    settings: Settings,
) -> (CaseResult, Capabilities) {
    let spec = TargetSpec {
        target: target.clone(),
        dialect,
        truth: None,
        bitmaps: bitmaps.to_vec(),
    };
    run_case(case, &spec, settings).await
}
