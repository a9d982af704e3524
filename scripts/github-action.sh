#!/usr/bin/env bash
# The body of the composite action (action.yml): run the suite once, put the Markdown report in
# the job summary, say the verdict as step outputs, and exit with run's own exit code.
#
# Inputs come as environment variables, so that this script is tested without GitHub
# (tests/conformance/ci_recipe.rs):
#   NBD_CONFORM       the binary (default: nbd-conform on PATH)
#   INPUT_SPAWN       a --spawn template (or)
#   INPUT_TARGET      a --target URI (or neither: every local server)
#   INPUT_EXPORT      --export
#   INPUT_KNOWN_FAILING  a --known-failing file
#   INPUT_KNOWN_FLAKY    a --known-flaky file
#   INPUT_STRICT      "true": --strict
#   INPUT_ARGS        more `run` options, split on whitespace (no quoting: a value with spaces
#                     has its own input above)
#   INPUT_REPORT_DIR  where report.md, report.json and report.junit.xml go (default nbd-conform-report)
#   GITHUB_STEP_SUMMARY, GITHUB_OUTPUT  set by GitHub; either may be unset
set -uo pipefail

bin=${NBD_CONFORM:-nbd-conform}
dir=${INPUT_REPORT_DIR:-nbd-conform-report}
mkdir -p "$dir" || exit 2

args=(run)
[ -n "${INPUT_SPAWN:-}" ] && args+=(--spawn "$INPUT_SPAWN")
[ -n "${INPUT_TARGET:-}" ] && args+=(--target "$INPUT_TARGET")
[ -n "${INPUT_EXPORT:-}" ] && args+=(--export "$INPUT_EXPORT")
[ -n "${INPUT_KNOWN_FAILING:-}" ] && args+=(--known-failing "$INPUT_KNOWN_FAILING")
[ -n "${INPUT_KNOWN_FLAKY:-}" ] && args+=(--known-flaky "$INPUT_KNOWN_FLAKY")
[ "${INPUT_STRICT:-false}" = "true" ] && args+=(--strict)
if [ -n "${INPUT_ARGS:-}" ]; then
  read -r -a extra <<<"$INPUT_ARGS"
  args+=("${extra[@]}")
fi
args+=(--report "$dir/report.md" --json "$dir/report.json" --junit "$dir/report.junit.xml")

echo "+ $bin ${args[*]}"
"$bin" "${args[@]}"
rc=$?

# The summary shows the report whatever the verdict; a run that wrote none (usage error) says so.
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  if [ -s "$dir/report.md" ]; then
    cat "$dir/report.md" >>"$GITHUB_STEP_SUMMARY"
  else
    echo "nbd-conform wrote no report (exit $rc); see the step's log." >>"$GITHUB_STEP_SUMMARY"
  fi
fi
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  verdict=$(sed -n 's/^ *"verdict": *"\([^"]*\)".*/\1/p' "$dir/report.json" 2>/dev/null | head -n 1)
  {
    echo "exit-code=$rc"
    echo "verdict=${verdict:-none}"
    echo "report-dir=$dir"
  } >>"$GITHUB_OUTPUT"
fi
exit "$rc"
