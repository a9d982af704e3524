//! The launcher's own tokio runtime.
//!
//! Callers are short-lived (a current-thread runtime per test case), but launched servers are
//! shared by every case of the process, so launches and the reference server's accept loops run
//! on one process-wide runtime with two workers, owned by a thread that lives as long as the
//! process.

use std::sync::OnceLock;

use tokio::runtime::Handle;

const WORKERS: usize = 2;

pub(super) fn handle() -> Result<&'static Handle, String> {
    static HANDLE: OnceLock<Result<Handle, String>> = OnceLock::new();
    HANDLE.get_or_init(start).as_ref().map_err(Clone::clone)
}

fn start() -> Result<Handle, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name("nbd-conform-launch")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build the launcher runtime: {e}"))?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("nbd-conform-launch-owner".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(|e| format!("cannot start the launcher runtime thread: {e}"))?;
    Ok(handle)
}
