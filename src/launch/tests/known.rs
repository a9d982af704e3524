//! Each known server, started on its own: what it serves, how it fails, and that stopping it
//! leaves nothing behind.

use super::*;

/// Launch, check the export through a session, drop, check everything is gone.
fn serve_and_stop(kind: ServerKind, structured: bool, contexts: &[&str]) {
    if !installed(kind) {
        return;
    }
    block_on(async {
        let launched = launch_timed(kind, Dialect::Standard).await;
        assert_eq!(launched.target.export, EXPORT_NAME);
        assert_eq!(launched.fixture, FIXTURE);
        let session = open(&launched, structured, contexts).await;
        let expected = match kind {
            ServerKind::QemuNbd => built().qcow2_size,
            _ => SIZE,
        };
        assert_eq!(session.negotiated.size, expected, "{}", kind.name());
        // The reference replays the fixture's bitmap writes, on a private copy.
        let writable = kind == ServerKind::Reference
            && built().truth.bitmaps().iter().any(|b| !b.writes.is_empty());
        assert_eq!(session.negotiated.read_only(), !writable, "{}", kind.name());
        let selected: Vec<&str> = session
            .negotiated
            .contexts
            .iter()
            .map(|(_, name)| name.as_str())
            .collect();
        for wanted in contexts {
            assert!(
                selected.contains(wanted),
                "{}: {wanted} not in {selected:?}",
                kind.name()
            );
        }
        session.disconnect().await;
        let socket = socket(&launched);
        let pid = launched.pid();
        assert!(pid.is_some() != (kind == ServerKind::Reference));
        drop(launched);
        assert_gone(kind.name(), &socket, pid);
    });
}

#[test]
fn qemu_nbd_serves_the_qcow2_with_bitmaps_and_allocation_depth() {
    serve_and_stop(
        ServerKind::QemuNbd,
        true,
        &[
            "base:allocation",
            "qemu:dirty-bitmap:bm0",
            "qemu:allocation-depth",
        ],
    );
}

#[test]
fn nbdkit_serves_the_raw_file() {
    serve_and_stop(ServerKind::Nbdkit, true, &["base:allocation"]);
}

#[test]
fn nbd_server_serves_the_raw_file_with_simple_replies() {
    serve_and_stop(ServerKind::NbdServer, false, &[]);
}

#[test]
fn reference_serves_the_raw_file() {
    serve_and_stop(ServerKind::Reference, true, &["base:allocation"]);
}

#[test]
fn reference_shows_the_fixture_writes_in_its_dirty_bitmap() {
    block_on(async {
        let launched = launch_timed(ServerKind::Reference, Dialect::Standard).await;
        let bm0 = format!("{}bm0", context::QEMU_DIRTY_BITMAP_PREFIX);
        let mut session = open(&launched, true, &["base:allocation", &bm0]).await;
        let id = session
            .negotiated
            .contexts
            .iter()
            .find(|(_, name)| *name == bm0)
            .map(|(id, _)| *id)
            .expect("bm0 selected");
        let reply = session
            .block_status(0, SIZE, 0)
            .await
            .expect("block status");
        assert_eq!(reply.error(), None);
        let descriptors = reply
            .status_chunks()
            .find(|(context, _)| *context == id)
            .map(|(_, d)| d.to_vec())
            .expect("a chunk for bm0");
        // Writes at 2M and 3.5M, 64K granules: [0,2M) clean, then dirty.
        assert_eq!(descriptors[0].flags, 0, "{descriptors:?}");
        assert_eq!(descriptors[0].length, 2 << 20, "{descriptors:?}");
        assert!(
            descriptors.iter().any(|d| d.flags == context::STATE_DIRTY),
            "{descriptors:?}"
        );
        // The replay wrote the bytes back unchanged.
        let read = session.read(2 << 20, 4096).await.expect("read");
        assert_eq!(read.read_data(), Some(vec![0x77; 4096]));
        // It is writable, but on a copy: the cached image keeps its bytes.
        let reply = session.write(0, &[0x11; 512]).await.expect("write");
        assert_eq!(reply.error(), None);
        let mut cached = [0u8; 512];
        std::fs::File::open(&built().raw)
            .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut cached, 0))
            .unwrap();
        assert_eq!(cached, [0xAA; 512]);
        session.disconnect().await;
    });
}

#[test]
fn reference_in_the_draft_dialect_shows_the_writes_too() {
    block_on(async {
        let launched = launch_timed(ServerKind::Reference, Dialect::Draft).await;
        assert_eq!(launched.dialect, Dialect::Draft);
        let mut session = open(&launched, false, &[]).await;
        assert_eq!(session.negotiated.size, SIZE);
        assert!(session.negotiated.advertises_draft_status());
        let reply = session
            .draft_status(0, SIZE, DraftQuery::Dirty)
            .await
            .expect("GET_LBA_STATUS");
        let crate::client::ReplyBody::Draft {
            error: 0,
            descriptors,
            ..
        } = &reply.body
        else {
            panic!("draft reply expected: {:?}", reply.body);
        };
        let status_at = |offset: u64| {
            descriptors
                .iter()
                .find(|d| d.offset <= offset && offset < d.offset + u64::from(d.length))
                .map(|d| d.status)
        };
        assert_eq!(status_at(0), Some(draft::STATE_CLEAN), "{descriptors:?}");
        assert!(
            matches!(
                status_at(2 << 20),
                Some(draft::STATE_DIRTY | draft::STATE_DIRTY_DEALLOCATED)
            ),
            "{descriptors:?}"
        );
        session.disconnect().await;
    });
}

