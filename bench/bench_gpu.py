"""GPU benchmark: fastrnn's CUDA training step and inference against PyTorch nn.RNN + cuDNN.

Run from the repository root on a machine with a GPU, CuPy and torch (no install needed)::

    python bench/bench_gpu.py            # benchmarks, table printed last
    python bench/bench_gpu.py --pytest   # the GPU tests (pytest -m gpu tests/) with the same shim
    python bench/bench_gpu.py --profile [DIR ...]   # device time of each kernel of a step

``--profile`` compiles the kernels of ``kernels/`` (and of each extra DIR holding an older copy of
the ``.cu`` files and its ``cuda_launch.py``, to compare versions in one run), captures 50
back-to-back launches of each kernel in a CUDA graph and times replays with CUDA events: device
time per launch, graph-node gaps included.

``bench/gpu_check.sh`` runs both. The repository is used in place: ``fastrnn.kernels`` is the
top-level ``kernels/`` folder only through the pip install's package-dir mapping, so
:func:`import_in_place` adds the repository root to ``fastrnn.__path__`` when the package is not
installed.

Measured per configuration (B, T, I, H, layers), medians over repeats:
- ``train``: one full training step (forward, xent, BPTT, dense grads, Adam) as the API runs it,
  returning loss and accuracy as Python floats (one synchronisation per step, both libraries).
- ``train graph``: fastrnn's captured CUDA graph replayed back to back, timed with CUDA events
  (device time of a step without Python; shown when the graph is used).
- ``infer``: logits for a batch, synchronised.
PyTorch: nn.RNN(tanh, batch_first) + nn.Linear + CrossEntropyLoss + Adam (cuDNN picks its own
algorithm), same sizes, float32, TF32 off.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [  # (B, T, I, H, layers)
    (128, 28, 28, 31, 1),
    (128, 28, 28, 31, 3),
    (64, 100, 64, 256, 1),
    (64, 100, 64, 256, 3),
]
C = 10
ROWS: list[tuple] = []  # (config, what, library, median_us)


def import_in_place():
    """Make ``fastrnn`` and ``fastrnn.kernels`` importable from this checkout without installing."""
    sys.path.insert(0, str(ROOT))
    import fastrnn

    try:
        import fastrnn.kernels  # noqa: F401  (installed, or already mapped)
    except ImportError:
        fastrnn.__path__.append(str(ROOT))  # fastrnn.kernels -> ROOT/kernels
        import fastrnn.kernels  # noqa: F401
    return fastrnn


def section(title):
    print(f"\n+ {title}", flush=True)


def _median_us(samples):
    return 1e6 * statistics.median(samples)


def time_host(fn, iters, warmup=5):
    """Median wall time of ``fn()`` (which must synchronise) in microseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return _median_us(samples)


