#!/usr/bin/env bash
# Curate throughput at scale (outside CI): writes 100,000 raw Amazon records
# from ../shared's unpriced-22k texts (half with seeded prices), then times
# `pricer curate --tokenizer` on 1 and 2 threads (and BASELINE, another
# pricer binary, when given), printing records/s and peak memory, and checks
# that every run wrote the same files.
#   scripts/bench-curate.sh [N] [BASELINE_PRICER]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}; BASELINE=${2:-}
TOK=models/all-MiniLM-L6-v2/tokenizer.json
[ -f "$TOK" ] || scripts/fetch-minilm.sh models/all-MiniLM-L6-v2
cargo build --release --locked -q
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
python3 scripts/make_raw_records.py ../shared/data/amazon-2023/unpriced-22k.jsonl.gz "$WORK/raw.jsonl.gz" "$N"
run() { # NAME BINARY ARGS...
  local name=$1 bin=$2; shift 2
  local line
  line=$("$bin" curate --input "$WORK/raw.jsonl.gz" --tokenizer "$TOK" --out "$WORK/$name" "$@" | grep "items/s")
  echo "| $name | $line |"
}
echo "| run | result |"
echo "| --- | --- |"
[ -n "$BASELINE" ] && run baseline "$BASELINE"
run threads-1 target/release/pricer --threads 1
run threads-2 target/release/pricer --threads 2
for f in train.jsonl validation.jsonl test.jsonl; do
  cmp "$WORK/threads-1/$f" "$WORK/threads-2/$f"
  [ -n "$BASELINE" ] && cmp "$WORK/baseline/$f" "$WORK/threads-1/$f"
done
echo "same files from every run"