#[test]
fn only_the_reference_speaks_the_draft() {
    let err = block_on(launch_known(ServerKind::Nbdkit, built(), Dialect::Draft))
        .expect_err("nbdkit has no draft dialect");
    assert!(matches!(err, LaunchError::Setup(_)), "{err}");
}

#[test]
fn a_server_that_fails_to_start_reports_its_output() {
    if !installed(ServerKind::QemuNbd) {
        return;
    }
    // qemu-nbd -f qcow2 on the raw file refuses it.
    let mut broken = built().clone();
    broken.qcow2 = broken.raw.clone();
    let err = block_on(launch_known(
        ServerKind::QemuNbd,
        &broken,
        Dialect::Standard,
    ))
    .expect_err("not a qcow2");
    let LaunchError::NotReady { output, .. } = &err else {
        panic!("NotReady expected, got {err}");
    };
    assert!(output.contains("qcow2"), "{err}");
    assert!(
        err.to_string().contains("qemu-nbd did not come up"),
        "{err}"
    );
}

#[test]
fn a_missing_image_is_a_fixture_error() {
    let mut broken = built().clone();
    broken.raw = PathBuf::from("/nonexistent/raw.img");
    for kind in [ServerKind::Reference, ServerKind::Nbdkit] {
        if !installed(kind) {
            continue;
        }
        let err = block_on(launch_known(kind, &broken, Dialect::Standard)).expect_err("no image");
        assert!(
            matches!(err, LaunchError::Fixture(_)),
            "{}: {err}",
            kind.name()
        );
    }
}

#[test]
fn not_installed_names_the_package() {
    let message = LaunchError::NotInstalled(ServerKind::Nbdkit).to_string();
    assert!(message.contains("apt-get install nbdkit"), "{message}");
    let message = LaunchError::NotInstalled(ServerKind::QemuNbd).to_string();
    assert!(message.contains("apt-get install qemu-utils"), "{message}");
}

#[test]
fn versions_of_installed_servers() {
    assert_eq!(
        ServerKind::Reference.installed_version().as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    for kind in ServerKind::ALL {
        if let Some(version) = kind.installed_version() {
            eprintln!("{} {version}", kind.name());
            assert!(
                version.starts_with(|c: char| c.is_ascii_digit()),
                "{version}"
            );
        }
    }
}

#[test]
fn children_outlive_the_thread_that_asked_for_them() {
    // PDEATHSIG fires when the forking thread exits: the launch happens on a thread that ends
    // at once, and the server must still be there afterwards.
    if !installed(ServerKind::Nbdkit) {
        return;
    }
    let launched =
        std::thread::spawn(|| block_on(launch_timed(ServerKind::Nbdkit, Dialect::Standard)))
            .join()
            .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = launched.pid().expect("a process");
    assert!(
        ForeignProcess::find(pid).is_some(),
        "nbdkit died with its launching thread"
    );
    assert!(accepts(&socket(&launched)));
}

#[test]
fn only_the_reference_server_takes_faults() {
    let err = block_on(launch(
        &ServerKind::Nbdkit.into(),
        FIXTURE,
        built(),
        Dialect::Standard,
        &Behaviour::faults(&[Fault::Hang]),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("reference server only"), "{err}");
}

/// A server for a case that writes: writable, on a copy that is gone with the server, and
/// the fixture's images are untouched by what a client wrote.
fn writes_on_a_private_copy(kind: ServerKind) {
    if !installed(kind) {
        return;
    }
    let before = (
        std::fs::read(&built().raw).unwrap(),
        std::fs::read(&built().qcow2).unwrap(),
    );
    block_on(async {
        let launched = launch_writable(&kind.into(), FIXTURE, built(), Dialect::Standard, &plain())
            .await
            .unwrap_or_else(|e| panic!("launch {}: {e}", kind.name()));
        let copy = launched
            .copy
            .as_ref()
            .expect("a private copy")
            .path()
            .to_owned();
        let mut session = open(&launched, false, &[]).await;
        assert!(!session.negotiated.read_only(), "{}", kind.name());
        let reply = session.write(512 << 10, &[0xC3; 4096]).await.unwrap();
        assert_eq!(reply.error(), None, "{}", kind.name());
        let back = session.read(512 << 10, 4096).await.unwrap();
        assert_eq!(back.read_data(), Some(vec![0xC3; 4096]), "{}", kind.name());
        session.disconnect().await;
        drop(launched);
        assert!(
            !copy.exists(),
            "{}: {} is left behind",
            kind.name(),
            copy.display()
        );
    });
    let after = (
        std::fs::read(&built().raw).unwrap(),
        std::fs::read(&built().qcow2).unwrap(),
    );
    assert!(
        before == after,
        "{} changed the fixture's images",
        kind.name()
    );
}

#[test]
fn every_known_server_writes_on_a_private_copy() {
    for kind in ServerKind::ALL {
        writes_on_a_private_copy(kind);
    }
}
