#!/usr/bin/env bash
# One prepared run on a GPU host (or, with DEVICE=cpu, on any machine as a
# dry run): correctness against the CPU, training throughput of candle and
# of PyTorch on the same card, a full fine-tune with its eval, and a table.
# Keep it under 10 minutes of GPU time.
#
# Expects, relative to the repo root (or set the variables):
#   PRICER=./pricer-cuda        the binary from trainer/cuda/build.sh (xz -d'd)
#   BASE=models/all-MiniLM-L6-v2  the base model folder (F32 or F16 safetensors)
#   DATA=data/all               a `pricer curate` output directory (every test split is evaluated)
#   OUT=out                     where logs and the table go
#   PYTHON=python3              a python with torch and transformers (the host's)
set -uo pipefail
cd "$(dirname "$0")/../.."
PRICER=${PRICER:-./pricer-cuda}; BASE=${BASE:-models/all-MiniLM-L6-v2}; DATA=${DATA:-data/all}
OUT=${OUT:-out}; PYTHON=${PYTHON:-python3}; DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-3}; SEQS=${SEQS:-64,128}; BATCHES=${BATCHES:-32,256}; STEPS=${STEPS:-10}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/check.log"; }
status=0
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
  # CUDA libraries of the host's PyTorch, if the system has none on the path.
  libs=$("$PYTHON" -c 'import nvidia, os; print(os.path.dirname(nvidia.__file__))' 2>/dev/null)/cu13/lib
  [ -d "$libs" ] && export LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}"
  # Peak GPU memory while the benchmarks run, sampled every 100 ms.
  (while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.1; done > "$OUT/mem.txt") &
  sampler=$!
fi

log "1. correctness: $DEVICE against the CPU (forward, loss, gradients)"
"$PRICER" lab check-device --base "$BASE" --device "$DEVICE" --seq 64 --batch 8 2>&1 | tee -a "$OUT/check.log" || status=1

log "2. candle throughput (examples/s), seq $SEQS x batch $BATCHES"
"$PRICER" lab bench --base "$BASE" --device "$DEVICE" --seq "$SEQS" --batch "$BATCHES" --steps "$STEPS" --json \
  2>&1 | tee "$OUT/candle.jsonl" || status=1

log "3. PyTorch throughput on the same device and shapes"
"$PYTHON" scripts/bench_torch.py "$BASE" --device "$DEVICE" --seq "$SEQS" --batch "$BATCHES" --steps "$STEPS" \
  2>&1 | grep '^{' | tee "$OUT/torch.jsonl" || status=1

log "4. full fine-tune on $DEVICE, export, eval"
rm -rf "$OUT/run"
start=$(date +%s)
"$PRICER" train --kind minilm --device "$DEVICE" --base "$BASE" --data "$DATA" --out "$OUT/run" \
  --epochs "$EPOCHS" --batch 32 --lr 1e-4 --max-tokens 128 --checkpoint-every 0 2>&1 | tee "$OUT/train.log" || status=1
echo "train seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/check.log"
"$PRICER" export "$OUT/run" --quant q8_0 --out "$OUT/model.gguf" 2>&1 | tee -a "$OUT/check.log" || status=1
"$PRICER" eval --model "$OUT/model.gguf" --data "$DATA" --json 2>&1 | tee "$OUT/eval.json" || status=1

[ -n "${sampler:-}" ] && kill "$sampler" 2>/dev/null
log "summary"
python3 - "$OUT" <<'PY' | tee -a "$OUT/check.log"
import json, os, sys
out = sys.argv[1]
read = lambda f: [json.loads(l) for l in open(os.path.join(out, f)) if l.startswith("{")] if os.path.exists(os.path.join(out, f)) else []
c, t = read("candle.jsonl"), read("torch.jsonl")
mem = os.path.join(out, "mem.txt")
peak = max((int(x) for x in open(mem) if x.strip().isdigit()), default=None) if os.path.exists(mem) else None
print(f"{'seq':>4} {'batch':>5} {'candle ex/s':>12} {'torch ex/s':>11} {'ratio':>6} {'torch MiB':>10}")
for a in c:
    b = next((x for x in t if x["seq"] == a["seq"] and x["batch"] == a["batch"]), None)
    tr = b["train_ex_s"] if b else float("nan")
    print(f"{a['seq']:>4} {a['batch']:>5} {a['train_ex_s']:>12.1f} {tr:>11.1f} {a['train_ex_s']/tr:>6.2f} {str(round(b['gpu_mem_mib'])) if b and b.get('gpu_mem_mib') else '-':>10}")
print(f"peak GPU memory used (nvidia-smi, whole run): {peak} MiB" if peak else "peak GPU memory: not sampled")
e = read("eval.json")
for s in e:
    print(f"fine-tuned on the device, test split {s.get('split', 'test')}: MAE ${s['mae']:.2f}, RMSLE {s['rmsle']:.3f}, hits {s['hits_pct']:.1f}%")
PY
exit $status
