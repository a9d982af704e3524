//! Bad input gets a one-line error and exit 2 before any server starts (issue 10 §5), through
//! the CLI as a user meets it (assert_cmd): case files with an unknown fixture or an offset
//! that does not parse, a fixture past the repeat cap, a block device without
//! `--block-device`; and what is no error: `map --json` into a pipe its reader closed (exit 0,
//! as without `--json`), a fixture of size 0 (cases that mean nothing on it are unsupported,
//! a correct server passes).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use libtest_mimic::{Failed, Trial};

use crate::support::bin;

/// A usage error is found while loading, long before a case could run.
const LOAD_BOUND: Duration = Duration::from_secs(20);

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "selftest::cli::bad_case_files_exit_2_before_any_server",
            bad_case_files,
        ),
        Trial::test(
            "selftest::cli::a_block_device_is_served_only_when_asked",
            block_device,
        ),
        Trial::test(
            "selftest::cli::map_json_into_a_closed_pipe_exits_0",
            map_json_into_a_closed_pipe,
        ),
        Trial::test(
            "selftest::cli::a_fixture_of_size_0_fails_no_correct_server",
            empty_fixture,
        ),
    ]
}

fn write(path: &Path, text: &str) -> Result<(), Failed> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// A one-case `cases/` dir whose case `x.case` runs on `fixture` and asks at `offset`.
fn one_case(dir: &Path, fixture: &str, offset: &str) -> Result<(), Failed> {
    write(
        &dir.join("x/case.toml"),
        &format!(
            "id = \"x.case\"\ntitle = \"t\"\nclauses = [\"BS-REP-EOF-1\"]\nfixture = \
             \"{fixture}\"\nsteps = [\n  {{ negotiate = {{ contexts = [\"base:allocation\"] }} \
             }},\n  {{ block-status = {{ offset = \"{offset}\", length = \"4K\" }} }},\n]\n"
        ),
    )
}

/// `run --server reference` on `cases` (and `fixtures`, if given) exits 2 within
/// [`LOAD_BOUND`], with one line on stderr that says each of `says`.
fn refused_at_load(cases: &Path, fixtures: Option<&Path>, says: &[&str]) -> Result<(), Failed> {
    let started = Instant::now();
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--server", "reference", "--cases"])
        .arg(cases)
        .timeout(Duration::from_secs(120));
    if let Some(f) = fixtures {
        cmd.env("NBD_CONFORM_FIXTURES", f);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let one_line = stderr.trim_end().lines().count() == 1;
    let said = says.iter().all(|s| stderr.contains(s));
    if out.status.code() != Some(2) || !one_line || !said {
        return Err(format!(
            "expected exit 2 and one line saying {says:?}; got {:?}:\n{stderr}",
            out.status.code()
        )
        .into());
    }
    if started.elapsed() > LOAD_BOUND {
        return Err(format!("refused only after {:?}", started.elapsed()).into());
    }
    Ok(())
}

/// An unknown fixture, an offset that does not parse, a fixture past the repeat cap: each
/// names the file and the field.
fn bad_case_files() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let unknown = dir.path().join("unknown");
    one_case(&unknown, "no-such-fixture", "0")?;
    let file = unknown.join("x/case.toml").display().to_string();
    refused_at_load(&unknown, None, &[&file, "`fixture`", "no-such-fixture"])?;

    let bad_offset = dir.path().join("offset");
    one_case(&bad_offset, "mixed-4m", "size+banana")?;
    let file = bad_offset.join("x/case.toml").display().to_string();
    refused_at_load(
        &bad_offset,
        None,
        &[&file, "line 7", "`offset`", "size+banana"],
    )?;

    // Past the cap: 4097 extents, refused when the case that uses the fixture loads.
    let fixtures = dir.path().join("fixtures");
    write(
        &fixtures.join("huge.toml"),
        "size = \"64M\"\nextents = [ { at = \"0\", len = \"4K\", kind = \"data\", byte = 1, \
         repeat = { every = \"8K\", count = 4097 } } ]\n",
    )?;
    let huge = dir.path().join("huge");
    one_case(&huge, "huge", "0")?;
    refused_at_load(
        &huge,
        Some(&fixtures),
        &["`fixture`", "more than 4096 extents"],
    )
}

