//! Known servers in the peers' container image; skipped when the image is not built.

use super::*;

/// True when docker answers and the peers' image is built (`docker/build-image.sh`); otherwise
/// prints why the caller skips (a failure under `NBD_CONFORM_REQUIRE_PEERS=1`).
fn have_image() -> bool {
    match container_version(ServerKind::Nbdkit, DEFAULT_IMAGE) {
        Ok(_) => true,
        Err(e) => {
            if std::env::var_os("NBD_CONFORM_REQUIRE_PEERS").is_some_and(|v| v == "1") {
                panic!("required peer missing: {e}");
            }
            eprintln!("SKIP: {e}");
            false
        }
    }
}

/// Whether a container whose name starts with `prefix` exists (running or not).
fn container_exists(prefix: &str) -> bool {
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", &format!("name=^{prefix}")])
        .output()
        .expect("docker ps");
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// Container names start with the scratch dir's name (see `container.rs`).
fn container_name(launched: &Launched) -> String {
    let socket = socket(launched);
    let dir = socket.parent().expect("socket in a temp dir");
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn known_servers_serve_from_a_container_and_leave_nothing_behind() {
    if !have_image() {
        return;
    }
    block_on(async {
        for kind in [
            ServerKind::QemuNbd,
            ServerKind::Nbdkit,
            ServerKind::NbdServer,
        ] {
            let launcher = Launcher::Container {
                kind,
                image: DEFAULT_IMAGE.to_owned(),
            };
            let launched = launch(&launcher, FIXTURE, built(), Dialect::Standard, &plain())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", launcher.name()));
            assert_eq!(launched.server, launcher.name());
            let structured = kind != ServerKind::NbdServer;
            let contexts: &[&str] = if structured {
                &[context::BASE_ALLOCATION]
            } else {
                &[]
            };
            let session = open(&launched, structured, contexts).await;
            let expected = match kind {
                ServerKind::QemuNbd => built().qcow2_size,
                _ => SIZE,
            };
            assert_eq!(session.negotiated.size, expected, "{}", launcher.name());
            session.disconnect().await;
            let name = container_name(&launched);
            assert!(container_exists(&name), "{name} should be running");
            let socket = socket(&launched);
            drop(launched);
            assert!(!container_exists(&name), "{name} outlived its stop");
            assert_gone(&launcher.name(), &socket, None);
        }
    });
}

/// Starts a `sleep` container with `labels` (label=value each); returns its id.
fn labelled_sleeper(labels: &[String]) -> String {
    let mut args = vec!["run", "-d", "--network", "none"];
    for label in labels {
        args.extend(["--label", label.as_str()]);
    }
    args.extend([DEFAULT_IMAGE, "sleep", "60"]);
    let started = std::process::Command::new("docker")
        .args(&args)
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");
    String::from_utf8_lossy(&started.stdout).trim().to_owned()
}

fn exists(id: &str) -> bool {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("id={id}"),
        ])
        .output()
        .expect("docker ps");
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

fn force_remove(id: &str) {
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", id])
        .output();
}

#[test]
fn the_run_watchdog_removes_the_containers_of_a_dead_harness() {
    if !have_image() {
        return;
    }
    // A run id of its own, so that this process's real run is not disturbed.
    let run = format!("{}-1", std::process::id());
    let id = labelled_sleeper(&[format!("{}={run}", reaper::RUN_LABEL)]);
    let (mut watchdog, pipe) = reaper::start_watchdog(&run).unwrap();
    // The harness "dies": its end of the pipe closes without a word.
    drop(pipe);
    let _ = watchdog.wait();
    let gone = !exists(&id);
    if !gone {
        force_remove(&id);
    }
    assert!(gone, "the run watchdog should have removed container {id}");
}

#[test]
fn a_dead_runs_containers_are_swept_and_a_live_ones_are_not() {
    if !have_image() {
        return;
    }
    let pidns = reaper::pid_namespace();
    let label = |run: &str| {
        vec![
            format!("{}={run}", reaper::RUN_LABEL),
            format!("{}={pidns}", reaper::PIDNS_LABEL),
        ]
    };
    // No process has a pid past pid_max; this process's own run is alive.
    let dead = labelled_sleeper(&label("999999999-1"));
    let me = std::process::id();
    let alive_run = format!("{me}-{}", start_time(me as i32).unwrap());
    let alive = labelled_sleeper(&label(&alive_run));
    reaper::sweep_dead_runs(&pidns);
    let (dead_gone, alive_kept) = (!exists(&dead), exists(&alive));
    force_remove(&dead);
    force_remove(&alive);
    assert!(dead_gone, "the dead run's container {dead} should be gone");
    assert!(alive_kept, "a live run's container {alive} must stay");
}

#[test]
fn a_launched_container_carries_the_run_label() {
    if !have_image() {
        return;
    }
    let launcher = Launcher::Container {
        kind: ServerKind::Nbdkit,
        image: DEFAULT_IMAGE.to_owned(),
    };
    let launched = block_on(launch(
        &launcher,
        FIXTURE,
        built(),
        Dialect::Standard,
        &plain(),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let name = container_name(&launched);
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "--filter", &format!("name=^{name}"), "--format"])
        .arg(format!("{{{{.Label \"{}\"}}}}", reaper::RUN_LABEL))
        .output()
        .unwrap();
    let run = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    drop(launched);
    assert!(
        reaper::run_is_alive(&run),
        "label {run:?} names this live run"
    );
}

#[test]
fn a_missing_image_says_how_to_build_it() {
    let launcher = Launcher::Container {
        kind: ServerKind::Nbdkit,
        image: "nbd-conform-no-such-image:none".to_owned(),
    };
    let err = block_on(launch(
        &launcher,
        FIXTURE,
        built(),
        Dialect::Standard,
        &plain(),
    ))
    .expect_err("no such image");
    let text = err.to_string();
    assert!(
        text.contains("docker/build-image.sh") || text.contains("cannot run docker"),
        "{text}"
    );
}
