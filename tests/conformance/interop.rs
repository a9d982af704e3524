//! Interop proof: `nbd-conform map` against real servers (qemu-nbd, nbdkit, our own `serve`),
//! compared entry by entry with what libnbd's block_status callback reports for the same
//! requests, plus the draft dialect between our client and our server.
//!
//! A test skips (printing why) only when a peer is not installed; `.ci/run` installs them all.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
// Maps and replies compared whole: a mismatch shows as a diff.
use nbd_conform::client::{DraftTrailer, ReplyBody, Session, SessionOptions, Target};
use nbd_conform::wire::consts::{errno, option, reply_type};
use nbd_conform::wire::draft::DraftQuery;
use nbd_conform::Dialect;
use pretty_assertions::assert_eq;

const K: u64 = 1024;
const M: u64 = 1024 * 1024;

fn entries_for<'a>(entries: &'a [NamedEntry], context: &str) -> Vec<&'a NamedEntry> {
    entries.iter().filter(|e| e.context == context).collect()
}

/// The entries of one context tile [0, size) with no gap or overlap.
fn assert_tiles(entries: &[&NamedEntry], size: u64) {
    let mut at = 0;
    for e in entries {
        assert_eq!(e.offset, at, "gap or overlap before {e:?}");
        assert!(e.length > 0, "zero-length entry {e:?}");
        at += e.length;
    }
    assert_eq!(at, size, "entries end at {at}, export is {size}");
}

