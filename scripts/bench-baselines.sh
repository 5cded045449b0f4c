#!/usr/bin/env bash
# Accuracy of every simple model kind on both test splits, trained on the
# catalogue alone and on all the data. Outside CI (a few minutes). Usage:
#   scripts/bench-baselines.sh [CATALOG_DIR] [ALL_DIR] [OUT_DIR]
# with the two `pricer curate` directories of docs/benchmarks.md (round 2).
set -euo pipefail
cd "$(dirname "$0")/.."
CATALOG=${1:-data/catalog}; ALL=${2:-data/all}; OUT=${3:-runs/baselines}
P=./target/release/pricer
cargo build --release --locked -q
mkdir -p "$OUT"
for data in "$CATALOG" "$ALL"; do
  for kind in constant features bow tfidf-ridge details-ridge; do
    model="$OUT/$(basename "$data")-$kind.gguf"
    $P train --kind "$kind" --data "$data" --out "$model" > "$model.log" 2>&1
    echo
    echo "trained on $data:"
    $P eval --model "$model" --data "$ALL"
  done
done
