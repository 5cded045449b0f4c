#!/usr/bin/env bash
# Builds the web app with the default model into dist/ (plain static files).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.tools/node_modules/.bin:$PATH"
cargo fetch --locked
(cd web && trunk build --release)
echo "built dist/ ($(du -sh dist | cut -f1)); serve it from any static host or sub-path"
