#!/usr/bin/env bash
# Runs fuzz targets for SECONDS each over their committed corpus (fuzz/README.md), after building
# them (fuzz/build.sh); prints executions per second per target, and fails naming every target
# that crashed, with the input that did it.
# Usage: fuzz/run.sh SECONDS [TARGET...]  (every target when none is named)
# FUZZ_WORK: where the inputs libFuzzer finds go (default: a new temporary folder); the committed
# corpus is only read. FUZZ_TMPDIR: the targets' temporary folders (default /dev/shm).
set -euo pipefail
cd "$(dirname "$0")"
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
secs=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
[[ $secs =~ ^[0-9]+$ ]] || die "SECONDS must be a whole number, not $secs"
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(ls corpus); fi
for t in "${targets[@]}"; do
  [ -f "fuzz_targets/$t.rs" ] || die "no fuzz target $t (targets: $(ls corpus | tr '\n' ' '))"
done
bin=$(./build.sh)
work=${FUZZ_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/offsitedb-fuzz.XXXXXX")}
# folder_tar extracts every input into a temporary folder: in memory it runs ~10x faster.
if [ -z "${FUZZ_TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then FUZZ_TMPDIR=/dev/shm; fi
export TMPDIR=${FUZZ_TMPDIR:-${TMPDIR:-/tmp}}
failed=()
printf '%-11s %10s %9s %6s %6s  %s\n' target execs execs/s cov corpus result
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "artifacts/$t"
  log="$work/$t.log"
  # New inputs go to $work/$t (the first folder); crashes to artifacts/<target>/. -timeout: an
  # input that takes this long is a hang, a finding too.
  if "$bin/$t" -max_total_time="$secs" -print_final_stats=1 -timeout=20 -rss_limit_mb=2048 \
      -artifact_prefix="artifacts/$t/" "$work/$t" "corpus/$t" >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (log: $log)"
    failed+=("$t")
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corp=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  printf '%-11s %10s %9s %6s %6s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${corp:-?}" "$result"
done
for t in "${failed[@]}"; do
  printf '\n--- %s ---\n' "$t" >&2
  grep -E "panicked|overflowed|fuzz: an allocation|ERROR: libFuzzer|SUMMARY|Test unit written|out-of-memory|timeout" "$work/$t.log" | head -20 >&2 || tail -20 "$work/$t.log" >&2
done
if [ ${#failed[@]} -gt 0 ]; then
  die "fuzz targets crashed: ${failed[*]}
hint: reproduce with $bin/TARGET fuzz/artifacts/TARGET/FILE; fix it in the library (an Err, not a panic), then commit the input to fuzz/corpus/TARGET/ (the replay test keeps it fixed)"
fi
