#!/usr/bin/env bash
# The accuracy levers of round 3, one fine-tune each, on a GPU host (or, with
# DEVICE=cpu, anywhere: hours on 2 cores). Each lever changes one thing from
# the base recipe; the table compares the encoder's best validation MAE (its
# own price head, validation splits of $DATA) and the time. The winner's run
# directory is what `pricer export` then stacks (on any machine).
#
#   LEVERS="base seed2 llrd focus epochs6 tokens160 mlm pseudo soup"   which ones, in order
#   (seed2 tells the levers from chance; soup averages the seed-42 runs before it;
#   curate cuts texts at 160 tokens, so more than 160 needs the data curated again)
#   PRICER=./pricer-cuda BASE=models/all-MiniLM-L6-v2 DATA=data/all2 OUT=levers
#   UNPRICED=PATH/unpriced-22k.jsonl.gz   texts without prices (required by mlm and pseudo)
#   LABELER=static/models/default.gguf                         (pseudo: the model that prices)
#
# On an H200 a 3-epoch fine-tune of 12k items is expected to take a minute or
# two; run fewer levers per call to stay inside a 10-minute command.
set -uo pipefail
cd "$(dirname "$0")/../.."
PRICER=${PRICER:-./pricer-cuda}; BASE=${BASE:-models/all-MiniLM-L6-v2}; DATA=${DATA:-data/all2}
OUT=${OUT:-levers}; DEVICE=${DEVICE:-cuda}; LEVERS=${LEVERS:-base seed2 llrd focus epochs6 tokens160 mlm pseudo soup}
UNPRICED=${UNPRICED:-}; LABELER=${LABELER:-static/models/default.gguf}
case " $LEVERS " in *" mlm "*|*" pseudo "*)
  [ -f "$UNPRICED" ] || { echo "levers.sh: set UNPRICED to a file of texts without prices (mlm, pseudo)" >&2; exit 2; } ;;
esac
BATCH=${BATCH:-32}; LR=${LR:-1e-4}; EPOCHS=${EPOCHS:-3}
mkdir -p "$OUT"
status=0
finetune() { # name, extra arguments...
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  local start=$SECONDS
  "$PRICER" train --kind minilm --device "$DEVICE" --data "$DATA" --out "$OUT/$name" --batch "$BATCH" \
    --lr "$LR" --checkpoint-every 0 "$@" 2>&1 | tee "$OUT/$name.log" | grep -E "^(epoch [0-9]+/[0-9]+:|done|self-training|focus)" || status=1
  echo "$name seconds: $((SECONDS - start))" | tee -a "$OUT/times.txt"
}
for lever in $LEVERS; do
  echo "== $lever"
  case $lever in
    base) finetune base --base "$BASE" --epochs "$EPOCHS" --max-tokens 128 ;;
    seed2) finetune seed2 --base "$BASE" --epochs "$EPOCHS" --max-tokens 128 --seed 43 ;;
    soup) # the finished runs of seed 42 and 128 tokens, best-first, each kept only if validation improves
      # (runs of different seeds do not average: their heads start apart)
      rm -rf "${OUT:?}/soup"
      runs=()
      for r in base llrd focus mlm pseudo; do [ -f "$OUT/$r/best.safetensors" ] && runs+=("$OUT/$r"); done
      if [ ${#runs[@]} -ge 2 ]; then
        "$PRICER" lab soup "${runs[@]}" --greedy --device "$DEVICE" --out "$OUT/soup" > "$OUT/soup.log" 2>&1
        grep -E "^soup of|no run improved" "$OUT/soup.log" || { tail -n 3 "$OUT/soup.log"; status=1; }
      else
        echo "soup: needs two finished runs of base llrd focus mlm pseudo first"
      fi ;;
    llrd) finetune llrd --base "$BASE" --epochs "$EPOCHS" --max-tokens 128 --layer-decay 0.8 ;;
    focus) finetune focus --base "$BASE" --epochs "$EPOCHS" --max-tokens 128 --focus 1 ;;
    epochs6) finetune epochs6 --base "$BASE" --epochs 6 --max-tokens 128 --patience 3 ;;
    tokens160) finetune tokens160 --base "$BASE" --epochs "$EPOCHS" --max-tokens 160 ;;
    mlm)
      rm -rf "${OUT:?}/mlm-base"
      start=$SECONDS
      "$PRICER" lab mlm --device "$DEVICE" --base "$BASE" --texts "$DATA" "$UNPRICED" --out "$OUT/mlm-base" \
        --epochs 1 --batch 64 --lr 1e-4 --max-tokens 128 --checkpoint-every 0 2>&1 | tee "$OUT/mlm-base.log" \
        | grep -E "^(held-out|epoch [0-9]+/[0-9]+:|done|[0-9]+ distinct)" || status=1
      echo "mlm-base seconds: $((SECONDS - start))" | tee -a "$OUT/times.txt"
      finetune mlm --base "$OUT/mlm-base" --epochs "$EPOCHS" --max-tokens 128 ;;
    pseudo)
      [ -f "$OUT/pseudo.jsonl" ] || "$PRICER" lab pseudo-label --model "$LABELER" --texts "$DATA" "$UNPRICED" \
        --out "$OUT/pseudo.jsonl" 2>&1 | tail -n 1 || status=1
      finetune pseudo --base "$BASE" --epochs "$EPOCHS" --max-tokens 128 --pseudo "$OUT/pseudo.jsonl" --pseudo-weight 0.3 ;;
    *) echo "unknown lever $lever" >&2; status=1 ;;
  esac
done
echo "== best validation MAE of the encoder's own head, per lever ($DATA, $DEVICE)"
python3 - "$OUT" $LEVERS <<'PY'
import json, os, sys
out = sys.argv[1]
for lever in sys.argv[2:]:
    f = os.path.join(out, lever, "run.json")
    if not os.path.exists(f):
        print(f"{lever:>10}: no run"); continue
    run = json.load(open(f))
    s = run["state"]
    if run.get("soup"):
        kept = sum(i["kept"] for i in run["soup"]["ingredients"])
        print(f"{lever:>10}: best ${s['best_val_mae']:.2f} (the weights of {kept} runs averaged)"); continue
    h = " ".join(f"{e['val_mae']:.2f}" for e in s["history"])
    print(f"{lever:>10}: best ${s['best_val_mae']:.2f} at epoch {s['best_epoch']} (per epoch: {h})")
PY
exit $status