def bench_fastrnn(cfg, iters):
    import cupy as cp

    from fastrnn.backends import get_backend
    from fastrnn.params import ModelSpec, init_params

    B, T, I, H, Lk = cfg
    spec = ModelSpec(I, H, Lk, C)
    clf = get_backend("cuda").classifier(spec)
    params = cp.asarray(init_params(spec, 0))
    m, v = cp.zeros_like(params), cp.zeros_like(params)
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.uniform(0, 1, (B, T, I)).astype(np.float32))
    labels = cp.asarray(rng.integers(0, C, B))
    step = [0]

    def train():
        step[0] += 1
        clf.train_step(params, m, v, step[0], x, labels, 1e-3, 0.9, 0.999, 1e-8, 0.0)

    ROWS.append((cfg, "train", "fastrnn-cuda", time_host(train, iters)))
    bf = clf._bufs.get((B, T))
    if bf is not None and bf.graph is not None:
        s = clf._stream
        start, end = cp.cuda.Event(), cp.cuda.Event()
        samples = []
        for _ in range(max(3, iters // 20)):
            start.record(s)
            for _ in range(20):
                bf.graph.launch(s)
            end.record(s)
            end.synchronize()
            samples.append(cp.cuda.get_elapsed_time(start, end) / 1e3 / 20)
        ROWS.append((cfg, "train graph", "fastrnn-cuda", _median_us(samples)))

    def infer():
        clf.predict(params, x)
        cp.cuda.get_current_stream().synchronize()

    ROWS.append((cfg, "infer", "fastrnn-cuda", time_host(infer, iters)))


def bench_torch(cfg, iters):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    B, T, I, H, Lk = cfg
    dev = torch.device("cuda")
    rnn = torch.nn.RNN(I, H, num_layers=Lk, nonlinearity="tanh", batch_first=True).to(dev)
    dense = torch.nn.Linear(H, C).to(dev)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(list(rnn.parameters()) + list(dense.parameters()), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, T, I, generator=g).to(dev)
    labels = torch.randint(0, C, (B,), generator=g).to(dev)

    def train():
        opt.zero_grad(set_to_none=True)
        _, h_n = rnn(x)
        logits = dense(h_n[-1])
        loss = loss_fn(logits, labels)
        loss.backward()
        opt.step()
        loss.item()
        (logits.argmax(1) == labels).float().mean().item()

    ROWS.append((cfg, "train", "torch+cuDNN", time_host(train, iters)))

    def infer():
        with torch.no_grad():
            _, h_n = rnn(x)
            dense(h_n[-1])
        torch.cuda.synchronize()

    ROWS.append((cfg, "infer", "torch+cuDNN", time_host(infer, iters)))


def print_table():
    lines = ["", "+ summary: median microseconds per call (lower is better)",
             f"{'B,T,I,H,L':>18} {'what':>12} {'fastrnn-cuda':>13} {'torch+cuDNN':>12} "
             f"{'speedup':>8}"]
    for cfg in CONFIGS:
        for what in ("train", "train graph", "infer"):
            got = {lib: us for c, w, lib, us in ROWS if c == cfg and w == what}
            if not got:
                continue
            f = got.get("fastrnn-cuda")
            t = got.get("torch+cuDNN") or next((us for c, w, lib, us in ROWS if c == cfg
                                                and w == "train" and lib == "torch+cuDNN"
                                                and what == "train graph"), None)
            sp = f"{t / f:7.1f}x" if f and t else "       -"
            lines.append(f"{','.join(map(str, cfg)):>18} {what:>12} "
                         f"{f'{f:.1f}' if f else '-':>13} {f'{t:.1f}' if t else '-':>12} {sp:>8}")
    lines.append("goals (H200, 128,28,28,31): train <= 20 us (1 layer), <= 50 us (3 layers), "
                 ">= 20x torch")
    text = "\n".join(lines)
    print(text, flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out, "bench_table.txt").write_text(text + "\n")


def run_pytest(extra):
    import pytest

    # --continue-on-collection-errors: a test file needing a package this machine lacks (pooch,
    # hypothesis) must not stop the GPU tests from running.
    return pytest.main(["-m", "gpu", "-q", "-rfE", "--continue-on-collection-errors",
                        str(ROOT / "tests"), *extra])


def _load_kernels(kdir: Path):
    """``(cuda_launch module, {file: RawModule})`` compiled from the sources in ``kdir``."""
    import importlib.util

    import cupy as cp

    spec = importlib.util.spec_from_file_location(f"cl_{abs(hash(str(kdir)))}",
                                                  kdir / "cuda_launch.py")
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    mods = {}
    for f in ("rnn_forward.cu", "rnn_backward.cu", "classifier.cu"):
        code = f'#line 1 "{kdir / f}"\n' + (kdir / f).read_text()
        mods[f] = cp.RawModule(code=code, options=(f"-I{kdir}", "--std=c++17"))
    return launch, mods


def _time_graph(fn, reps=50, samples=7):
    """Device microseconds per call of ``fn`` (which enqueues one launch), from a captured graph
    of ``reps`` calls replayed ``samples`` times."""
    import cupy as cp

    s = cp.cuda.Stream(non_blocking=True)
    with s:
        fn()
        s.synchronize()
        s.begin_capture()
        for _ in range(reps):
            fn()
        g = s.end_capture()
    g.launch(s)
    s.synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    out = []
    for _ in range(samples):
        start.record(s)
        g.launch(s)
        end.record(s)
        end.synchronize()
        out.append(cp.cuda.get_elapsed_time(start, end) * 1e3 / reps)
    return statistics.median(out)


def profile_kernels(kdir: Path, label: str):
    """Per-kernel device time of one training step's launches at the showcase shape and of the
    block-path recurrence at the large shape, for the kernels in ``kdir``."""
    import cupy as cp

    L, mods = _load_kernels(kdir)
    i32, f32, null = np.int32, np.float32, np.uint64(0)
    rng = np.random.default_rng(0)

    def arr(*shape, scale=0.3):
        return cp.asarray((rng.standard_normal(shape) * scale).astype(f32))

    def k(f, name, shape, args):
        fn = mods[f].get_function(name)
        if shape.shared_mem > 48 * 1024:
            fn.max_dynamic_shared_size_bytes = shape.shared_mem
        return lambda: fn(shape.grid, shape.block, args, shared_mem=shape.shared_mem)

    res = []
    B, T, I, H, C = 128, 28, 28, 31, 10
    x, w_ih, w_hh, b = arr(B, T, I), arr(H, I), arr(H, H), arr(H)
    y, hn, dz, dx, dh0 = arr(B, T, H), arr(B, H), arr(B, T, H), arr(B, T, H), arr(B, H)
    dyv = arr(B, T, H)
    sx, sy = L.seq_strides(B, T, I, False), L.seq_strides(B, T, H, False)
    w_out, b_out, labels = arr(C, H), arr(C), cp.asarray(rng.integers(0, C, B))
    row_loss, row_corr, dlog, dh, out2 = arr(B), arr(B), arr(B, C), arr(B, H), arr(2)
    dw_out, db_out, dwi, dwh, dbb = arr(C, H), arr(C), arr(H, I), arr(H, H), arr(H)
    n = 2180
    pp, gg, mm, vv = arr(n), arr(n), arr(n), cp.abs(arr(n))
    hyper = cp.asarray(np.asarray(L.adam_hyper(3, 1e-3, 0.9, 0.999, 1e-8), dtype=f32))
    npart = cp.zeros(L.norm_part_size(n), dtype=cp.float64)
    loss1, norm1, applied1 = arr(1), arr(1), arr(1)
    flags = cp.zeros(L.adam_launch(n).grid[0], dtype=cp.int32)
    cases = [
        ("fwd_warp B128 T28 I28 H31", k("rnn_forward.cu", "rnn_fwd_warp", L.fwd_warp_launch(B),
         (x, w_ih, w_hh, b, null, null, y, hn, i32(B), i32(T), i32(I), i32(H), i32(1),
          i32(sx[0]), i32(sx[1]), i32(sy[0]), i32(sy[1]), i32(0)))),
        ("dense_xent_rows B128 C10", k("classifier.cu", "dense_xent_rows", L.rows_launch(B, C),
         (hn, w_out, b_out, labels, null, row_loss, row_corr, dlog, dh, i32(B), i32(C), i32(H)))),
        ("dense_grads_reduce", k("classifier.cu", "dense_grads_reduce", L.reduce_launch(C, H),
         (dlog, hn, row_loss, row_corr, dw_out, db_out, out2, i32(B), i32(C), i32(H)))),
        ("bwd_warp (no dx)", k("rnn_backward.cu", "rnn_bwd_warp", L.bwd_warp_launch(B),
         (null, dh, null, w_hh, y, null, dz, null, dh0, i32(B), i32(T), i32(I), i32(H),
          i32(sy[0]), i32(sy[1]), i32(sx[0]), i32(sx[1]), i32(0)))),
        ("bwd_warp (dy, dx)", k("rnn_backward.cu", "rnn_bwd_warp", L.bwd_warp_launch(B),
         (dyv, dh, w_hh, w_hh, y, null, dz, dx, dh0, i32(B), i32(T), i32(H), i32(H),
          i32(sy[0]), i32(sy[1]), i32(sy[0]), i32(sy[1]), i32(0)))),
    ]
    if hasattr(L, "wgrad_partial_launch"):  # split-K weight gradients (round 2)
        part = arr(L.wgrad_part_size(B, T, I, H))
        cases += [
            ("wgrad_partial I28 H31", k("rnn_backward.cu", "rnn_wgrad_partial",
             L.wgrad_partial_launch(B, T, I, H),
             (dz, x, y, null, part, i32(B), i32(T), i32(I), i32(H), i32(sx[0]), i32(sx[1]),
              i32(sy[0]), i32(sy[1]), *map(i32, L.wgrad_plan(B, T, I, H))))),
            ("wgrad_reduce I28 H31", k("rnn_backward.cu", "rnn_wgrad_reduce",
             L.wgrad_reduce_launch(I, H),
             (part, dwi, dwh, dbb, i32(L.wgrad_blocks(B, T, I, H)), i32(I), i32(H)))),
        ]
    else:
        cases.append(("weight_grads I28 H31", k("rnn_backward.cu", "rnn_weight_grads",
                      L.wgrad_launch(I, H),
                      (dz, x, y, null, dwi, dwh, dbb, i32(B), i32(T), i32(I), i32(H),
                       i32(sx[0]), i32(sx[1]), i32(sy[0]), i32(sy[1])))))
    cases += [
        ("grad_sumsq_partial n=2180", k("classifier.cu", "grad_sumsq_partial",
         L.norm_launch(n), (gg, npart, i32(n)))),
        ("adam check n=2180", k("classifier.cu", "adam_update", L.adam_launch(n),
         (pp, gg, mm, vv, hyper, npart, i32(npart.size), loss1, flags, norm1, applied1, i32(n),
          i32(1)))),
        ("adam apply n=2180", k("classifier.cu", "adam_update", L.adam_launch(n),
         (pp, gg, mm, vv, hyper, npart, i32(npart.size), loss1, flags, norm1, applied1, i32(n),
          i32(0)))),
        ("adam n=1 (launch floor)", k("classifier.cu", "adam_update", L.adam_launch(1),
         (pp, gg, mm, vv, hyper, npart, i32(1), loss1, flags, norm1, applied1, i32(1),
          i32(0)))),
    ]
    B2, T2, H2 = 64, 100, 256
    xp2, y2, dz2, wt2 = arr(B2, T2, H2), arr(B2, T2, H2), arr(B2, T2, H2), arr(H2, H2, scale=0.06)
    b2, hn2, dh2 = arr(H2), arr(B2, H2), arr(B2, H2)
    s2 = L.seq_strides(B2, T2, H2, False)
    spb, wsm = L.block_plan(B2, H2)
    cases += [
        ("fwd_block B64 T100 H256", k("rnn_forward.cu", "rnn_fwd_block",
         L.fwd_block_launch(B2, H2, spb, wsm),
         (xp2, wt2, b2, null, null, y2, hn2, i32(B2), i32(T2), i32(H2), i32(s2[0]), i32(s2[1]),
          i32(s2[0]), i32(s2[1]), i32(spb), i32(wsm), i32(0)))),
        ("bwd_block B64 T100 H256", k("rnn_backward.cu", "rnn_bwd_block",
         L.bwd_block_launch(B2, H2, spb, wsm),
         (dz2, dh2, wt2, y2, null, dz2, dh2, i32(B2), i32(T2), i32(H2), i32(s2[0]), i32(s2[1]),
          i32(spb), i32(wsm), i32(0)))),
    ]
    B3, H3 = 64, 128  # W_hh staged in shared memory when the plan allows (opt-in above 48 KB)
    xp3, y3, wt3, b3, hn3 = arr(B3, T2, H3), arr(B3, T2, H3), arr(H3, H3, scale=0.08), arr(H3), \
        arr(B3, H3)
    s3 = L.seq_strides(B3, T2, H3, False)
    spb3, wsm3 = L.block_plan(B3, H3)
    cases.append((f"fwd_block B64 T100 H128 smem={wsm3}", k(
        "rnn_forward.cu", "rnn_fwd_block", L.fwd_block_launch(B3, H3, spb3, wsm3),
        (xp3, wt3, b3, null, null, y3, hn3, i32(B3), i32(T2), i32(H3), i32(s3[0]), i32(s3[1]),
         i32(s3[0]), i32(s3[1]), i32(spb3), i32(wsm3), i32(0)))))
    for name, fn in cases:
        try:
            us = _time_graph(fn, reps=50 if "T100" not in name else 5)
        except Exception as e:  # keep profiling the others
            us = float("nan")
            print(f"{label} {name}: {type(e).__name__}: {e}", flush=True)
        res.append((name, us))
        print(f"{label:>10} {name:<34} {us:9.1f} us", flush=True)
    return res


def run_profile(dirs):
    import cupy as cp

    cp.cuda.Device(0).use()
    tables = [("kernels", profile_kernels(ROOT / "kernels", "current"))]
    for d in dirs:
        d = Path(d).resolve()
        if (d / "cuda_launch.py").exists():
            tables.append((d.name, profile_kernels(d, d.name)))
    names = [n for n, _ in tables[0][1]]
    lines = ["", "+ per-kernel device time, us per launch (graph of back-to-back launches)",
             f"{'kernel':<34}" + "".join(f"{t:>14}" for t, _ in tables)]
    for i, nm in enumerate(names):
        lines.append(f"{nm:<34}" + "".join(f"{r[i][1]:14.1f}" if i < len(r) else f"{'-':>14}"
                                           for _, r in tables))
    text = "\n".join(lines)
    print(text, flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out, "profile.txt").write_text(text + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pytest", action="store_true", help="run the GPU tests instead")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--profile", nargs="*", metavar="DIR",
                    help="time each kernel (and those of each older copy DIR) instead")
    args, extra = ap.parse_known_args()
    os.chdir(ROOT)
    import_in_place()
    if args.pytest:
        sys.exit(run_pytest(extra))
    if args.profile is not None:
        run_profile(args.profile)
        return

    section("environment")
    try:
        import cupy as cp

        props = cp.cuda.runtime.getDeviceProperties(0)
        print(f"device: {props['name'].decode()}  SMs: {props['multiProcessorCount']}  "
              f"cupy {cp.__version__}  CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}")
    except Exception:
        traceback.print_exc()
    try:
        import torch

        print(f"torch {torch.__version__}  cuDNN {torch.backends.cudnn.version()}")
    except Exception:
        traceback.print_exc()

    # a time limit (SIGTERM from `timeout`) still prints the table of what was measured
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for cfg in CONFIGS:
            iters = args.iters if cfg[3] <= 32 else max(20, args.iters // 5)
            for name, fn in (("fastrnn-cuda", bench_fastrnn), ("torch+cuDNN", bench_torch)):
                section(f"{name} B,T,I,H,L={cfg}")
                try:
                    t0 = time.perf_counter()
                    fn(cfg, iters)
                    print(f"ok in {time.perf_counter() - t0:.1f} s", flush=True)
                except Exception:
                    traceback.print_exc()
                    sys.stdout.flush()
    except KeyboardInterrupt:
        print("+ stopped by the time limit: the table has what was measured", flush=True)
    print_table()


if __name__ == "__main__":
    main()
