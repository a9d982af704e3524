//! Shared helpers for the integration tests: peers as child processes that die with the test,
//! fixture images built with qemu-img / qemu-io, and the two mappers being compared.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// A server process killed (and reaped) on drop, so no server outlives its test.
pub struct Peer {
    child: Option<std::process::Child>,
    /// For servers that daemonise: the pid file they write.
    pid_file: Option<PathBuf>,
    pub what: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            stop(child);
        }
        if let Some(pid) = self
            .pid_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// SIGTERM, then SIGKILL if it is still there after 3 s: a server asked to stop cleans up
/// after itself (nbdkit's sh and eval plugins remove their `/tmp/nbdkitXXXXXX` only then).
fn stop(child: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child, which is not reaped yet, so the pid is still its.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_for_socket(peer: &mut Peer, socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return;
        }
        if let Some(Ok(Some(status))) = peer.child.as_mut().map(|c| c.try_wait()) {
            panic!("{} exited early with {status}", peer.what);
        }
        assert!(
            Instant::now() < deadline,
            "{} did not listen on {} within 15 s",
            peer.what,
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a server that daemonises itself and writes `pid_file`; waits until `socket` accepts.
pub fn start_daemon(program: &str, args: &[&str], socket: &Path, pid_file: &Path) -> Peer {
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    assert!(status.success(), "{program} {args:?} exited with {status}");
    let mut peer = Peer {
        child: None,
        pid_file: Some(pid_file.to_owned()),
        what: format!("{program} {}", args.join(" ")),
    };
    wait_for_socket(&mut peer, socket);
    peer
}

/// Starts `program args…` and waits until `socket` accepts connections.
pub fn start_peer(program: &str, args: &[&str], socket: &Path) -> Peer {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut peer = Peer {
        child: Some(child),
        pid_file: None,
        what: format!("{program} {}", args.join(" ")),
    };
    wait_for_socket(&mut peer, socket);
    peer
}

/// True if `program` is on PATH; otherwise prints why the caller skips.
/// The cases of today's dialect (the servers these trials start serve no other).
pub fn standard_cases(
    cases: &[nbd_conform::engine::case::Case],
) -> Vec<nbd_conform::engine::case::Case> {
    cases
        .iter()
        .filter(|c| c.dialect == nbd_conform::Dialect::Standard)
        .cloned()
        .collect()
}

pub fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        skip(&format!(
            "{program} is not installed (apt-get install it; .ci/run does)"
        ));
    }
    found
}

/// libnbd's Python bindings live under Debian's interpreter, not a pyenv one.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

pub fn have_libnbd_python() -> bool {
    let ok = Command::new(SYSTEM_PYTHON)
        .args(["-c", "import nbd"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        skip(&format!(
            "python3-libnbd is not installed for {SYSTEM_PYTHON}"
        ));
    }
    ok
}

/// Prints why a test skips; under NBD_CONFORM_REQUIRE_PEERS=1 (set by .ci/run) it fails instead.
fn skip(why: &str) {
    if std::env::var_os("NBD_CONFORM_REQUIRE_PEERS").is_some_and(|v| v == "1") {
        panic!("required peer missing: {why}");
    }
    eprintln!("SKIP: {why}");
}

pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One descriptor in the fields both mappers print.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Entry {
    pub context: String,
    pub offset: u64,
    pub length: u64,
    pub flags: u64,
}

/// Full map output, with the state names kept for assertions on naming.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NamedEntry {
    pub context: String,
    pub offset: u64,
    pub length: u64,
    pub flags: u64,
    pub state: String,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nbd-conform")
}

/// `nbd-conform map URI --json ARGS…`, parsed.
pub fn our_map(uri: &str, args: &[&str]) -> Vec<NamedEntry> {
    let out = assert_cmd::Command::new(bin())
        .arg("map")
        .arg(uri)
        .arg("--json")
        .args(args)
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    parse_lines(&out.get_output().stdout)
}

/// The libnbd reference mapper with the same arguments.
pub fn libnbd_map(uri: &str, args: &[&str]) -> Vec<Entry> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/libnbd_map.py");
    let out = Command::new(SYSTEM_PYTHON)
        .arg(script)
        .arg(uri)
        .args(args)
        .output()
        .expect("run libnbd_map.py");
    assert!(
        out.status.success(),
        "libnbd_map.py {uri} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_lines(&out.stdout)
}

fn parse_lines<T: for<'de> Deserialize<'de>>(stdout: &[u8]) -> Vec<T> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

pub fn strip(entries: &[NamedEntry]) -> Vec<Entry> {
    entries
        .iter()
        .map(|e| Entry {
            context: e.context.clone(),
            offset: e.offset,
            length: e.length,
            flags: e.flags,
        })
        .collect()
}

/// Asserts both mappers saw the same descriptors, and that there was something to see.
pub fn assert_same_as_libnbd(uri: &str, ours: &[&str], theirs: &[&str]) -> Vec<NamedEntry> {
    let mine = our_map(uri, ours);
    let reference = libnbd_map(uri, theirs);
    assert!(
        !reference.is_empty(),
        "libnbd reported no descriptors for {uri}"
    );
    let stripped = strip(&mine);
    if stripped != reference {
        let first = stripped
            .iter()
            .zip(&reference)
            .position(|(a, b)| a != b)
            .unwrap_or(stripped.len().min(reference.len()));
        panic!(
            "nbd-conform map {uri} {ours:?} differs from libnbd {theirs:?} at entry {first}: ours {:?}, libnbd {:?} ({} vs {} entries)",
            stripped.get(first),
            reference.get(first),
            stripped.len(),
            reference.len()
        );
    }
    mine
}

/// The qcow2 image of the `mixed-4m` fixture (research/peers.md §1.1: data, zero clusters
/// allocated and not, holes, two persistent bitmaps of 64K and 128K granularity with writes
/// after they were added), built through `src/fixtures` into the shared cache like every
/// image the harness serves. Serve it read-only: the cache is shared.
pub fn mixed_4m_qcow2() -> PathBuf {
    let fixture = nbd_conform::fixtures::find("mixed-4m").expect("the mixed-4m fixture");
    fixture
        .build(&nbd_conform::fixtures::cache_dir())
        .expect("build mixed-4m")
        .qcow2
}

pub fn unix_uri(socket: &Path, export: &str) -> String {
    format!("nbd+unix:///{export}?socket={}", socket.display())
}

/// Whether something listens on the Unix socket `path`, seen in /proc/net/unix (flag
/// `__SO_ACCEPTCON`), without connecting: a test connection would use up a server that serves
/// a single client.
pub fn listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    table.lines().skip(1).any(|line| {
        let cells: Vec<&str> = line.split_whitespace().collect();
        cells.len() >= 8 && cells[7] == wanted && cells[3] == "00010000"
    })
}

/// Waits up to 15 s for `child` to listen on `path` (see [`listening`]).
pub fn wait_listening(child: &mut std::process::Child, path: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !listening(path) {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited early with {status}"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nothing listened on {} within 15 s",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A case's grade explained in one line: the deciding finding (clause, level, expected,
/// observed), or the note of an unsupported or errored case.
pub fn why(r: &nbd_conform::engine::outcome::CaseResult) -> String {
    r.deciding().map_or_else(
        || r.note.clone().unwrap_or_default(),
        |f| {
            format!(
                "{} ({}): expected {}; observed {}",
                f.clause,
                f.level(),
                f.expected,
                f.observed
            )
        },
    )
}
