#!/usr/bin/env bash
# Installs what building the web app (and, with --test, running every test;
# with --threads, building the threaded worker) needs on a fresh Debian
# machine with rustup, cargo, node and npm. Each tool is checked first and
# installed only when missing or of the wrong version.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$PWD/.tools
mkdir -p "$tools"

want_trunk=0.21.14
want_binaryen=132
# wasm-bindgen-cli must equal the wasm-bindgen crate in Cargo.lock.
want_bindgen=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# The tools are built with a light profile: their own release profiles ask
# for fat LTO and one codegen unit (19 and 10 minutes here on 2 cores), while
# the work they do for us takes the same time either way: trunk at opt-level 0
# (3 min to build) builds the page as fast as at 1 (it waits on cargo and
# wasm-opt); wasm-bindgen keeps opt-level 1, since it rewrites megabytes of
# wasm itself (docs/benchmarks.md, "The first test run").
light_install() {
  local opt=$1
  shift
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=$opt CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_INCREMENTAL=false cargo install "$@"
}
if [ "$(trunk --version 2>/dev/null)" != "trunk $want_trunk" ]; then
  echo "installing trunk $want_trunk"
  light_install 0 trunk --version "$want_trunk" --locked
fi
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $want_bindgen" ]; then
  echo "installing wasm-bindgen-cli $want_bindgen"
  # Without --locked: its lockfile pins a crate version the registry lacks.
  light_install 1 wasm-bindgen-cli --version "=$want_bindgen"
fi
if [ "$("$tools/node_modules/.bin/wasm-opt" --version 2>/dev/null | awk '{print $3}')" != "$want_binaryen" ]; then
  echo "installing binaryen $want_binaryen (npm)"
  npm install --prefix "$tools" --no-audit --no-fund "binaryen@$want_binaryen" >/dev/null
fi

if [ "${1:-}" = "--threads" ]; then
  # Debian bookworm-security's Rust 1.96 for the web (std sources included,
  # which build-std needs and rustup's 1.95 here lacks) and LLVM 22's wasm-ld.
  if [ "$(/usr/bin/rustc --version 2>/dev/null | awk '{print $2}')" != 1.96.0 ] ||
    [ ! -d /usr/lib/rustlib/src/rust/library ] || ! command -v wasm-ld-22 >/dev/null; then
    echo "installing rustc-web 1.96 and wasm-ld-22 (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      rustc-web cargo-web rust-web-src lld-22 >/dev/null
  fi
fi

if [ "${1:-}" = "--test" ]; then
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "installing chromium (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && npm ci --no-audit --no-fund >/dev/null)
  fi
  if ! "$tools/venv/bin/python" -c "import gguf" 2>/dev/null; then
    echo "installing the Python gguf reader (PyPI) into .tools/venv"
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install -q gguf
  fi
fi
