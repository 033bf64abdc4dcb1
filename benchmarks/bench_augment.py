"""Strong-view throughput: FixMatch's op table drawn per image vs per group, and torchvision's
``v2.RandAugment`` (one draw per call, the previous implementation) per image and per group.

    python -m benchmarks.bench_augment --batch 64,448 --image-size 16,32 --threads 1 --json out.json

Each row times ``--repeats`` calls on a (batch, 1, size, size) uint8 batch after three warm-up calls;
images/s is higher-is-better. The weak view (flip + shift) is included in every strong view.
Run it as a module from the checkout's root, so that it imports this checkout's ``labelkit``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

COLUMNS = ("impl", "group", "batch", "size", "channels", "device", "imgs_per_s")


def _torchvision_strong(group: int) -> Callable[[Tensor, torch.Generator], Tensor]:
    """The previous strong view: v2.RandAugment (31 magnitude bins) + RandomErasing per group."""
    from torchvision.transforms import v2

    from labelkit.augment import CUTOUT_FILL, Augmenter

    weak = Augmenter(group_size=group)
    randaugs = [v2.RandAugment(num_ops=2, magnitude=m, num_magnitude_bins=31) for m in range(31)]
    erase = v2.RandomErasing(p=1.0, scale=(0.0025, 0.25), ratio=(1.0, 1.0), value=CUTOUT_FILL)

    def strong(x: Tensor, gen: torch.Generator) -> Tensor:
        x = weak.weak(x, gen)
        out = torch.empty_like(x)
        magnitudes = torch.randint(31, (len(x),), generator=gen).tolist()
        for start in range(0, len(x), group):
            out[start : start + group] = erase(randaugs[magnitudes[start]](x[start : start + group]))
        return out

    return strong


def time_one(fn: Callable[[Tensor, torch.Generator], Tensor], x: Tensor, repeats: int) -> float:
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):  # warm-up: first calls of each op pay one-off set-up costs
        fn(x, gen)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x, gen)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return repeats * len(x) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", default="64,448", help="images per call (μB), comma-separated")
    parser.add_argument("--image-size", default="16,32", help="image sides, comma-separated")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--groups", default="1,4", help="images per draw, comma-separated")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from benchmarks.bench_ssl import report
    from labelkit.augment import Augmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    for size in (int(s) for s in args.image_size.split(",")):
        for batch in (int(b) for b in args.batch.split(",")):
            g = torch.Generator().manual_seed(0)
            x = torch.randint(0, 256, (batch, args.channels, size, size), generator=g, dtype=torch.uint8)
            x = x.to(args.device)
            for group in (int(k) for k in args.groups.split(",")):
                impls = {
                    "fixmatch_table": Augmenter(group_size=group).strong,
                    "torchvision_ra": _torchvision_strong(group),
                }
                for name, fn in impls.items():
                    rate = time_one(fn, x, args.repeats)
                    rows.append(
                        {
                            "impl": name,
                            "group": group,
                            "batch": batch,
                            "size": size,
                            "channels": args.channels,
                            "device": args.device,
                            "imgs_per_s": round(rate),
                        }
                    )
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report(rows, args.json, COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
