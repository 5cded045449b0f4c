#!/usr/bin/env bash
# Builds the release `pricer` with `--features cuda` on a machine WITHOUT a
# GPU, for an H100 host (sm_90, driver 580 / CUDA 13.0), and packs it with xz.
#
# The CUDA 13.0 compilers and libraries come from PyPI into a venv; a
# CUDA_HOME of links makes them look like a toolkit; a stub libcuda.so
# (soname libcuda.so.1) satisfies the linker, since the real one ships with
# the GPU driver. On a machine with a normal CUDA install none of this is
# needed: `cargo build --release --features cuda` is enough.
#
# Usage: trainer/cuda/build.sh [OUT_DIR]   (default target/cuda; ~1.2 GB of
# wheels on the first run, ~20 minutes of compiling on 2 cores)
set -euo pipefail
started=$SECONDS
step() { echo "== [$((SECONDS - started)) s] $*"; }
trap 'echo "trainer/cuda/build.sh: failed at line $LINENO (exit $?)" >&2' ERR
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mkdir -p "${1:-$repo/target/cuda}" && cd "${1:-$repo/target/cuda}" && pwd)
venv=$out/venv
cuda=$out/cuda-home

step "CUDA 13.0 compilers and libraries from PyPI into $venv (~1.2 GB the first time)"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# Pinned: the driver on the target loads code from nvcc 13.0 and no newer.
"$venv/bin/pip" install -q --disable-pip-version-check \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14 \
  nvidia-curand==10.4.0.35 "nvidia-cuda-cccl==13.0.*"

step "a CUDA_HOME of links into the wheels: $cuda"
# A toolkit-shaped folder of links into the wheels.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$cuda" && mkdir -p "$cuda/bin" "$cuda/include" "$cuda/lib64"
for pkg in "$site"/nvidia/cu13 "$site"/nvidia/*/; do
  [ -d "$pkg" ] || continue
  for f in "$pkg"/bin/*; do [ -e "$f" ] && ln -sf "$f" "$cuda/bin/"; done
  for f in "$pkg"/include/*; do [ -e "$f" ] && ln -sf "$f" "$cuda/include/"; done
  for f in "$pkg"/lib/*.so* "$pkg"/lib64/*.so*; do
    [ -e "$f" ] || continue
    ln -sf "$f" "$cuda/lib64/"
    base=$(basename "$f"); ln -sf "$f" "$cuda/lib64/${base%%.so*}.so"
  done
  [ -d "$pkg/nvvm" ] && ln -sfn "$pkg/nvvm" "$cuda/nvvm"
done
command -v "$cuda/bin/nvcc" >/dev/null || { echo "nvcc not found in the wheels under $site/nvidia" >&2; exit 1; }

# The stub driver library: every cu* symbol cudarc declares, each returning
# CUDA_ERROR_STUB_LIBRARY (34). Only for linking; never loaded at run time.
step "a stub libcuda.so for linking, from cudarc's driver function list"
# No match is not an error here (a fresh cargo home has no cudarc yet): the
# glob is expanded by the shell and the first existing folder taken.
find_cudarc() {
  local d
  for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19*; do
    [ -d "$d" ] && { echo "$d"; return 0; }
  done
  return 0
}
cudarc_src=$(find_cudarc)
if [ -z "$cudarc_src" ]; then
  step "fetching the crates (cudarc is not in the cargo registry yet)"
  (cd "$repo" && cargo fetch --locked)
  cudarc_src=$(find_cudarc)
  [ -n "$cudarc_src" ] || { echo "cudarc 0.19 is still missing after cargo fetch: is Cargo.lock's candle 0.11?" >&2; exit 1; }
fi
grep -rhoE '\bcu[A-Z][A-Za-z0-9_]*(_v[0-9]+)?\b' "$cudarc_src/src/driver/sys" | sort -u |
  awk '{print "int " $1 "(void) { return 34; }"}' > "$out/libcuda_stub.c"
mkdir -p "$out/stub"
gcc -shared -fPIC -o "$out/stub/libcuda.so" -Wl,-soname,libcuda.so.1 "$out/libcuda_stub.c"
ln -sf libcuda.so "$out/stub/libcuda.so.1"

export CUDA_HOME=$cuda CUDA_PATH=$cuda CUDA_ROOT=$cuda
export PATH=$cuda/bin:$PATH
export LIBRARY_PATH=$out/stub:$cuda/lib64:${LIBRARY_PATH:-}
export LD_LIBRARY_PATH=$cuda/lib64:${LD_LIBRARY_PATH:-}
export CUDA_COMPUTE_CAP=90
nvcc --version | tail -2
step "cargo build --release --features cuda (~20 minutes on 2 cores the first time)"
(cd "$repo" && CARGO_TARGET_DIR=$out/target cargo build --release --locked --features cuda -p pricer-trainer)
step "packing with xz"
xz -T0 -9 -c "$out/target/release/pricer" > "$out/pricer-cuda.xz"
ls -l "$out/target/release/pricer" "$out/pricer-cuda.xz"
step "done"
echo "ship $out/pricer-cuda.xz; on the GPU host: xz -d, then trainer/cuda/check.sh"