/// The flags reported for the byte at `offset`.
fn flags_at(entries: &[&NamedEntry], offset: u64) -> u64 {
    entries
        .iter()
        .find(|e| e.offset <= offset && offset < e.offset + e.length)
        .map(|e| e.flags)
        .unwrap_or_else(|| panic!("no entry covers {offset}"))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn session_options(contexts: &[&str], dialect: Dialect) -> SessionOptions {
    SessionOptions {
        timeout: Duration::from_secs(10),
        contexts: contexts.iter().map(|s| s.to_string()).collect(),
        dialect,
        ..SessionOptions::default()
    }
}

fn qemu_nbd_qcow2_maps_match_libnbd() {
    if !(have("qemu-nbd") && have("qemu-img") && have("qemu-io") && have_libnbd_python()) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mixed_4m_qcow2();
    let sock = dir.path().join("qemu.sock");
    let _qemu = start_peer(
        "qemu-nbd",
        &[
            "-f",
            "qcow2",
            "-r",
            "-t",
            "-e",
            "4",
            "-x",
            "img",
            "-B",
            "bm0",
            "-B",
            "bm1",
            "-A",
            "-k",
            sock.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
        &sock,
    );
    let uri = unix_uri(&sock, "img");

    let contexts = [
        "base:allocation",
        "qemu:dirty-bitmap:bm0",
        "qemu:dirty-bitmap:bm1",
        "qemu:allocation-depth",
    ];
    for c in contexts {
        let ours = assert_same_as_libnbd(&uri, &["--context", c], &["--context", c]);
        assert_tiles(&entries_for(&ours, c), 4 * M);
    }
    // All four contexts in one request each, then REQ_ONE, then small pipelined windows.
    let all: Vec<&str> = contexts.iter().flat_map(|c| ["--context", *c]).collect();
    let together = assert_same_as_libnbd(&uri, &all, &all);
    let mut req_one = all.clone();
    req_one.push("--req-one");
    assert_same_as_libnbd(&uri, &req_one, &req_one);
    let mut windowed = all.clone();
    windowed.extend(["--window", "262144"]);
    assert_same_as_libnbd(&uri, &windowed, &windowed);

    // What research/peers.md §1.1 observed on this fixture.
    let base = entries_for(&together, "base:allocation");
    assert_eq!(
        (
            base[0].offset,
            base[0].length,
            base[0].flags,
            base[0].state.as_str()
        ),
        (0, 64 * K, 0, "data")
    );
    assert_eq!(flags_at(&base, 2 * M), 0, "the 0x55 data at 2M");
    assert_eq!(
        flags_at(&base, M) & 2,
        2,
        "the zero cluster at 1M reads as zeros"
    );
    let bm0 = entries_for(&together, "qemu:dirty-bitmap:bm0");
    let dirty0: Vec<(u64, u64)> = bm0
        .iter()
        .filter(|e| e.state == "dirty")
        .map(|e| (e.offset, e.length))
        .collect();
    assert_eq!(
        dirty0,
        vec![(2 * M, 64 * K), (3584 * K, 64 * K)],
        "bm0 (64K granules) dirty where written"
    );
    let bm1 = entries_for(&together, "qemu:dirty-bitmap:bm1");
    let dirty1: Vec<(u64, u64)> = bm1
        .iter()
        .filter(|e| e.state == "dirty")
        .map(|e| (e.offset, e.length))
        .collect();
    assert_eq!(
        dirty1,
        vec![(2 * M, 128 * K), (3584 * K, 128 * K)],
        "bm1 (128K granules) dirty where written"
    );
    let depth = entries_for(&together, "qemu:allocation-depth");
    assert_eq!(depth[0].state, "local");
    assert_eq!(
        flags_at(&depth, 3 * M),
        1,
        "write -z -u still allocates the cluster locally"
    );

    // Extended headers (qemu >= 8.2): same descriptors through BLOCK_STATUS_EXT.
    let mut extended = all.clone();
    extended.push("--extended");
    assert_eq!(
        strip(&our_map(&uri, &extended)),
        strip(&together),
        "extended headers change nothing on this export"
    );
}

fn nbdkit_maps_match_libnbd() {
    if !(have("nbdkit") && have_libnbd_python()) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let memory = dir.path().join("memory.sock");
    let data = dir.path().join("data.sock");
    let eval = dir.path().join("eval.sock");
    let _memory = start_peer(
        "nbdkit",
        &[
            "-f",
            "--exit-with-parent",
            "-U",
            memory.to_str().unwrap(),
            "memory",
            "4M",
        ],
        &memory,
    );
    let _data = start_peer(
        "nbdkit",
        &[
            "-f",
            "--exit-with-parent",
            "-U",
            data.to_str().unwrap(),
            "data",
            "@65536 1 2 3 4 @1048576 0 0 0 0 @3145728 ( \"hello\" )*100",
            "size=4M",
        ],
        &data,
    );
    let _eval = start_peer(
        "nbdkit",
        &[
            "-f", "--exit-with-parent", "-U", eval.to_str().unwrap(), "eval",
            "get_size=echo 1M",
            "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
            "can_extents=exit 0",
            "extents=echo 0 64K; echo 64K 64K hole; echo 128K 64K zero; echo 192K 64K hole,zero; echo 256K 768K",
        ],
        &eval,
    );

    for sock in [&memory, &data, &eval] {
        let uri = unix_uri(sock, "");
        assert_same_as_libnbd(&uri, &[], &[]);
        assert_same_as_libnbd(&uri, &["--req-one"], &["--req-one"]);
        // nbdkit's final descriptor overshoots small requests: windows exercise the clipping.
        assert_same_as_libnbd(&uri, &["--window", "40960"], &["--window", "40960"]);
    }

    let eval_map = our_map(&unix_uri(&eval, ""), &[]);
    let got: Vec<(u64, u64, u64, &str)> = eval_map
        .iter()
        .map(|e| (e.offset, e.length, e.flags, e.state.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 64 * K, 0, "data"),
            (64 * K, 64 * K, 1, "hole"),
            (128 * K, 64 * K, 2, "zero"),
            (192 * K, 64 * K, 3, "hole,zero"),
            (256 * K, 768 * K, 0, "data")
        ],
        "every HOLE/ZERO combination, as the eval script states it"
    );
    let memory_map = our_map(&unix_uri(&memory, ""), &[]);
    assert!(
        memory_map.iter().all(|e| e.flags == 3),
        "an untouched memory disk is all hole,zero: {memory_map:?}"
    );
}

/// A sparse raw image: data, allocated zeros, holes, and a lone 100-byte write.
fn raw_fixture(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::FileExt;
    let path = dir.join("sparse.raw");
    let f = std::fs::File::create(&path).expect("create image");
    f.set_len(4 * M).expect("size image");
    f.write_all_at(&vec![0xAA; 64 * K as usize], 0)
        .expect("write");
    f.write_all_at(&vec![0; 64 * K as usize], M)
        .expect("write zeros");
    f.write_all_at(&vec![0x55; 128 * K as usize], 2 * M)
        .expect("write");
    f.write_all_at(&[0x11; 100], 3 * M + 10).expect("write");
    f.sync_all().expect("sync");
    path
}

fn start_serve(dir: &Path, image: &Path, extra: &[&str]) -> (Peer, std::path::PathBuf) {
    let sock = dir.join(format!("serve-{}.sock", extra.len()));
    let mut args = vec![
        "serve",
        image.to_str().unwrap(),
        "--socket",
        sock.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (start_peer(bin(), &args, &sock), sock)
}

fn reference_server_maps_match_libnbd_and_truth() {
    if !have_libnbd_python() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let image = raw_fixture(dir.path());
    let (_server, sock) = start_serve(
        dir.path(),
        &image,
        &["--writable", "--bitmap", "bm0", "--bitmap", "bm1:128K"],
    );
    let uri = unix_uri(&sock, "");

    // Dirty the bitmaps through the server, as a backup tool's guest would.
    let target: Target = uri.parse().unwrap();
    block_on(async {
        let mut s = Session::open(&target, &session_options(&[], Dialect::Standard))
            .await
            .expect("connect");
        let r = s.write(2 * M + 8 * K, &[0x77; 4096]).await.expect("write");
        assert_eq!(r.error(), None);
        let r = s.write(3584 * K, &[0x66; 64 * 1024]).await.expect("write");
        assert_eq!(r.error(), None);
        s.disconnect().await;
    });

    let contexts = [
        "base:allocation",
        "qemu:dirty-bitmap:bm0",
        "qemu:dirty-bitmap:bm1",
    ];
    let all: Vec<&str> = contexts.iter().flat_map(|c| ["--context", *c]).collect();
    let together = assert_same_as_libnbd(&uri, &all, &all);
    for c in contexts {
        assert_same_as_libnbd(&uri, &["--context", c], &["--context", c]);
        assert_tiles(&entries_for(&together, c), 4 * M);
    }
    let mut req_one = all.clone();
    req_one.push("--req-one");
    assert_same_as_libnbd(&uri, &req_one, &req_one);
    let mut windowed = all.clone();
    windowed.extend(["--window", "262144"]);
    assert_same_as_libnbd(&uri, &windowed, &windowed);
    let mut extended = all.clone();
    extended.push("--extended");
    assert_eq!(
        strip(&our_map(&uri, &extended)),
        strip(&together),
        "BLOCK_STATUS_EXT carries the same descriptors"
    );

    // Fixture truth: data is never called zero; allocated zeros and holes read as zeros.
    let base = entries_for(&together, "base:allocation");
    for data_at in [
        0,
        64 * K - 1,
        2 * M,
        2 * M + 8 * K,
        3 * M + 10,
        3 * M + 109,
        3584 * K,
    ] {
        assert_eq!(
            flags_at(&base, data_at),
            0,
            "data at {data_at} reported as {}",
            flags_at(&base, data_at)
        );
    }
    assert_eq!(
        flags_at(&base, M),
        2,
        "written zeros are allocated and read as zeros"
    );
    assert_eq!(flags_at(&base, 512 * K), 3, "a hole is hole,zero");
    let dirty = |c: &str| -> Vec<(u64, u64)> {
        entries_for(&together, c)
            .iter()
            .filter(|e| e.flags == 1)
            .map(|e| (e.offset, e.length))
            .collect()
    };
    assert_eq!(
        dirty("qemu:dirty-bitmap:bm0"),
        vec![(2 * M, 64 * K), (3584 * K, 64 * K)]
    );
    assert_eq!(
        dirty("qemu:dirty-bitmap:bm1"),
        vec![(2 * M, 128 * K), (3584 * K, 128 * K)]
    );
}

fn draft_dialect_between_our_client_and_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = raw_fixture(dir.path());
    let (_server, sock) = start_serve(
        dir.path(),
        &image,
        &["--dialect", "draft", "--writable", "--bitmap", "bm0"],
    );
    let uri = unix_uri(&sock, "");
    let target: Target = uri.parse().unwrap();

    block_on(async {
        let mut s = Session::open(&target, &session_options(&[], Dialect::Draft))
            .await
            .expect("connect");
        assert!(
            s.negotiated.advertises_draft_status(),
            "bit 7 = NBD_FLAG_SEND_GET_LBA_STATUS"
        );
        assert_eq!(
            s.write(2 * M + 8 * K, &[0x77; 4096])
                .await
                .expect("write")
                .error(),
            None
        );

        // The unknown-type fallback: exactly one descriptor equal to the request, status 0.
        let r = s
            .draft_status(5 * K, 7 * K, DraftQuery::Other(9))
            .await
            .expect("fallback");
        match &r.body {
            ReplyBody::Draft {
                error: 0,
                trailer: DraftTrailer::Length(14),
                descriptors,
            } => {
                assert_eq!(
                    (
                        descriptors[0].offset,
                        descriptors[0].length,
                        descriptors[0].status
                    ),
                    (5 * K, 7 * 1024, 0)
                );
            }
            other => panic!("fallback reply {other:?}"),
        }
        // Errors are followed by the parameter-length trailer, and the stream stays in sync.
        for (offset, length) in [(4 * M, 512), (4 * M - 512, 1024), (0, 0)] {
            let r = s
                .draft_status(offset, length, DraftQuery::Allocated)
                .await
                .expect("error reply");
            match &r.body {
                ReplyBody::Draft {
                    error,
                    trailer: DraftTrailer::Length(0),
                    ..
                } => assert_eq!(*error, errno::EINVAL, "{offset}+{length}"),
                other => panic!("{offset}+{length}: {other:?}"),
            }
        }
        let r = s
            .draft_status(0, 64 * K, DraftQuery::Allocated)
            .await
            .expect("after errors");
        assert_eq!(r.error(), None);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        s.disconnect().await;
    });

    let alloc = our_map(&uri, &["--dialect", "draft"]);
    let alloc: Vec<&NamedEntry> = alloc.iter().collect();
    assert_tiles(&alloc, 4 * M);
    assert_eq!(alloc[0].state, "allocated");
    assert_eq!(flags_at(&alloc, M), 1, "written zeros are ZEROED (draft 1)");
    assert_eq!(
        flags_at(&alloc, 512 * K),
        2,
        "a hole is DEALLOCATED (draft 2)"
    );
    assert_eq!(flags_at(&alloc, 2 * M + 8 * K), 0);
    let dirty = our_map(&uri, &["--dialect", "draft", "--context", "draft:dirty"]);
    let dirty: Vec<&NamedEntry> = dirty.iter().collect();
    assert_tiles(&dirty, 4 * M);
    let dirty_ranges: Vec<(u64, u64)> = dirty
        .iter()
        .filter(|e| e.state == "dirty")
        .map(|e| (e.offset, e.length))
        .collect();
    assert_eq!(
        dirty_ranges,
        vec![(2 * M, 64 * K)],
        "draft DIRTY is 0, CLEAN is 1"
    );

    // A draft client against a standard server is told plainly, with "could not test".
    let (_standard, std_sock) = start_serve(dir.path(), &image, &[]);
    assert_cmd::Command::new(bin())
        .args(["map", &unix_uri(&std_sock, ""), "--dialect", "draft"])
        .timeout(Duration::from_secs(60))
        .assert()
        .code(3)
        .stderr(predicates::str::contains("bit 7"));
}

fn reference_server_negotiation_follows_the_spec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = raw_fixture(dir.path());
    let (_server, sock) = start_serve(dir.path(), &image, &["--export", "disk", "--bitmap", "bm0"]);
    let target: Target = unix_uri(&sock, "disk").parse().unwrap();
    block_on(async {
        let mut hs = nbd_conform::client::Handshake::start(&target, Duration::from_secs(5), None)
            .await
            .expect("connect");
        // SET before structured replies is refused; LIST works.
        let (_, last) = hs
            .set_meta_context("disk", &["base:allocation"])
            .await
            .unwrap();
        assert_eq!(last, reply_type::ERR_INVALID);
        assert_eq!(hs.structured_reply().await.unwrap(), reply_type::ACK);
        assert_eq!(
            hs.structured_reply().await.unwrap(),
            reply_type::ERR_INVALID,
            "SR twice"
        );
        let (listed, last) = hs.list_meta_context("disk", &[]).await.unwrap();
        assert_eq!(last, reply_type::ACK);
        let names: Vec<&str> = listed.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["base:allocation", "qemu:dirty-bitmap:bm0"]);
        let (listed, _) = hs.list_meta_context("disk", &["base:"]).await.unwrap();
        assert_eq!(listed.len(), 1);
        for q in ["base:", "qemu:", "x-unknown:thing", "base:no-such-leaf"] {
            let (selected, last) = hs.set_meta_context("disk", &[q]).await.unwrap();
            assert_eq!((selected.len(), last), (0, reply_type::ACK), "SET {q}");
        }
        let (selected, _) = hs
            .set_meta_context(
                "disk",
                &[
                    "base:allocation",
                    "base:allocation",
                    "qemu:dirty-bitmap:bm0",
                ],
            )
            .await
            .unwrap();
        assert_eq!(selected.len(), 2, "duplicates select once");
        let (_, last) = hs
            .set_meta_context("nope", &["base:allocation"])
            .await
            .unwrap();
        assert_eq!(last, reply_type::ERR_UNKNOWN);
        hs.send_option(0x7fff_1234, b"junk").await.unwrap();
        assert_eq!(
            hs.read_option_reply(0x7fff_1234)
                .await
                .unwrap()
                .header
                .reply_type,
            reply_type::ERR_UNSUP
        );
        let (_, last) = hs.info_or_go(option::INFO, "nope", &[]).await.unwrap();
        assert_eq!(last.header.reply_type, reply_type::ERR_UNKNOWN);
        // The failed SET for "nope" cleared the selection: block status is refused.
        let mut s = hs.go("disk", Dialect::Standard).await.expect("GO");
        assert!(s.negotiated.contexts.is_empty());
        let r = s.block_status(0, 4096, 0).await.unwrap();
        assert_eq!(r.error(), Some(errno::EINVAL));
        s.disconnect().await;
    });
}

