#!/usr/bin/env bash
# Every check and test: formatting, lints, unit and workspace tests (tiny
# models, the real Amazon items from ../shared), then the page in headless
# Chromium. Installs what it needs first (scripts/setup.sh --test).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export PATH="$PWD/.tools/node_modules/.bin:$PATH"
export PRICER_GGUF_PYTHON="$PWD/.tools/venv/bin/python"

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --release --all-targets --locked -- -D warnings
cargo clippy --release --target wasm32-unknown-unknown -p pricer-web --locked -- -D warnings
cargo clippy --release --target wasm32-unknown-unknown -p pricer-web --features relaxed-simd --locked -- -D warnings

echo "== unit and workspace tests"
cargo build --release --bins --locked
cargo test --release --locked

echo "== the page in headless Chromium"
(cd web && trunk build --release)
(cd tests/browser && node --test)
