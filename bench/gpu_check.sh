#!/usr/bin/env bash
# The single prepared GPU check: the GPU tests, the self-check, the example on MNIST when a copy is
# found ($FASTRNN_DATA_DIR or .devdata/mnist), then the GPU benchmarks, table printed last.
#
# Run from the repository root on the GPU machine (it needs cupy, torch, pytest there; nothing is
# installed and fastrnn is used in place):   bash bench/gpu_check.sh
# From a session with the device tool: copy ../shared/data/mnist to .devdata/mnist (ignored by git
# through .git/info/exclude), then run(command="bash bench/gpu_check.sh", carry=[".devdata"]).
# Output also goes to $OUT/gpu_check.log (and the table to $OUT/bench_table.txt) when $OUT is set.
# Each section runs under its own time limit and a failing section does not stop the next one.
# The limits sum to ~380 s (GPU_CHECK_PROFILE_S=0 skips the per-kernel profile, -22 s); change
# them with GPU_CHECK_TESTS_S / _SELFCHECK_S / _EXAMPLE_S / _PROFILE_S / _BENCH_S. The tests take
# the most: the GPU tests that compare with the CPU backend compile its Numba kernels first
# (~30 s on a fresh machine), and the 12 slowest are listed after the run.
set -u
cd "$(dirname "$0")/.."
LOG=${OUT:+$OUT/gpu_check.log}
exec > >(tee ${LOG:+"$LOG"}) 2>&1

# fastrnn.kernels is the top-level kernels/ folder only through the pip install: link it in place
python -c "import fastrnn.kernels" 2>/dev/null || ln -sfn ../kernels fastrnn/kernels
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export FASTRNN_DATA_DIR=${FASTRNN_DATA_DIR:-$PWD/.devdata/mnist}

echo "+ nvidia-smi"
timeout 5 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
if ! python -c "import cupy, sys; sys.exit(cupy.cuda.runtime.getDeviceCount() < 1)" 2>/dev/null
then
  echo "+ no usable GPU (CuPy missing or no device): only the self-check runs"
  timeout ${GPU_CHECK_SELFCHECK_S:-20} python -m fastrnn
  exit
fi

echo "+ python bench/bench_gpu.py --pytest  (pytest -m gpu tests/)"
timeout ${GPU_CHECK_TESTS_S:-240} python bench/bench_gpu.py --pytest -p no:cacheprovider \
    --durations=12 -o junit_family=xunit2 ${OUT:+--junitxml="$OUT/gpu_tests.xml"}
echo "+ pytest exit code: $?"

echo "+ python -m fastrnn  (versions, backends, self-check of each against the reference)"
timeout ${GPU_CHECK_SELFCHECK_S:-20} python -m fastrnn || echo "+ self-check failed: exit code $?"

if [ -d "$FASTRNN_DATA_DIR" ]; then
  for layers in 1 3; do
    echo "+ python examples/train_mnist.py --device cuda --layers $layers --no-shuffle --quiet"
    timeout ${GPU_CHECK_EXAMPLE_S:-30} python examples/train_mnist.py --device cuda \
        --layers $layers --no-shuffle --quiet || echo "+ example failed: exit code $?"
  done
else
  echo "+ no MNIST copy at $FASTRNN_DATA_DIR: example skipped"
fi

if [ "${GPU_CHECK_PROFILE_S:-22}" -gt 0 ]; then
  echo "+ python bench/bench_gpu.py --profile  (device time of each kernel; FASTRNN_PROFILE_OLD=dir"
  echo "  adds an older copy of kernels/ to compare)"
  timeout ${GPU_CHECK_PROFILE_S:-22} python bench/bench_gpu.py --profile ${FASTRNN_PROFILE_OLD:-} \
      || echo "+ profile failed: exit code $?"
fi

echo "+ python bench/bench_gpu.py"
timeout ${GPU_CHECK_BENCH_S:-45} python bench/bench_gpu.py --iters "${GPU_CHECK_ITERS:-100}" \
    || echo "+ bench failed: exit code $?"