/// A block device is refused without `--block-device`, before anything listens (skipped
/// where /dev has none).
fn block_device() -> Result<(), Failed> {
    use std::os::unix::fs::FileTypeExt;
    let device = [
        "/dev/loop0",
        "/dev/vda",
        "/dev/sda",
        "/dev/nvme0n1",
        "/dev/zram0",
    ]
    .into_iter()
    .find(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device()));
    let Some(device) = device else {
        eprintln!("SKIP: no block device in /dev");
        return Ok(());
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let socket = dir.path().join("nbd.sock");
    Command::new(bin())
        .args(["serve", device, "--socket"])
        .arg(&socket)
        .timeout(Duration::from_secs(10))
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "is a block device (pass --block-device",
        ));
    if socket.exists() {
        return Err("the socket was made before the refusal".into());
    }
    // /dev/null is a character device, like /dev/zero: an empty export, never an image.
    Command::new(bin())
        .args(["serve", "/dev/null", "--socket"])
        .arg(&socket)
        .timeout(Duration::from_secs(10))
        .assert()
        .code(2)
        .stderr(predicates::str::contains("character device"));
    Ok(())
}

/// `map --json | head -1` ends quietly with exit 0, as `map | head -1` does.
fn map_json_into_a_closed_pipe() -> Result<(), Failed> {
    crate::verdicts::with_reference(&[], |uri| {
        for json in [false, true] {
            let mut map = std::process::Command::new(bin());
            map.args(["map", uri, "--window", "512"]);
            if json {
                map.arg("--json");
            }
            let mut child = map
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let mut first = String::new();
            BufReader::new(stdout)
                .read_line(&mut first)
                .map_err(|e| e.to_string())?;
            // The reader is gone: 8192 windows are left to write into a closed pipe.
            let status = child.wait().map_err(|e| e.to_string())?;
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut stderr).map_err(|e| e.to_string())?;
            }
            if first.is_empty() || status.code() != Some(0) || !stderr.is_empty() {
                return Err(format!(
                    "map (json: {json}) into a closed pipe: {status}, first line {first:?}, \
                     stderr {stderr:?}"
                )
                .into());
            }
        }
        Ok(())
    })
}

/// Every case, on a fixture of size 0, against the reference server: what cannot mean
/// anything on an empty export is unsupported, the rest passes (conformant, exit 0).
fn empty_fixture() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let fixtures = dir.path().join("fixtures");
    write(&fixtures.join("empty.toml"), "size = \"0\"\n")?;
    let cases = dir.path().join("cases");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
    let loaded = nbd_conform::engine::case::load_cases(&source).map_err(|e| e.to_string())?;
    for case in &loaded {
        let text = std::fs::read_to_string(&case.path).map_err(|e| e.to_string())?;
        let moved: String = text
            .lines()
            .map(|l| match l.starts_with("fixture = ") {
                true => "fixture = \"empty\"",
                false => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let rel = case.path.strip_prefix(&source).map_err(|e| e.to_string())?;
        write(&cases.join(rel), &moved)?;
    }
    let out = Command::new(bin())
        .args(["run", "--server", "reference", "--cases"])
        .arg(&cases)
        .env("NBD_CONFORM_FIXTURES", &fixtures)
        .env("NBD_CONFORM_CACHE", dir.path().join("cache"))
        .timeout(Duration::from_secs(300))
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(0) || !stderr.contains("conformant") {
        return Err(format!(
            "{} cases on a size-0 fixture: {:?}\n{stderr}",
            loaded.len(),
            out.status.code()
        )
        .into());
    }
    Ok(())
}
