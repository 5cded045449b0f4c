#!/usr/bin/env bash
# Every check and test: formatting, lints, unit and workspace tests (tiny
# models, the real Amazon items from ../shared), then the page in headless
# Chromium. Installs what it needs first (scripts/setup.sh --test). Prints
# how long each phase took at the end (also when one fails).
set -euo pipefail
cd "$(dirname "$0")/.."

timings=()
phase_name=
phase_start=$SECONDS
phase() {
  [ -n "$phase_name" ] && timings+=("$(printf '%-28s %5d s' "$phase_name" $((SECONDS - phase_start)))")
  phase_name=$1
  phase_start=$SECONDS
  [ -n "$phase_name" ] && echo "== $phase_name"
  return 0
}
report() {
  local status=$?
  phase ""
  echo "== time per phase (exit $status)"
  printf '%s\n' "${timings[@]}"
  printf '%-28s %5d s\n' "total" "$SECONDS"
}
trap report EXIT

phase "tools (setup.sh --test)"
scripts/setup.sh --test
export PATH="$PWD/.tools/node_modules/.bin:$PATH"
export PRICER_GGUF_PYTHON="$PWD/.tools/venv/bin/python"

phase "format and lints"
cargo fmt --all -- --check
cargo clippy --release --all-targets --locked -- -D warnings
cargo clippy --release --target wasm32-unknown-unknown -p pricer-web --locked -- -D warnings
cargo clippy --release --target wasm32-unknown-unknown -p pricer-web --features relaxed-simd --locked -- -D warnings
# The threaded worker's code (what wasm atomics compile), with rustup's clippy.
scripts/build-threads.sh --clippy

# One build serves both: with --all-targets the binaries get the features
# the tests unify (dev-dependencies included), so `cargo test` rebuilds nothing.
phase "build (release, all targets)"
cargo build --release --all-targets --locked

phase "unit and workspace tests"
cargo test --release --locked
# The page's messages, CSV download and file limits (plain Rust, run natively).
cargo test --release --locked -p pricer-web --lib

# The page as shipped but for wasm-opt's level: -O1 instead of -O3 takes 23 s
# instead of 109 s per worker module here and changes no result (the tests
# compare the page's estimates with the CLI's); scripts/build-web.sh ships -O3.
phase "web app (trunk, wasm-opt -O1)"
sed 's/data-wasm-opt="3"/data-wasm-opt="1"/g' web/index.html > web/index.test.html
(cd web && trunk build index.test.html --release)
export PRICER_WEB_INDEX=index.test.html

# The worker with threads for one estimate (rustc-web 1.96, every crate
# built again with wasm atomics): the tests' build, at opt-level 1 (less to
# compile on a fresh machine; the Chromium tests compare its estimates with
# the single-thread worker's and the CLI's bit for bit).
phase "threaded worker (build-std)"
scripts/build-threads.sh --test

phase "the page in headless Chromium"
(cd tests/browser && node --test)
