//! One tokio runtime per fuzzing process, reused by every iteration.
//!
//! A current-thread runtime keeps an iteration deterministic and cheap; its blocking pool (the
//! reference server reads the image through `spawn_blocking`) survives between iterations.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::runtime::Runtime;

/// Wall-clock bound on one iteration's async part. Nothing in a harness waits on a peer that
/// stays silent (every fake peer closes its side once its bytes are written), so reaching this
/// means the code under test hung; it is reported as a crash, with the input.
pub const ITERATION_BOUND: Duration = Duration::from_secs(5);

pub fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // libFuzzer's main is C's, so Rust's usual "ignore SIGPIPE" is not in force: a write to a
        // socket whose peer already left must fail with EPIPE, not kill the fuzzer.
        // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(4)
            .build()
            .expect("cannot build the tokio runtime")
    })
}

/// Runs `fut` to completion, panicking (so libFuzzer saves the input) if it takes longer than
/// [`ITERATION_BOUND`].
pub fn run_bounded<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    rt().block_on(async {
        match tokio::time::timeout(ITERATION_BOUND, fut).await {
            Ok(out) => out,
            Err(_) => panic!("{what} did not finish within {ITERATION_BOUND:?}: a hang"),
        }
    })
}

/// The fake server's listening socket of a client harness, one per fuzzing process, in a temp
/// dir of its own that is removed when the process exits.
pub struct Rig {
    pub listener: UnixListener,
    pub socket: PathBuf,
}

static DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_socket_dir() {
    if let Some(dir) = DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

pub fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("nbd-conform-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("cannot create the socket directory");
        let socket = dir.join("server.sock");
        let _ = DIR.set(dir);
        // SAFETY: registers a plain extern "C" function with no captured state.
        unsafe {
            libc::atexit(remove_socket_dir);
        }
        let listener = rt()
            .block_on(async { UnixListener::bind(&socket) })
            .expect("cannot bind the fake server's socket");
        Rig { listener, socket }
    })
}
