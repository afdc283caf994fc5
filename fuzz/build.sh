#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on STABLE Rust (README.md here
# says why this way) into fuzz/target/, and prints the folder that holds them.
set -euo pipefail
cd "$(dirname "$0")"
triple=$(rustc -vV | sed -n 's/^host: //p')
# The flags `cargo fuzz build -s none` passes, all stable: SanitizerCoverage's counters, PC table
# and comparison tracing (so libFuzzer sees branches and the values compared), and
# `--cfg fuzzing`. `--target` keeps them off build scripts and proc macros. Unlike cargo-fuzz, no
# `-Ccodegen-units=1`: it would make the build of every dependency several times slower in CI.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 --cfg fuzzing ${RUSTFLAGS:-}"
cargo build --locked --release --target "$triple" --bins >&2
echo "$PWD/target/$triple/release"
