"""Turn pytest-benchmark JSON into the README's table: median ms per step, GFLOP/s, and how many
times faster fastrnn runs than each other implementation measured in the same sitting; from
``bench/test_bench_compile.py``, the seconds to a fresh process's first training step against
their targets; and from ``bench/test_bench_grid.py``, the shape grid against issue 16's targets
(fastrnn's GFLOP/s also as a fraction of NumPy's sgemm in the same sitting), optionally drawn.

    pytest bench/ --benchmark-only --benchmark-json=bench.json && python bench/report.py bench.json
    python bench/report.py grid.json --plot grid.png    # speedup over PyTorch across the grid
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict

FAST = ("fastrnn-cpu", "fastrnn-cuda")
#: issue 16's targets for the grid, as the report states them
TARGETS = ("B >= 16: >= 1.5x PyTorch or >= 85% of sgemm GFLOP/s; B = 1: >= 5x PyTorch; "
           ">= 1.2x the reference everywhere")
MACHINE = ("cpu", "cores", "isa", "numba", "numba_threads", "numba_threading_layer", "torch",
           "torch_threads", "torch_isa", "numpy", "blas", "OPENBLAS_CORETYPE")


def first_use_table(benchmarks: list[dict]) -> str:
    """``bench/test_bench_compile.py``'s seconds (median) against each target."""
    lines = ["| first training step | layers | seconds | target |", "|---|---|---|---|"]
    for bm in sorted(benchmarks, key=lambda b: (b["extra_info"]["first_use"],
                                                b["extra_info"]["layers"])):
        info, s = bm["extra_info"], bm["stats"]["median"]
        verdict = "met" if s <= info["target_s"] else "MISSED"
        lines.append(f"| {info['first_use']} | {info['layers']} | {s:.2f} | "
                     f"<= {info['target_s']:g} s: {verdict} |")
    return "\n".join(lines) + "\n"


