#!/usr/bin/env bash
# Builds the web app into dist/ (plain static files for any host and
# sub-path) with the default model, or with --model FILE as the page's model.
#
#   scripts/build-web.sh [--model FILE] [--dist DIR] [--index FILE] [--no-threads]
#
# --dist: build into DIR instead of dist/. --index: the page's HTML under
# web/ (default index.html; the tests build web/index.test.html, the same
# page with wasm-opt -O1). The worker with threads for one estimate is built
# too (scripts/build-threads.sh: Debian's rustc-web from apt, ~15 minutes the
# first time); --no-threads leaves it out (the page then runs each estimate
# on one thread).
set -euo pipefail
cd "$(dirname "$0")/.."
model=
dist=$PWD/dist
index=index.html
threads=1
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=${2:?--model needs a .gguf file}; shift 2 ;;
    --model=*) model=${1#--model=}; shift ;;
    --dist) dist=${2:?--dist needs a folder}; shift 2 ;;
    --index) index=${2:?--index needs an HTML file under web/}; shift 2 ;;
    --no-threads) threads=; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -f "web/$index" ] || { echo "--index: no file web/$index" >&2; exit 2; }
if [ -n "$model" ]; then
  [ -f "$model" ] || { echo "--model: no file at $model" >&2; exit 2; }
  model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model")
  # Refuse a file the page could not load, before a minute of building.
  if [ -x target/release/pricer ] && ! target/release/pricer info --model "$model" >/dev/null; then
    echo "--model: $model is not a Pricer model file (pricer info could not read it)" >&2; exit 2
  fi
fi
mkdir -p "$dist"
dist=$(cd "$dist" && pwd)
scripts/setup.sh
export PATH="$PWD/.tools/node_modules/.bin:$PATH"
cargo fetch --locked
(cd web && trunk build "$index" --release --dist "$dist")
if [ -n "$threads" ]; then
  # wasm-opt at the level the page's HTML asks for its workers.
  opt=$(sed -n 's/.*data-wasm-opt="\([0-9sz]*\)".*/\1/p' "web/$index" | head -1)
  scripts/build-threads.sh --dist "$dist" --opt "${opt:-3}" ||
    { echo "the threaded worker did not build (see above); --no-threads builds the page without it" >&2; exit 1; }
fi
if [ -n "$model" ]; then
  # The page loads models/default.gguf; the shipped model's card no longer applies.
  cp "$model" "$dist/models/default.gguf"
  rm -f "$dist/models/README.md"
  echo "the page's model: $model"
fi
echo "built $dist ($(du -sh "$dist" | cut -f1)); serve it from any static host or sub-path"
