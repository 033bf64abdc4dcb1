"""Review accept racing a human label on the same item, in two processes.

    python -m benchmarks.bench_accept_race --trials 200 --json bench-results/accept_race.json

Each trial adds one unlabelled item; one process accepts a pseudo-label for it through the Review
page's own write path (``labelkit.ui.review.write_accepts``) while the other labels it by hand
(``store.label``), both released by one barrier. Whichever commits first, the item must end with
the human label and no pseudo-label may follow the human one in its history. Prints a table and
writes JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from labelkit.store import NewItem, Store
from labelkit.workspace import Workspace

JITTER_S = 0.08


def _side(root: str, role: str, trials: int, seed: int, barrier: Any, items: Any, results: Any) -> None:
    """One racer: for every trial, wait for the item id, meet the other racer, write."""
    from labelkit.ui.review import write_accepts  # the page's code path, imported in the child

    # outside `streamlit run` every st.* call at import warns about bare mode
    logging.getLogger("streamlit").setLevel(logging.ERROR)

    store = Store.open(Workspace.resolve(root))
    try:
        pseudo, human = (c.id for c in store.ensure_classes(["pseudo", "human"]))
        rng = random.Random(f"{role}-{seed}")
        for _ in range(trials):
            item_id = items.get()
            barrier.wait()
            if role == "human":
                # The accept reads the item table before it writes; a random head start for it of
                # up to a few times that makes both orders of commit occur.
                time.sleep(rng.uniform(0, JITTER_S))
            if role == "accept":
                written = write_accepts(store, None, {pseudo: [item_id]}, "reviewer").annotations
                results.put(("accept", item_id, bool(written)))
            else:
                store.label(item_id, human, annotator="labeller")
                results.put(("human", item_id, True))
    finally:
        store.close()


def race(root: Path, trials: int, *, seed: int = 0) -> dict[str, Any]:
    """Run ``trials`` races on a fresh workspace at ``root``; return the counts."""
    store = Store.open(Workspace.resolve(root))
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    queues = {"accept": ctx.Queue(), "human": ctx.Queue()}
    results = ctx.Queue()
    try:
        store.ensure_classes(["pseudo", "human"])
        procs = [
            ctx.Process(target=_side, args=(str(root), role, trials, seed, barrier, queues[role], results))
            for role in queues
        ]
        for p in procs:
            p.start()
        accept_wrote = 0
        start = time.perf_counter()
        for n in range(trials):
            digest = f"{n:064x}"
            item_id = store.add_items(
                [NewItem(digest, f"images/{n}.png", f"thumbs/{n}.png", f"{n}.png", "race", 8, 8, "PNG", "L")]
            )[digest]
            for q in queues.values():
                q.put(item_id)
            outcome = dict((role, wrote) for role, _, wrote in (results.get(timeout=60) for _ in range(2)))
            accept_wrote += outcome["accept"]
        elapsed = time.perf_counter() - start
        for p in procs:
            p.join(timeout=60)
        human = store.class_by_name("human").id
        table = store.item_table()
        survived = int((table["class_id"] == human).sum())
        history = store.annotations().sort_values("id")
        # A pseudo-label written after the item's human label would be an overwrite, even if
        # something later put the human label back.
        after_human = 0
        for _, rows in history.groupby("item_id"):
            sources = rows["source"].tolist()
            if "human" in sources and "pseudo_accepted" in sources[sources.index("human") :]:
                after_human += 1
        return {
            "trials": trials,
            "human_label_survived": survived,
            "pseudo_written_after_human": after_human,
            "accept_wrote": accept_wrote,
            "seconds": round(elapsed, 2),
        }
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = race(Path(tmp) / "ws", args.trials, seed=args.seed)
    for key, value in result.items():
        print(f"{key:<28} {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