def steps_table(steps: list[dict]) -> str:
    """One row per (quantity, shape, layers): each implementation's ms and GFLOP/s, then the
    speedups of fastrnn over the others."""
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for bm in steps:
        info = bm["extra_info"]
        key = (info["quantity"], info["shape"], info["layers"])
        groups[key][info["impl"]] = {"median": bm["stats"]["median"], "flops": info["flops"]}
    impls = sorted({i for g in groups.values() for i in g}, key=lambda i: (i not in FAST, i))
    head = ["step", "shape", "layers"] + [f"{i} ms" for i in impls] + [
        f"{f} speedup vs {i}" for f in FAST for i in impls
        if i not in FAST and any(f in g for g in groups.values())]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (quantity, shape, layers), g in sorted(groups.items()):
        row = [quantity, shape, str(layers)]
        for i in impls:
            if i in g:
                ms = g[i]["median"] * 1e3
                row.append(f"{ms:.3g} ({g[i]['flops'] / g[i]['median'] / 1e9:.1f} GFLOP/s)")
            else:
                row.append("–")
        for f in FAST:
            for i in impls:
                if i in FAST or not any(f in gg for gg in groups.values()):
                    continue
                ok = f in g and i in g
                row.append(f"{g[i]['median'] / g[f]['median']:.1f}x" if ok else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def grid_points(grid: list[dict], sgemm: float | None) -> list[dict]:
    """Per (quantity, layers, B, H), sorted: fastrnn-cpu's median seconds and GFLOP/s, its
    fraction of ``sgemm`` GFLOP/s, its speedups over PyTorch and the reference (None where not
    measured), and the verdict against :data:`TARGETS`."""
    medians: dict[tuple, dict[str, float]] = defaultdict(dict)
    n_flops: dict[tuple, int] = {}
    for bm in grid:
        info = bm["extra_info"]
        key = (info["quantity"], info["layers"], info["B"], info["H"])
        medians[key][info["impl"]] = bm["stats"]["median"]
        n_flops[key] = info["flops"]
    points = []
    for key, m in sorted(medians.items()):
        fast = m.get("fastrnn-cpu")
        gflops = n_flops[key] / fast / 1e9 if fast else None
        point = dict(zip(("quantity", "layers", "B", "H"), key), s=fast, gflops=gflops,
                     of_sgemm=gflops / sgemm if gflops and sgemm else None,
                     **{f"vs_{i}": m[i] / fast if fast and i in m else None
                        for i in ("torch", "reference")})
        point["verdict"] = verdict(point)
        points.append(point)
    return points


def verdict(p: dict) -> str:
    """"met", or "MISSED" and the targets missed (an unmeasured figure misses its target)."""
    torch, ref, frac = p["vs_torch"] or 0, p["vs_reference"] or 0, p["of_sgemm"] or 0
    missed = [] if ref >= 1.2 else ["1.2x reference"]
    if p["B"] == 1 and torch < 5:
        missed.insert(0, "5x PyTorch")
    elif p["B"] >= 16 and torch < 1.5 and frac < 0.85:
        missed.insert(0, "1.5x PyTorch or 85% sgemm")
    return "MISSED " + ", ".join(missed) if missed else "met"


def _x(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def grid_table(points: list[dict], sgemm: float | None) -> str:
    """The grid, one row per step, against :data:`TARGETS`."""
    lines = [f"NumPy sgemm (float32, same sitting): {_x(sgemm, '.1f')} GFLOP/s. "
             f"Targets: {TARGETS}.\n",
             "| grid step | layers | B | H | fastrnn ms | GFLOP/s | of sgemm | vs PyTorch "
             "| vs reference | targets |", "|" + "---|" * 10]
    for p in points:
        lines.append(f"| {p['quantity']} | {p['layers']} | {p['B']} | {p['H']} | "
                     f"{_x(p['s'] and p['s'] * 1e3, '.3g')} | {_x(p['gflops'], '.1f')} | "
                     f"{_x(p['of_sgemm'], '.0%')} | {_x(p['vs_torch'], '.2f')}x | "
                     f"{_x(p['vs_reference'], '.2f')}x | {p['verdict']} |")
    return "\n".join(lines) + "\n"


def plot(points: list[dict], info: dict, path: str) -> None:
    """Heatmaps of the speedup over PyTorch, B down and H across, one panel per (step, layers);
    green where fastrnn is faster, "*" where a row misses a target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = sorted({(p["quantity"], p["layers"]) for p in points},
                    key=lambda k: (k[0] != "train", k[1]))
    bs, hs = sorted({p["B"] for p in points}), sorted({p["H"] for p in points})
    logs = [math.log2(p["vs_torch"]) for p in points if p["vs_torch"]]
    vlim = math.ceil(max([1.0, *map(abs, logs)]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 1.2, 3.8),
                             squeeze=False, layout="constrained")
    for ax, (quantity, layers) in zip(axes[0], panels):
        data = np.full((len(bs), len(hs)), np.nan)
        for p in points:
            if (p["quantity"], p["layers"]) == (quantity, layers) and p["vs_torch"]:
                i, j, x = bs.index(p["B"]), hs.index(p["H"]), p["vs_torch"]
                data[i, j] = math.log2(x)
                label = f"{x:.2g}x" if x < 10 else f"{x:.0f}x"
                ax.text(j, i, label + ("" if p["verdict"] == "met" else "*"), ha="center",
                        va="center", fontsize=8)
        image = ax.imshow(data, cmap="RdYlGn", vmin=-vlim, vmax=vlim)
        ax.set(title=f"{quantity}, {layers} layer{'s' * (layers > 1)}", xlabel="H (= I)",
               xticks=range(len(hs)), xticklabels=hs, yticks=range(len(bs)), yticklabels=bs)
    axes[0][0].set_ylabel("B")
    bar = fig.colorbar(image, ax=axes[0].tolist(), label="speedup over PyTorch")
    ticks = range(-vlim, vlim + 1, max(1, vlim // 3))
    bar.set_ticks(ticks, labels=[f"{2.0**t:.2g}x" for t in ticks])
    fig.suptitle(f"fastrnn-cpu speedup over PyTorch, T=100 (* misses a target)\n"
                 f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores: Numba "
                 f"{info.get('isa', '?')}, PyTorch {info.get('torch_isa', '?')}, "
                 f"{info.get('torch_threads', '?')} threads each", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def report(path: str, plot_path: str | None = None) -> str:
    """The report of one benchmark JSON file; with ``plot_path``, also the grid's picture."""
    with open(path) as f:
        benchmarks = json.load(f)["benchmarks"]
    kinds: dict[str, list[dict]] = defaultdict(list)
    for bm in benchmarks:
        info = bm["extra_info"]
        kinds["first_use" if "first_use" in info else "sgemm" if info["quantity"] == "sgemm"
              else "grid" if info.get("grid") else "steps"].append(bm)
    sgemm = (kinds["sgemm"][0]["extra_info"]["flops"] / kinds["sgemm"][0]["stats"]["median"]
             / 1e9 if kinds["sgemm"] else None)
    points = grid_points(kinds["grid"], sgemm)
    info = benchmarks[0]["extra_info"] if benchmarks else {}
    if plot_path and points:
        plot(points, info, plot_path)
    machine = ", ".join(f"{k} {info[k]}" for k in MACHINE if k in info)
    out = (steps_table(kinds["steps"]) + "\n") if kinds["steps"] else ""
    out += (first_use_table(kinds["first_use"]) + "\n") if kinds["first_use"] else ""
    out += (grid_table(points, sgemm) + "\n") if points else ""
    return out + f"Medians of pytest-benchmark rounds; {machine}.\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="pytest-benchmark's --benchmark-json file")
    parser.add_argument("--plot", metavar="PATH", help="draw the grid's speedups over PyTorch")
    args = parser.parse_args()
    print(report(args.json, args.plot))
