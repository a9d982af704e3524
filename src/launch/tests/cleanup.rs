//! Cleanup: the watchdog that acts when the harness dies without a word, and the temp dirs.

use super::*;

/// A stand-in daemon (`sleep`), and a watchdog on `dir` told to terminate it.
fn watched_daemon(dir: &Path) -> (std::process::Child, ForeignProcess, Watchdog) {
    let daemon = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let process = ForeignProcess::find(daemon.id() as i32).expect("sleep runs");
    let mut watchdog = Watchdog::start(dir).unwrap();
    watchdog.watch(process).unwrap();
    (daemon, process, watchdog)
}

#[test]
fn a_watchdog_cleans_up_when_the_harness_is_gone() {
    let scratch = scratch::create(ServerKind::NbdServer.name()).unwrap();
    let dir = scratch.path().to_owned();
    std::fs::write(scratch.path().join("leftover"), b"x").unwrap();
    let (mut daemon, _, watchdog) = watched_daemon(scratch.path());
    // The harness "dies": its end of the pipe closes without a word.
    watchdog.abandon();
    let status = daemon.wait().unwrap();
    assert!(
        !status.success(),
        "the watchdog should have terminated it: {status}"
    );
    assert!(
        !dir.exists(),
        "the watchdog should have removed {}",
        dir.display()
    );
}

#[test]
fn a_dismissed_watchdog_does_nothing() {
    let scratch = scratch::create(ServerKind::NbdServer.name()).unwrap();
    let (mut daemon, process, watchdog) = watched_daemon(scratch.path());
    drop(watchdog);
    assert!(scratch.path().exists());
    assert!(process.is_alive());
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn a_temp_dir_is_private_fits_its_socket_and_is_removed_on_drop() {
    use std::os::unix::fs::PermissionsExt;
    let long_label = "a-program-name-far-longer-than-any-socket-path-allows".repeat(3);
    let dir = scratch::create(&long_label).unwrap();
    let path = dir.path().to_owned();
    let socket = path.join(scratch::SOCKET);
    // sun_path holds 108 bytes with the NUL.
    assert!(socket.as_os_str().len() < 108, "{}", socket.display());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{}", path.display());
    std::fs::write(&socket, b"x").unwrap();
    drop(dir);
    assert!(!path.exists(), "{} outlived its TempDir", path.display());
}

#[test]
fn how_a_server_ended_says_whether_it_was_from_outside() {
    use super::guard::Running;
    for (script, said, outside) in [
        ("kill -KILL $$", "signal 9 (SIGKILL)", true),
        ("kill -TERM $$", "signal 15 (SIGTERM)", true),
        ("kill -ABRT $$", "signal 6 (SIGABRT)", false),
        ("exit 0", "status 0", true),
        ("exit 3", "status 3", false),
    ] {
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .spawn()
            .unwrap();
        let mut running = Running::Child(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        let ended = loop {
            if let Some(ended) = running.ended() {
                break ended;
            }
            assert!(Instant::now() < deadline, "{script} did not end");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(ended.0.contains(said), "{script}: {}", ended.0);
        assert_eq!(ended.1, outside, "{script}: {}", ended.0);
    }
}
