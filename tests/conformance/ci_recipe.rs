//! The CI recipe an implementer copies (docs/ci/README.md): `scripts/github-action.sh`, the body
//! of the composite action, run as GitHub runs it (inputs as `INPUT_*`, a summary file and an
//! output file) against the reference server started from a `spawn` template: a correct
//! server, one with a fault the selected cases catch, and a usage error. Each checks the exit
//! code, the step outputs and the job summary.

use std::path::Path;

use assert_cmd::Command;
use libtest_mimic::{Failed, Trial};

use crate::support::bin;

/// Cases that `req-one-overrun` breaks (BS-REQ-ONE-2) and a correct server passes.
const ONLY: &str = "--only bs.req-one --parallel 4";

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "selftest::ci_recipe::a_correct_server_passes_with_its_report_in_the_summary",
            || {
                let run = action(&serve(None), ONLY)?;
                run.expect(0, "conformant")?;
                run.summary_has("## ")?;
                for name in ["report.md", "report.json", "report.junit.xml"] {
                    if !run.dir.path().join("reports").join(name).is_file() {
                        return Err(format!("{name} was not written").into());
                    }
                }
                Ok(())
            },
        ),
        Trial::test("selftest::ci_recipe::a_faulty_server_fails_the_job", || {
            let run = action(&serve(Some("req-one-overrun")), ONLY)?;
            run.expect(1, "non-conformant")?;
            run.summary_has("BS-REQ-ONE-2")
        }),
        Trial::test(
            "selftest::ci_recipe::a_known_failure_passes_the_job_and_is_listed",
            || {
                let run = action_with(
                    &serve(Some("req-one-overrun")),
                    ONLY,
                    Some("bs.req-one.*@nbd-conform  BS-REQ-ONE-2: the fault under test\n"),
                )?;
                run.expect(0, "conformant")?;
                run.summary_has("Known failures")?;
                run.summary_has("the fault under test")
            },
        ),
        Trial::test(
            "selftest::ci_recipe::a_usage_error_says_so_in_the_summary",
            || {
                let run = action(&serve(None), "--parallel")?;
                run.expect(2, "none")?;
                run.summary_has("wrote no report (exit 2)")
            },
        ),
    ]
}

/// A `spawn` input that starts our reference server, with `fault` if given.
fn serve(fault: Option<&str>) -> String {
    let fault = fault.map_or(String::new(), |f| format!(" --fault {f}"));
    format!(
        "{} serve {{raw}} --socket {{socket}} --export {{export}}{fault}",
        bin()
    )
}

struct ActionRun {
    dir: tempfile::TempDir,
    code: i32,
    log: String,
}

/// Runs the action's script as the composite action does, in a temp dir as the workspace.
fn action(spawn: &str, args: &str) -> Result<ActionRun, Failed> {
    action_with(spawn, args, None)
}

/// As [`action`], with a `known-failing` input: a file in the workspace holding `known`.
fn action_with(spawn: &str, args: &str, known: Option<&str>) -> Result<ActionRun, Failed> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/github-action.sh");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut command = Command::new(script);
    if let Some(text) = known {
        std::fs::write(dir.path().join("known.txt"), text).map_err(|e| e.to_string())?;
        command.env("INPUT_KNOWN_FAILING", "known.txt");
    }
    let out = command
        .current_dir(dir.path())
        .env("NBD_CONFORM", bin())
        .env("INPUT_SPAWN", spawn)
        .env("INPUT_ARGS", args)
        .env("INPUT_REPORT_DIR", "reports")
        .env("GITHUB_STEP_SUMMARY", dir.path().join("summary.md"))
        .env("GITHUB_OUTPUT", dir.path().join("output"))
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .map_err(|e| e.to_string())?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(ActionRun {
        dir,
        code: out.status.code().unwrap_or(-1),
        log,
    })
}

impl ActionRun {
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The script's exit code and the outputs it gave GitHub agree with what was expected.
    fn expect(&self, code: i32, verdict: &str) -> Result<(), Failed> {
        let output = self.read("output");
        let wanted = [
            format!("exit-code={code}"),
            format!("verdict={verdict}"),
            "report-dir=reports".to_owned(),
        ];
        if self.code != code || wanted.iter().any(|w| !output.lines().any(|l| l == w)) {
            return Err(format!(
                "wanted exit {code} and outputs {wanted:?}; got exit {}, outputs:\n{output}\nlog:\n{}",
                self.code, self.log
            )
            .into());
        }
        Ok(())
    }

    fn summary_has(&self, text: &str) -> Result<(), Failed> {
        let summary = self.read("summary.md");
        if summary.contains(text) {
            Ok(())
        } else {
            Err(format!(
                "the job summary lacks {text:?}:\n{summary}\nlog:\n{}",
                self.log
            )
            .into())
        }
    }
}
