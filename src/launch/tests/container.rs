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

#[test]
fn a_watchdog_removes_the_container_of_a_dead_harness() {
    if !have_image() {
        return;
    }
    let scratch = scratch::create("watchdog-container").unwrap();
    let name = scratch
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let started = std::process::Command::new("docker")
        .args(["run", "-d", "--rm", "--network", "none", "--name", &name])
        .args([DEFAULT_IMAGE, "sleep", "60"])
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");
    let mut watchdog = Watchdog::start(scratch.path()).unwrap();
    watchdog.watch_container(&name).unwrap();
    watchdog.abandon();
    let gone = !container_exists(&name);
    if !gone {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &name])
            .output();
    }
    assert!(gone, "the watchdog should have removed container {name}");
    assert!(!scratch.path().exists());
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
