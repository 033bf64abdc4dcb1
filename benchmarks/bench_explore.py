"""Explore page cost: the UMAP map of a large version and the plotly figure of it.

    python benchmarks/bench_explore.py --n 60000 --json bench-results/explore.json

On ``--n`` synthetic unit embeddings (``--dim`` dimensions, ``--classes`` Gaussian clusters) measures:
- umap_import_jit: ``import umap`` plus a fit and transform on 5,000 rows, where numba compiles its
  kernels (paid once per process, before any of the timings below);
- map_sample_fit / map_transform: ``labelkit.explore.embed_2d`` with ``--sample`` (fit on the sample,
  ``transform`` for the rest), the path the app takes;
- map_full_fit: one fit on all rows, when the sampled fit suggests it ends within ``--full-fit-budget``;
- figure: ``map_figure`` for every colouring, then ``fig.to_json()`` and its size (what Streamlit sends).
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelkit import explore


def synthetic_embeddings(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``classes`` random centres (spread like a trained embedding's clusters)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = rng.integers(0, classes, size=n)
    x = centres[labels] + 0.6 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def synthetic_frame(coords: np.ndarray, labels: np.ndarray, names: list[str], seed: int) -> pd.DataFrame:
    """A ``map_frame``-shaped table: 5 % labelled, a tenth of those held out, random predictions."""
    rng = np.random.default_rng(seed)
    n = len(coords)
    labelled = rng.random(n) < 0.05
    predicted = np.where(rng.random(n) < 0.8, labels, rng.integers(0, len(names), size=n))
    heldout = labelled & (rng.random(n) < 0.1)
    label = pd.Series(np.asarray(names, dtype=object)[labels]).where(labelled)
    return pd.DataFrame(
        {
            "item_id": np.arange(1, n + 1),
            "x": coords[:, 0],
            "y": coords[:, 1],
            "name": [f"image-{i:06d}.jpg" for i in range(n)],
            "label": label,
            "labelled": labelled,
            "predicted": np.asarray(names, dtype=object)[predicted],
            "confidence": rng.uniform(0.3, 1.0, size=n),
            "entropy": rng.uniform(0.0, 2.0, size=n),
            "heldout": heldout,
            "correct": pd.array(np.where(heldout, predicted == labels, pd.NA), dtype="boolean"),
        }
    )


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=60_000, help="items on the map")
    parser.add_argument("--dim", type=int, default=128, help="embedding dimensions")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--sample", type=int, default=explore.DEFAULT_SAMPLE, help="UMAP fit sample")
    parser.add_argument("--full-fit-budget", type=float, default=900.0, help="seconds a full fit may take")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    x, labels = synthetic_embeddings(args.n, args.dim, args.classes, args.seed)
    names = [f"class {c}" for c in range(args.classes)]
    result: dict[str, Any] = {
        "n": args.n,
        "dim": args.dim,
        "sample": min(args.sample, args.n),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }

    def warm_up() -> None:
        # past 4,096 rows UMAP switches to NN-descent, and transform has kernels of its own: compile all
        warm = min(5_000, args.n)
        reducer = explore.make_reducer(warm - 500, args.seed)
        reducer.fit_transform(x[: warm - 500])
        reducer.transform(x[warm - 500 : warm])

    _, result["umap_import_jit_s"] = _timed(warm_up)
    steps: list[tuple[float, float]] = []
    start = time.perf_counter()
    coords, result["map_s"] = _timed(
        lambda: explore.embed_2d(
            x,
            sample=args.sample,
            seed=args.seed,
            progress=lambda f, text: steps.append((f, time.perf_counter())),
        )
    )
    # the first transform call is reported at fraction > 0 or at 1.0 when nothing is left to transform
    fit_end = next((t for f, t in steps if f > 0), steps[-1][1])
    result["map_sample_fit_s"] = fit_end - start
    result["map_transform_s"] = result["map_s"] - result["map_sample_fit_s"]
    ratio = args.n / min(args.sample, args.n)
    estimate = result["map_sample_fit_s"] * ratio**1.2
    if ratio > 1 and estimate <= args.full_fit_budget:
        _, result["map_full_fit_s"] = _timed(lambda: explore.make_reducer(args.n, args.seed).fit_transform(x))
    else:
        result["map_full_fit_s"] = None
        result["map_full_fit_note"] = (
            "sample covers every item" if ratio <= 1 else f"skipped: estimated {estimate:.0f} s > budget"
        )

    frame = synthetic_frame(coords, labels, names, args.seed)
    figures = {}
    for colour in explore.COLOR_BY:
        (fig, _), build_s = _timed(lambda colour=colour: explore.map_figure(frame, colour, names))
        text, json_s = _timed(fig.to_json)
        figures[colour] = {"build_s": build_s, "to_json_s": json_s, "json_mb": len(text) / 2**20}
    result["figures"] = figures

    print(f"{args.n:,} × {args.dim} embeddings, UMAP fit on {result['sample']:,}, {os.cpu_count()} CPU(s)")
    print(f"  import umap + numba compile  {result['umap_import_jit_s']:8.1f} s")
    print(f"  fit on the sample            {result['map_sample_fit_s']:8.1f} s")
    print(f"  transform the rest           {result['map_transform_s']:8.1f} s")
    full = result["map_full_fit_s"]
    shown = f"{full:8.1f} s" if full is not None else result["map_full_fit_note"]
    print(f"  full fit                     {shown}")
    print(f"  {'figure colouring':<32}{'build s':>8}{'to_json s':>10}{'JSON MB':>9}")
    for colour, row in figures.items():
        print(f"  {colour:<32}{row['build_s']:8.2f}{row['to_json_s']:10.2f}{row['json_mb']:9.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