fn servers_without_block_status_are_reported_as_could_not_test() {
    if !have("nbd-server") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let image = raw_fixture(dir.path());
    let sock = dir.path().join("nbd-server.sock");
    let conf = dir.path().join("nbd-server.conf");
    std::fs::write(
        &conf,
        format!(
            "[generic]\n    unixsock = {}\n[raw]\n    exportname = {}\n    readonly = true\n",
            sock.display(),
            image.display()
        ),
    )
    .unwrap();
    let pid = dir.path().join("nbd-server.pid");
    // nbd-server -d would serve a single connection; as a daemon it forks one child per client.
    let _server = start_daemon(
        "nbd-server",
        &["-C", conf.to_str().unwrap(), "-p", pid.to_str().unwrap()],
        &sock,
        &pid,
    );
    assert_cmd::Command::new(bin())
        .args(["map", &unix_uri(&sock, "raw")])
        .timeout(Duration::from_secs(60))
        .assert()
        .code(3)
        .stderr(predicates::str::contains("STRUCTURED_REPLY"));
}

pub fn trials() -> Vec<libtest_mimic::Trial> {
    vec![
        libtest_mimic::Trial::test(
            "selftest::interop::qemu_nbd_qcow2_maps_match_libnbd",
            || {
                qemu_nbd_qcow2_maps_match_libnbd();
                Ok(())
            },
        ),
        libtest_mimic::Trial::test("selftest::interop::nbdkit_maps_match_libnbd", || {
            nbdkit_maps_match_libnbd();
            Ok(())
        }),
        libtest_mimic::Trial::test(
            "selftest::interop::reference_server_maps_match_libnbd_and_truth",
            || {
                reference_server_maps_match_libnbd_and_truth();
                Ok(())
            },
        ),
        libtest_mimic::Trial::test(
            "selftest::interop::draft_dialect_between_our_client_and_server",
            || {
                draft_dialect_between_our_client_and_server();
                Ok(())
            },
        ),
        libtest_mimic::Trial::test(
            "selftest::interop::reference_server_negotiation_follows_the_spec",
            || {
                reference_server_negotiation_follows_the_spec();
                Ok(())
            },
        ),
        libtest_mimic::Trial::test(
            "selftest::interop::servers_without_block_status_are_reported_as_could_not_test",
            || {
                servers_without_block_status_are_reported_as_could_not_test();
                Ok(())
            },
        ),
    ]
}
