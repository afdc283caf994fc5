#!/usr/bin/env bash
# Longer fuzzing than the few seconds per target of scripts/test.sh: DURATION seconds (default 60)
# for each target named (default: all), printing executions per second, coverage and any crash.
# Inputs found are kept in fuzz/target/corpus/<target>/ (not committed); fold the useful ones
# into the committed corpus with libFuzzer's -merge=1 (fuzz/README.md).
# Usage: DURATION=60 bench/fuzz.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_WORK=${FUZZ_WORK:-$PWD/fuzz/target/corpus}
mkdir -p "$FUZZ_WORK"
exec fuzz/run.sh "${DURATION:-60}" "$@"
