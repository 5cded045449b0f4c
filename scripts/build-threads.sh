#!/usr/bin/env bash
# Builds the worker with threads for one estimate into DIST/threads/
# (worker_threads.js and worker_threads_bg.wasm), beside a page that
# scripts/build-web.sh (trunk) built into DIST. The page starts it where it
# is cross-origin isolated (the service worker's headers, from its second
# load) and the browser has relaxed SIMD; elsewhere it runs as before.
#
#   scripts/build-threads.sh [--dist DIR] [--opt N] [--test | --clippy]
#
# --opt: wasm-opt's level (default 3). --test: the tests' build, compiled at
# opt-level 1 (in target/threads-test) and wasm-opt -O1: less to compile on a
# fresh machine, the same estimates (the tests compare them with the
# single-thread worker's and the CLI's). --clippy: builds nothing; lints the
# threaded worker's code (what `cfg(target_feature = "atomics")` compiles)
# with rustup's clippy and the same target features, since rustc-web ships
# no clippy (a check needs no std built with atomics).
#
# Wasm threads need std built with atomics: Debian's rustc-web 1.96
# (scripts/setup.sh --threads installs it) and `-Z build-std`, so every
# crate is compiled again by it, in target/threads (~15 minutes on 2 cores
# the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
dist=$PWD/dist
opt=3
target=target/threads
while [ $# -gt 0 ]; do
  case $1 in
    --dist) dist=${2:?--dist needs a folder}; shift 2 ;;
    --opt) opt=${2:?--opt needs a level}; shift 2 ;;
    --test) opt=1; target=target/threads-test; export CARGO_PROFILE_RELEASE_OPT_LEVEL=1; shift ;;
    --clippy) clippy=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
features=(-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128,+relaxed-simd)
worker=(-p pricer-web --bin worker_threads --no-default-features --features threads,relaxed-simd)
if [ -n "${clippy:-}" ]; then
  # RUSTC_BOOTSTRAP: the stable compiler takes the unstable `atomics` feature
  # (and so sets its cfg); cargo caches the target's cfg without it.
  rm -f target/clippy-threads/.rustc_info.json
  RUSTC_BOOTSTRAP=1 CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="${features[*]}" \
    cargo clippy --release --locked --target wasm32-unknown-unknown --target-dir target/clippy-threads "${worker[@]}" -- -D warnings
  exit
fi
[ -f "$dist/index.html" ] || { echo "no page in $dist: run scripts/build-web.sh first" >&2; exit 2; }
scripts/setup.sh --threads
export PATH="$PWD/.tools/node_modules/.bin:$PATH"

# The 1.96 compiler for every crate (1.95 cannot compile 1.96's std), with
# nightly flags allowed, and the shared memory the threads work in: imported
# (wasm-bindgen creates it shared), at most 2 GiB, with the thread-local
# storage symbols wasm-bindgen's thread support looks for.
export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
flags=(
  "${features[@]}"
  -C linker=wasm-ld-22
  -C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--max-memory=2147483648
  -C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size
  -C link-arg=--export=__tls_align -C link-arg=--export=__tls_base
)
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="${flags[*]}"
/usr/bin/cargo build --release --locked --target wasm32-unknown-unknown --target-dir "$target" \
  -Z build-std=panic_abort,std "${worker[@]}"

out=$dist/threads
rm -rf "$out"
mkdir -p "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" \
  "$target/wasm32-unknown-unknown/release/worker_threads.wasm"
wasm-opt "-O$opt" --enable-threads --enable-bulk-memory --enable-mutable-globals --enable-simd \
  --enable-relaxed-simd --enable-sign-ext --enable-nontrapping-float-to-int --enable-reference-types \
  --enable-multivalue "$out/worker_threads_bg.wasm" -o "$out/worker_threads_bg.wasm"
echo "built $out ($(du -sh "$out" | cut -f1))"
