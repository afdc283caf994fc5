#!/usr/bin/env bash
# Benchmark: fleets (issue 20). $SOURCES small sources, each on `every 1m` with jitter $JITTER,
# run for $DURATION s twice, measured in this one run on this machine:
#   single   one `offsitedb serve` on its SQLite state file (the baseline: one machine)
#   fleet    $WORKERS `offsitedb serve` workers (separate processes and state folders, as on
#            separate machines) sharing one PostgreSQL state database
# Per phase, from `offsitedb history --json` (the same for both states): the scheduling delay of
# every scheduled backup (its start minus its due time: leasing, the job's thread, the source's
# lock, the state's first write) as p50 / p95 / max, the runs done and failed, due times run
# twice (must be 0), runs per worker,
# and for the fleet the state database's load: transactions per second (pg_stat_database) and the
# CPU seconds its server processes used (the postmaster's own and its reaped children's, plus
# the live backends), per minute of the run. Ratios are fleet against single.
#
# The sources are folders (3 small files each) backed up into a local folder repository without
# drills, so that the machine's two cores go to scheduling, not to pg_dump: the jobs last a
# fraction of a second and the delay is the scheduler's own.
#
# Target (issue 20): fleet p95 delay under 2 s.
# Usage (as root): bench/fleet.sh   (SOURCES=200 WORKERS=3 DURATION=300 JITTER=60s JOBS=8;
#                                    PHASES="single fleet"; KEEP=1 keeps the work folder)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SOURCES=${SOURCES:-200}
WORKERS=${WORKERS:-3}
DURATION=${DURATION:-300}
JITTER=${JITTER:-60s}
JOBS=${JOBS:-8}
PHASES=${PHASES:-single fleet}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
has() { [[ " $PHASES " == *" $1 "* ]]; }
apt_install() { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }

[ "$(id -u)" = 0 ] || die "run as root: the state database runs as the postgres user"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ ! -x "$PGBIN/initdb" ]; then
  say "installing PostgreSQL (the state database)"
  apt_install postgresql
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
id postgres >/dev/null 2>&1 || die "no postgres user after installing PostgreSQL"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
say "building offsitedb (release)"
cargo build --release --locked -q
BIN=$ROOT/target/release/offsitedb

