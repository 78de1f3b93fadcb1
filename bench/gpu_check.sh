#!/usr/bin/env bash
# The single prepared GPU check: the GPU tests, then the GPU benchmarks, table printed last.
#
# Run from the repository root on the GPU machine (it needs cupy, torch, pytest there; nothing is
# installed and fastrnn is used in place):   bash bench/gpu_check.sh
# Output also goes to $OUT/gpu_check.log (and the table to $OUT/bench_table.txt) when $OUT is set.
# Each section runs under its own time limit and a failing section does not stop the next one.
# The limits sum to ~145 s so the whole check fits one 150 s device call; raise them with
# GPU_CHECK_TESTS_S / GPU_CHECK_PROFILE_S / GPU_CHECK_BENCH_S when a call may run longer.
set -u
cd "$(dirname "$0")/.."
LOG=${OUT:+$OUT/gpu_check.log}
exec > >(tee ${LOG:+"$LOG"}) 2>&1

echo "+ nvidia-smi"
timeout 5 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

echo "+ python bench/bench_gpu.py --pytest  (pytest -m gpu tests/)"
timeout ${GPU_CHECK_TESTS_S:-72} python bench/bench_gpu.py --pytest -p no:cacheprovider \
    -o junit_family=xunit2 ${OUT:+--junitxml="$OUT/gpu_tests.xml"}
echo "+ pytest exit code: $?"

echo "+ python bench/bench_gpu.py --profile  (device time of each kernel; FASTRNN_PROFILE_OLD=dir"
echo "  adds an older copy of kernels/ to compare)"
timeout ${GPU_CHECK_PROFILE_S:-22} python bench/bench_gpu.py --profile ${FASTRNN_PROFILE_OLD:-} \
    || echo "+ profile failed: exit code $?"

echo "+ python bench/bench_gpu.py"
timeout ${GPU_CHECK_BENCH_S:-45} python bench/bench_gpu.py --iters "${GPU_CHECK_ITERS:-100}" \
    || echo "+ bench failed: exit code $?"
