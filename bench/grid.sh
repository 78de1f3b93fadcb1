#!/usr/bin/env bash
# The shape grid (bench/test_bench_grid.py) built for one ISA on both sides, its report and picture:
#
#   bash bench/grid.sh avx2|native [--grid|--full] [more pytest arguments, e.g. -k "B16-H128"]
#
# native: Numba, PyTorch and OpenBLAS pick this CPU's widest ISA (AVX-512 on Zen 5).
# avx2:   Numba compiles for Zen 3 with its own features (AVX2; the on-disk cache keeps this build
#         apart from the native one), PyTorch dispatches to AVX2 (ATen, oneDNN, MKL), OpenBLAS
#         runs its Haswell kernels. extra_info records what each side compiled for / dispatched to.
# Writes out/grid-ISA-SIZE.json and .png (out/ is git-ignored; GRID_OUT_DIR overrides it).
set -euo pipefail
isa=${1:-}
size=${2:---grid}
case $isa in
  avx2) export NUMBA_CPU_NAME=znver3 NUMBA_CPU_FEATURES= ATEN_CPU_CAPABILITY=avx2 \
          ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 OPENBLAS_CORETYPE=Haswell ;;
  native) unset NUMBA_CPU_NAME NUMBA_CPU_FEATURES ATEN_CPU_CAPABILITY ONEDNN_MAX_CPU_ISA \
            MKL_ENABLE_INSTRUCTIONS OPENBLAS_CORETYPE OPENBLAS_L2_SIZE ;;
  *) echo "usage: bash bench/grid.sh avx2|native [--grid|--full] [pytest arguments]" >&2; exit 2 ;;
esac
case $size in
  --grid|--full) ;;
  *) echo "bench/grid.sh: the size is --grid or --full, not '$size'" >&2; exit 2 ;;
esac
shift $(( $# < 2 ? $# : 2 ))
cd "$(dirname "$0")/.."
out=${GRID_OUT_DIR:-out}/grid-$isa-${size#--}
mkdir -p "$(dirname "$out")"
python -m pytest bench/test_bench_grid.py --benchmark-only -q "$size" \
  --benchmark-json="$out.json" "$@"
python bench/report.py "$out.json" --plot "$out.png"
echo "bench/grid.sh: $out.json, $out.png"