WORK=$(mktemp -d /tmp/offsitedb-fleetbench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/pg/postmaster.pid" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- the state database -------------------------------------------------------------------
PGPORT_=$(free_port)
mkdir "$WORK/pg" && chown postgres: "$WORK/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust -E UTF8 --locale=C -N >/dev/null
cat >> "$WORK/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PGPORT_
unix_socket_directories = '$WORK/pg'
max_connections = 300
fsync = on
EOF
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/server.log" -w start >/dev/null
PSQL=("$PGBIN/psql" -X -q -At -h 127.0.0.1 -p "$PGPORT_" -U postgres)
"${PSQL[@]}" -c "CREATE DATABASE fleet_state" >/dev/null
STATE_URL="postgres://postgres@127.0.0.1:$PGPORT_/fleet_state"
say "state database: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT_"

# --- sources, repository, configuration ---------------------------------------------------
"$BIN" keygen -o "$WORK/master.key" >/dev/null 2>&1
for i in $(seq 1 "$SOURCES"); do
  d=$WORK/src/s$i
  mkdir -p "$d"
  head -c 2048 /dev/urandom > "$d/a.bin"
  printf 'source %s\n' "$i" > "$d/b.txt"
  seq 1 200 > "$d/c.txt"
done
config() { # $1 = the [state] section
  {
    printf '[repository]\nurl = "%s"\nkey_file = "%s"\n\n%s\n\n' "$WORK/repo" "$WORK/master.key" "$1"
    printf '[worker]\njobs = %s\n\n' "$JOBS"
    for i in $(seq 1 "$SOURCES"); do
      printf '[[source]]\nname = "s%s"\nkind = "directory"\npath = "%s"\nschedule = "every 1m"\njitter = "%s"\ndrill = false\nstale_after = "1h"\n\n' \
        "$i" "$WORK/src/s$i" "$JITTER"
    done
  } > "$2"
}
config "[state]
path = \"$WORK/single/state.db\"" "$WORK/single.toml"
config "[state]
url = \"$STATE_URL\"" "$WORK/fleet.toml"

# CPU seconds of the state server so far: the postmaster (with its reaped children) and every
# live backend.
HZ=$(getconf CLK_TCK)
state_cpu() {
  local pm ticks=0 f
  pm=$(head -1 "$WORK/pg/postmaster.pid")
  f=($(sed 's/^.*) //' "/proc/$pm/stat"))
  ticks=$((f[11] + f[12] + f[13] + f[14]))
  for c in $(pgrep -P "$pm"); do
    f=($(sed 's/^.*) //' "/proc/$c/stat" 2>/dev/null || echo))
    [ ${#f[@]} -gt 14 ] && ticks=$((ticks + f[11] + f[12]))
  done
  echo "scale=2; $ticks / $HZ" | bc
}
commits() { "${PSQL[@]}" -d fleet_state -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'fleet_state'"; }
command -v bc >/dev/null || apt_install bc

# --- one phase ------------------------------------------------------------------------------
run_phase() { # $1 name, $2 workers, $3 config
  local name=$1 n=$2 cfg=$3 i
  mkdir -p "$WORK/$name"
  say "$name: $n worker(s), $SOURCES sources on every 1m (jitter $JITTER), $DURATION s"
  local c0 cpu0
  if [ "$name" = fleet ]; then c0=$(commits); cpu0=$(state_cpu); fi
  local pids=()
  for i in $(seq 1 "$n"); do
    OFFSITEDB_CONFIG=$cfg OFFSITEDB_WORKER_NAME=$name-w$i OFFSITEDB_STATE_DIR=$WORK/$name/w$i \
      "$BIN" serve --listen "127.0.0.1:$(free_port)" > "$WORK/$name/w$i.log" 2>&1 &
    pids+=($!)
    PIDS+=($!)
  done
  sleep "$DURATION"
  local c1 cpu1
  if [ "$name" = fleet ]; then c1=$(commits); cpu1=$(state_cpu); fi
  kill -TERM "${pids[@]}"
  for p in "${pids[@]}"; do wait "$p" || die "a $name worker exited badly: see $WORK/$name"; done
  OFFSITEDB_CONFIG=$cfg OFFSITEDB_STATE_DIR=$WORK/$name/w1 "$BIN" history --json --limit 1000000 > "$WORK/$name/history.json"
  python3 - "$WORK/$name/history.json" "$name" "$DURATION" > "$WORK/$name/summary" <<'PY'
import json, sys
from datetime import datetime
runs, name, duration = json.load(open(sys.argv[1])), sys.argv[2], float(sys.argv[3])
def t(s): return datetime.fromisoformat(s.replace("Z", "+00:00"))
sched = [r for r in runs if r["job"] == "backup" and r.get("due")]
d = sorted((t(r["started"]) - t(r["due"])).total_seconds() for r in sched)
def pct(p): return d[min(len(d) - 1, int(round(p / 100 * (len(d) - 1))))] if d else float("nan")
ok = sum(r["result"] == "ok" for r in sched)
failed = sum(r["result"] == "failed" for r in sched)
per = {}
for r in sched: per[r.get("worker")] = per.get(r.get("worker"), 0) + 1
seen = {}
for r in sched: seen[(r["source"], r["due"])] = seen.get((r["source"], r["due"]), 0) + 1
twice = sum(1 for n in seen.values() if n > 1)
print(f"{pct(50):.3f} {pct(95):.3f} {max(d) if d else float('nan'):.3f} {len(sched)} {ok} {failed} {twice}")
print(" ".join(f"{w}={c}" for w, c in sorted(per.items())))
PY
  if [ "$name" = fleet ]; then
    echo "$(( (c1 - c0) )) $(echo "$cpu1 - $cpu0" | bc)" >> "$WORK/$name/summary"
  fi
}

has single && run_phase single 1 "$WORK/single.toml"
has fleet && run_phase fleet "$WORKERS" "$WORK/fleet.toml"

# --- report ---------------------------------------------------------------------------------
echo
printf '%-8s %8s %8s %8s %6s %6s %6s %6s  %s\n' phase p50_s p95_s max_s runs ok failed twice "runs per worker"
for name in single fleet; do
  has "$name" || continue
  read -r p50 p95 mx runs ok failed twice < <(sed -n 1p "$WORK/$name/summary")
  printf '%-8s %8s %8s %8s %6s %6s %6s %6s  %s\n' "$name" "$p50" "$p95" "$mx" "$runs" "$ok" "$failed" "$twice" "$(sed -n 2p "$WORK/$name/summary")"
done
if has fleet; then
  read -r tx cpu < <(sed -n 3p "$WORK/fleet/summary")
  minutes=$(echo "scale=4; $DURATION / 60" | bc)
  printf '\nstate database (fleet): %s transactions (%s/s), %s CPU s (%s CPU s per minute)\n' \
    "$tx" "$(echo "scale=1; $tx / $DURATION" | bc)" "$cpu" "$(echo "scale=2; $cpu / $minutes" | bc)"
fi
if has single && has fleet; then
  read -r _ sp95 _ sruns _ < <(sed -n 1p "$WORK/single/summary")
  read -r _ fp95 _ fruns _ < <(sed -n 1p "$WORK/fleet/summary")
  printf 'ratios fleet/single: p95 delay %s, runs %s\n' \
    "$(python3 -c "print(f'{$fp95/$sp95:.2f}' if $sp95 > 0 else 'n/a')")" \
    "$(python3 -c "print(f'{$fruns/$sruns:.2f}' if $sruns > 0 else 'n/a')")"
fi
if has fleet; then
  read -r _ fp95 _ < <(sed -n 1p "$WORK/fleet/summary")
  python3 -c "import sys; sys.exit(0 if $fp95 < 2 else 1)" && echo "target: fleet p95 < 2 s: met" || echo "target: fleet p95 < 2 s: NOT met"
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
