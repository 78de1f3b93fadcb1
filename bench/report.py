"""Turn pytest-benchmark JSON into the README's table: median ms per step, GFLOP/s, and how many
times faster fastrnn runs than each other implementation measured in the same sitting; and, from
``bench/test_bench_compile.py``, the seconds to a fresh process's first training step against
their targets.

    pytest bench/ --benchmark-only --benchmark-json=bench.json && python bench/report.py bench.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

FAST = ("fastrnn-cpu", "fastrnn-cuda")


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


def table(path: str) -> str:
    with open(path) as f:
        data = json.load(f)
    first_use = [bm for bm in data["benchmarks"] if "first_use" in bm["extra_info"]]
    steps = [bm for bm in data["benchmarks"] if "first_use" not in bm["extra_info"]]
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
    info = data["benchmarks"][0]["extra_info"] if data["benchmarks"] else {}
    machine = ", ".join(f"{k} {info[k]}" for k in (
        "cpu", "cores", "numba", "numba_threads", "numba_threading_layer", "torch",
        "torch_threads", "numpy", "blas", "OPENBLAS_CORETYPE") if k in info)
    out = ("\n".join(lines) + "\n\n") if steps else ""
    out += (first_use_table(first_use) + "\n") if first_use else ""
    return out + f"Medians of pytest-benchmark rounds; {machine}.\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/report.py BENCH.json")
    print(table(sys.argv[1]))
