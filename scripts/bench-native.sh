#!/usr/bin/env bash
# Native inference speed against ONNX Runtime (CPU), same texts, same cores,
# same run (outside CI). Times `pricer lab speed` (the whole stack: text
# preparation, tokenizer, encoder, head, members; and the encoder alone) at
# batch 1 and 16 with the fastest int8 kernel and with AVX2's, then ONNX
# Runtime on the texts pricer prepared (tokenized with the same
# tokenizer.json, checked to give pricer's ids, then mean pooling) with the
# int8 (MatMulInteger) and fp32 MiniLM-L6 of scripts/fetch-peer.sh, and
# prints products/s and ratios. Each figure is the best of two passes.
#   scripts/bench-native.sh ITEMS.jsonl.gz [N] [MODEL.gguf]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 ITEMS.jsonl.gz [N] [MODEL.gguf]" >&2; exit 2; }
ITEMS=$(realpath "$1"); N=${2:-600}; MODEL=$(realpath "${3:-$(dirname "$0")/../static/models/default.gguf}")
cd "$(dirname "$0")/.."
scripts/fetch-peer.sh >/dev/null
cargo build --release --locked -q -p pricer-trainer
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
THREADS=$(nproc)
PRICER=target/release/pricer
echo "# $(date -u +%F), $(lscpu | sed -n 's/^Model name: *//p'), $THREADS threads; $N products of $(basename "$ITEMS")"
"$PRICER" lab speed --model "$MODEL" --data "$ITEMS" --limit 16 --batch 16 --passes 1 --kernels --write-peer-inputs "$WORK/in" \
  | sed -n '1,/^[0-9]* products/p' | sed '$d'
"$PRICER" lab speed --model "$MODEL" --data "$ITEMS" --limit "$N" --batch 1,16 --json --write-peer-inputs "$WORK/in" \
  | sed 's/^{/{"run":"pricer","kernel":"best",/' > "$WORK/runs.jsonl"
PRICER_INT8_KERNEL=avx2 "$PRICER" lab speed --model "$MODEL" --data "$ITEMS" --limit "$N" --batch 1,16 --json \
  | sed 's/^{/{"run":"pricer","kernel":"avx2",/' >> "$WORK/runs.jsonl"
.tools/peer/venv/bin/python scripts/bench_ort.py "$WORK/in" "$THREADS" 1,16 .tools/peer/minilm-int8.onnx .tools/peer/minilm-fp32.onnx \
  | sed 's/^{/{"run":"ort",/' >> "$WORK/runs.jsonl"
python3 - "$WORK/runs.jsonl" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def rate(batch, **match):
    for r in runs:
        if r["batch"] == batch and all(k in r and (r[k] == v or (k == "model" and r[k].endswith(v))) for k, v in match.items()):
            return r
    raise SystemExit(f"no run {match} at batch {batch}")
print("| batch | Pricer stack (best kernel) | Pricer encoder | Pricer stack (AVX2) | ORT int8 | ORT fp32 | stack / ORT int8 | stack / ORT fp32 |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for b in (1, 16):
    best, avx2 = rate(b, run="pricer", kernel="best"), rate(b, run="pricer", kernel="avx2")
    i8, f32 = rate(b, run="ort", model="minilm-int8.onnx")["products_s"], rate(b, run="ort", model="minilm-fp32.onnx")["products_s"]
    s = best["stack_products_s"]
    print(f"| {b} | {s:.1f} | {best['encoder_products_s']:.1f} | {avx2['stack_products_s']:.1f} | {i8:.1f} | {f32:.1f} | {s / i8:.2f}x | {s / f32:.2f}x |")
print(f"products/s; mean {runs[0]['mean_tokens']:.1f} tokens per product")
PY
