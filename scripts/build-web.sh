#!/usr/bin/env bash
# Builds the web app into dist/ (plain static files for any host and
# sub-path) with the default model, or with --model FILE as the page's model.
#
#   scripts/build-web.sh [--model FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
model=
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=${2:?--model needs a .gguf file}; shift 2 ;;
    --model=*) model=${1#--model=}; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$model" ]; then
  [ -f "$model" ] || { echo "--model: no file at $model" >&2; exit 2; }
  model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model")
  # Refuse a file the page could not load, before a minute of building.
  if [ -x target/release/pricer ] && ! target/release/pricer info --model "$model" >/dev/null; then
    echo "--model: $model is not a Pricer model file (pricer info could not read it)" >&2; exit 2
  fi
fi
scripts/setup.sh
export PATH="$PWD/.tools/node_modules/.bin:$PATH"
cargo fetch --locked
(cd web && trunk build --release)
if [ -n "$model" ]; then
  # The page loads models/default.gguf; the shipped model's card no longer applies.
  cp "$model" dist/models/default.gguf
  rm -f dist/models/README.md
  echo "the page's model: $model"
fi
echo "built dist/ ($(du -sh dist | cut -f1)); serve it from any static host or sub-path"
