"""Active learning with a simulated expert: accuracy against the number of labels, per strategy.

    python benchmarks/bench_al.py --dataset digits --strategy random,margin,cluster_uncertain \\
        --start 10 --batch 20 --budget 70 --method fixmatch --steps 200 --json out.json

The oracle answers with the true label. Each strategy starts from the same ``--start`` labels (one
per class first, drawn by seed), retrains the SSL method from scratch on labels + every training
image as unlabelled, ranks the unlabelled pool with the strategy on the new model's outputs, and
adds the top ``--batch`` until ``--budget`` labels. Reports EMA test accuracy at each size; prints a
table, writes JSON rows and, with ``--figure``, a plotly HTML figure of the curves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MNIST_ROOT = "/work/shared/datasets"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--data-root", default=DEFAULT_MNIST_ROOT)
    parser.add_argument("--strategy", default="random,margin,cluster_uncertain")
    parser.add_argument("--start", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--budget", type=int, default=70)
    parser.add_argument(
        "--method", default="fixmatch", help="SSL method(s) retrained each round; a+b combines"
    )
    parser.add_argument("--steps", type=int, default=200, help="training steps per round")
    parser.add_argument("--model", default="cnn_small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mu", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=16, help="digits only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--figure", type=Path, help="write the curves as a plotly HTML file")
    return parser.parse_args(argv)


def _data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if args.dataset == "digits":
        from sklearn.model_selection import train_test_split

        from labelkit.datasets import load_digits

        x, y = load_digits(size=args.image_size)
        tr, te = train_test_split(np.arange(len(y)), test_size=500, stratify=y, random_state=0)
        return x[tr], y[tr], x[te], y[te]
    from labelkit.datasets import load_mnist

    x, y = load_mnist(args.data_root, train=True)
    xt, yt = load_mnist(args.data_root, train=False)
    return x, y, xt, yt


def _initial(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """One label per class, then random ones, up to ``n`` (the same for every strategy)."""
    rng = np.random.default_rng(seed)
    first = [rng.choice(np.flatnonzero(y == c)) for c in np.unique(y)][:n]
    rest = rng.permutation(np.setdiff1d(np.arange(len(y)), first))[: max(0, n - len(first))]
    return np.concatenate([first, rest]).astype(np.int64)


def run_strategy(args: argparse.Namespace, strategy: str, data: tuple) -> list[dict[str, Any]]:
    from labelkit import active
    from labelkit.config import TrainConfig
    from labelkit.train import TrainData, evaluate, predict, resolve_device, train

    x, y, x_test, y_test = data
    labelled = _initial(y, args.start, args.seed)
    config = TrainConfig.from_dict(
        {
            "model": args.model,
            "methods": args.method.split("+"),
            "steps": args.steps,
            "batch_size": args.batch_size,
            "mu": args.mu,
            "seed": args.seed,
            "device": args.device,
            "hflip": False,
            "eval_every": 0,
            "log_every": 50,
        }
    )
    device = resolve_device(args.device)
    rows = []
    while True:
        t0 = time.perf_counter()
        result = train(
            config,
            TrainData(
                x[labelled],
                y[labelled],
                x,
                y_ulb=None,
                x_test=None,
                y_test=None,
                class_names=tuple(str(c) for c in range(int(y.max()) + 1)),
            ),
        )
        accuracy = evaluate(result.model, x_test, y_test, device=device)
        rows.append(
            {
                "strategy": strategy,
                "dataset": args.dataset,
                "labels": len(labelled),
                "method": args.method,
                "steps": args.steps,
                "seed": args.seed,
                "accuracy": accuracy,
                "wall_s": time.perf_counter() - t0,
                "device": str(device),
            }
        )
        print(f"  {strategy:<18} {len(labelled):>5} labels  acc {accuracy:.4f}", file=sys.stderr)
        if len(labelled) >= args.budget:
            return rows
        probs, emb = predict(result.model, x, device=device)
        mask = np.zeros(len(y), dtype=bool)
        mask[labelled] = True
        counts = np.bincount(y[labelled], minlength=probs.shape[1])
        ranking = active.rank(
            strategy,
            probs=probs,
            embeddings=emb,
            labeled_mask=mask,
            seed=args.seed,
            k=min(args.batch, args.budget - len(labelled)),
            class_counts=counts,
        )
        labelled = np.concatenate([labelled, ranking.indices])  # the oracle answers y[i]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = _data(args)
    rows: list[dict[str, Any]] = []
    for strategy in args.strategy.split(","):
        rows.extend(run_strategy(args, strategy.strip(), data))
    sizes = sorted({r["labels"] for r in rows})
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    print(
        f"\naccuracy by labels ({args.dataset}, {args.method}, {args.steps} steps per round, seed {args.seed})"
    )
    print(f"{'strategy':<18}" + "".join(f"{n:>8}" for n in sizes))
    for s in strategies:
        acc = {r["labels"]: r["accuracy"] for r in rows if r["strategy"] == s}
        print(f"{s:<18}" + "".join(f"{acc.get(n, float('nan')):>8.4f}" for n in sizes))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    if args.figure:
        import plotly.graph_objects as go

        fig = go.Figure()
        for s in strategies:
            pts = [(r["labels"], r["accuracy"]) for r in rows if r["strategy"] == s]
            fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=s)
        fig.update_layout(
            xaxis_title="human labels",
            yaxis_title="test accuracy",
            title=f"Active learning on {args.dataset}",
        )
        fig.write_html(args.figure, include_plotlyjs="cdn")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
