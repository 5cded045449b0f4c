#!/usr/bin/env bash
# Builds the web app (with the default model, or --model FILE) and serves it
# on http://127.0.0.1:${PORT:-8080}/ (Ctrl-C stops it).
#
#   scripts/serve.sh [--model FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-web.sh "$@"
port=${PORT:-8080}
echo "Pricer at http://127.0.0.1:$port/"
exec python3 -m http.server "$port" --bind 127.0.0.1 --directory dist
