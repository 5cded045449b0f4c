#!/usr/bin/env bash
# Candle (pricer bench) against PyTorch + transformers fine-tuning the same
# MiniLM on the same shapes, on this machine; prints both and the ratio.
# Outside CI. Needs the base model (scripts/fetch-minilm.sh) and a python
# with torch and transformers: PYTHON=/path/to/venv/bin/python.
# Usage: scripts/bench-cpu.sh [SEQS] [BATCHES] [STEPS]   (defaults 128 16 5)
set -euo pipefail
cd "$(dirname "$0")/.."
base=${BASE:-models/all-MiniLM-L6-v2}
python=${PYTHON:-python3}
seqs=${1:-128}; batches=${2:-16}; steps=${3:-5}
cargo build --release -p pricer-trainer -q
candle=$(./target/release/pricer lab bench --base "$base" --seq "$seqs" --batch "$batches" --steps "$steps" --json)
torch=$("$python" scripts/bench_torch.py "$base" --seq "$seqs" --batch "$batches" --steps "$steps")
python3 - "$candle" "$torch" <<'PY'
import json, sys
c = [json.loads(l) for l in sys.argv[1].splitlines()]
t = [json.loads(l) for l in sys.argv[2].splitlines()]
print(f"{'seq':>5} {'batch':>5} {'candle train':>13} {'torch train':>12} {'ratio':>6} {'candle fwd':>11} {'torch fwd':>10} {'ratio':>6}   (examples/s)")
for a, b in zip(c, t):
    print(f"{a['seq']:>5} {a['batch']:>5} {a['train_ex_s']:>13.1f} {b['train_ex_s']:>12.1f} {a['train_ex_s']/b['train_ex_s']:>6.2f}"
          f" {a['forward_ex_s']:>11.1f} {b['forward_ex_s']:>10.1f} {a['forward_ex_s']/b['forward_ex_s']:>6.2f}")
print(f"({t[0]['framework']})")
PY
