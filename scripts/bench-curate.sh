#!/usr/bin/env bash
# Curate throughput at scale (outside CI): writes N raw Amazon records from
# the unpriced-22k texts (half with seeded prices), then times
# `pricer curate --tokenizer` on 1 and 2 threads (and BASELINE, another
# pricer binary, when given), printing records/s and peak memory, and checks
# that every run wrote the same files.
#   scripts/bench-curate.sh UNPRICED_22K.jsonl.gz [N] [BASELINE_PRICER]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 UNPRICED_22K.jsonl.gz [N] [BASELINE_PRICER]" >&2; exit 2; }
UNPRICED=$(realpath "$1"); N=${2:-100000}; BASELINE=${3:+$(realpath "$3")}
cd "$(dirname "$0")/.."

TOK=models/all-MiniLM-L6-v2/tokenizer.json
[ -f "$TOK" ] || scripts/fetch-minilm.sh models/all-MiniLM-L6-v2
cargo build --release --locked -q
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
python3 scripts/make_raw_records.py "$UNPRICED" "$WORK/raw.jsonl.gz" "$N"
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
