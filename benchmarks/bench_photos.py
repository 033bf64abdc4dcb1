"""Real photos: the fast model against the logistic-regression probe a user would try, the product
path as a user runs it, and how fast predictions follow a label.

    python benchmarks/bench_photos.py --data-root ../shared/datasets/hymenoptera --json OUT

Parts (``--parts``, default all but deep):

- ``probe``: ``train/`` is the pool, ``val/`` the test set; for 1, 2, 5 and 10 labels per class
  and 5 label draws each: logistic regression (scikit-learn, C=1) on the frozen pretrained features
  beside the fast model with every feature-space method (``labelkit.fast.FAST_METHODS``), on the
  same draws. The pool is embedded once (the centre crop labelkit caches).
- ``product``: ``labelkit init --classes ants,bees``, ``labelkit import`` of every photo (train
  and val, no labels), 10 ``labelkit label`` per class from ``train/``, ``labelkit worker --once``:
  accuracy of the latest version's stored predictions on the ``val/`` photos, and the round's time.
- ``latency``: a workspace of ``--latency-items`` items (copies of the photos; their embedding rows
  copied from the real ones, so nothing is re-embedded), a worker serving it; time from a new label
  (``Store.label`` committed) to a version whose predictions cover every item and that label.
- ``load``: a round's image loading from the image cache vs decoding the originals, per item.

Each row goes into the JSON; the table prints means per method and labels per class.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _photos(root: Path, part: str) -> tuple[list[Path], np.ndarray, list[str]]:
    classes = sorted(p.name for p in (root / part).iterdir() if p.is_dir())
    files, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted((root / part / name).iterdir()):
            if f.is_file():
                files.append(f)
                labels.append(c)
    return files, np.asarray(labels), classes


def _embed(files: list[Path]) -> tuple[np.ndarray, list[int], float]:
    """Pretrained features of ``files`` as labelkit computes them (centre crop, the default backbone)."""
    import torch

    from labelkit.backbones import DEFAULT_PHOTO_BACKBONE, preprocessing, resolve_weights
    from labelkit.cache import ImageSpec, decode_for
    from labelkit.models import build_model

    weights = resolve_weights(DEFAULT_PHOTO_BACKBONE)
    size = preprocessing(DEFAULT_PHOTO_BACKBONE)["image_size"]
    model = build_model(
        DEFAULT_PHOTO_BACKBONE, num_classes=2, in_channels=3, image_size=size, pretrained=weights
    ).eval()
    spec = ImageSpec(size, 3, "crop")
    feats, ok = [], []
    start = time.perf_counter()
    for i in range(0, len(files), 32):
        batch, keep = [], []
        for j, f in enumerate(files[i : i + 32]):
            try:
                batch.append(decode_for(f, spec))
                keep.append(i + j)
            except (OSError, ValueError):
                continue
        with torch.inference_mode():
            x = model.normalize(torch.from_numpy(np.stack(batch)))
            feats.append(model(x).features.numpy())
        ok += keep
    return np.concatenate(feats), ok, len(ok) / (time.perf_counter() - start)


def probe(root: Path, rows: list[dict], seeds: int, per_class: list[int]) -> dict:
    from sklearn.linear_model import LogisticRegression

    from labelkit import fast

    train_files, y_train, _ = _photos(root, "train")
    val_files, y_val, _ = _photos(root, "val")
    x_train, ok_t, rate = _embed(train_files)
    y_train = y_train[ok_t]
    x_val, ok_v, _ = _embed(val_files)
    y_val = y_val[ok_v]
    fs = fast.FeatureSet(x_train)
    emb_val = fast.unit(x_val)
    k = int(y_train.max()) + 1
    for n in per_class:
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            idx = np.concatenate(
                [rng.choice(np.flatnonzero(y_train == c), n, replace=False) for c in range(k)]
            )
            lr = LogisticRegression(max_iter=5000).fit(x_train[idx], y_train[idx])
            rows.append(
                {
                    "part": "probe",
                    "method": "logreg_probe",
                    "labels_per_class": n,
                    "seed": seed,
                    "accuracy": float((lr.predict(x_val) == y_val).mean()),
                }
            )
            for method in sorted(fast.FAST_METHODS):
                t0 = time.perf_counter()
                head = fast.fit(fs, idx, y_train[idx], k, method=method)
                rows.append(
                    {
                        "part": "probe",
                        "method": f"fast:{method}",
                        "labels_per_class": n,
                        "seed": seed,
                        "accuracy": float((head.probs(emb_val).argmax(1) == y_val).mean()),
                        "fit_s": time.perf_counter() - t0,
                    }
                )
    return {"embed_images_per_s": rate, "pool": len(y_train), "test": len(y_val)}


def product(root: Path, rows: list[dict], per_class: int = 10, seed: int = 0) -> dict:
    import sqlite3

    labelkit = [sys.executable, "-m", "labelkit"]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"

        def run(*a: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*labelkit, "-w", str(ws), *a], check=True, capture_output=True, text=True)

        run("init", "--classes", ",".join(_photos(root, "train")[2]))
        t0 = time.perf_counter()
        run("import", str(root))
        import_s = time.perf_counter() - t0
        db = sqlite3.connect(ws / "labelkit.db")
        items = db.execute("select id, original_name from items").fetchall()
        rng = np.random.default_rng(seed)
        for cls in _photos(root, "train")[2]:
            pool = [i for i, n in items if n.startswith(f"train/{cls}/")]
            for item in rng.choice(pool, per_class, replace=False):
                run("label", str(item), cls)
        t0 = time.perf_counter()
        out = run("worker", "--once")
        round_s = time.perf_counter() - t0
        version, method, metrics = db.execute(
            "select id, method, metrics from model_versions order by id desc limit 1"
        ).fetchone()
        names = dict(db.execute("select id, name from classes").fetchall())
        pred = dict(
            db.execute(
                "select item_id, class_id from predictions where model_version_id=?", (version,)
            ).fetchall()
        )
        val = [(i, n.split("/")[1]) for i, n in items if n.startswith("val/")]
        accuracy = float(np.mean([names[pred[i]] == truth for i, truth in val]))
        metrics = json.loads(metrics)
    row = {
        "part": "product",
        "method": method,
        "labels_per_class": per_class,
        "seed": seed,
        "accuracy": accuracy,
        "val_items": len(val),
        "import_s": import_s,
        "round_s": round_s,
        "estimate": metrics.get("estimate"),
        "worker_log": out.stdout[-500:],
    }
    rows.append(row)
    return row


def latency(root: Path, rows: list[dict], n_items: int, labels: int = 10) -> dict:
    """New label → a version covering it and every item, with a worker serving the workspace."""
    from labelkit.backbones import DEFAULT_PHOTO_BACKBONE
    from labelkit.cache import EmbeddingCache, ImageCache
    from labelkit.features import feature_model, plan
    from labelkit.importer import import_path
    from labelkit.store import NewItem, Store
    from labelkit.worker import Worker, WorkerSettings
    from labelkit.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Workspace.resolve(Path(tmp) / "ws"))
        classes = _photos(root, "train")[2]
        store.ensure_classes(classes)
        import_path(store, root / "train")
        real = store.item_table()
        workspace_plan = plan(store)
        model = feature_model(workspace_plan, len(classes))
        images = ImageCache(store, workspace_plan.image)
        assert workspace_plan.weights is not None
        cache = EmbeddingCache(
            store,
            backbone=DEFAULT_PHOTO_BACKBONE,
            weights=workspace_plan.weights,
            images=images,
            dim=model.feature_dim,
        )
        cache.fill(real["item_id"].tolist(), model)
        feats, _ = cache.rows.read(real["item_id"].tolist())
        # copies: new items pointing at the real files, their embedding rows copied (not re-embedded;
        # an embedded item's pixels are never read again, so the copies need no image-cache rows)
        base = store.items(real["item_id"].tolist())
        copies = []
        for k in range(n_items - len(base)):
            src = base[k % len(base)]
            copies.append(
                NewItem(
                    sha256=f"{k + 1:012x}{src.sha256[12:]}",
                    path=src.path,
                    thumb_path=src.thumb_path,
                    original_name=f"copy-{k}-{src.original_name}",
                    origin="bench",
                    width=src.width,
                    height=src.height,
                    format=src.format,
                    mode=src.mode,
                )
            )
        for start in range(0, len(copies), 5000):
            store.add_items(copies[start : start + 5000])
        table = store.item_table()
        new_ids = table.loc[~table["item_id"].isin(real["item_id"]), "item_id"].tolist()
        for start in range(0, len(new_ids), 4096):
            chunk = new_ids[start : start + 4096]
            pos = [(i - new_ids[0]) % len(base) for i in chunk]
            cache.rows.append(chunk, feats[pos])
        names = {int(i): n for i, n in zip(real["item_id"], real["original_name"], strict=True)}
        worker = Worker(store, WorkerSettings(auto_min_new_labels=0), log=lambda m: None)
        thread = threading.Thread(target=worker.serve, daemon=True)
        thread.start()
        waits = []
        try:
            ids = real["item_id"].tolist()
            rng = np.random.default_rng(0)
            order = rng.permutation(ids)
            for j, item in enumerate(order[: labels + 2]):
                cls = names[int(item)].split("/")[0]
                store.label(int(item), store.class_by_name(cls).id, annotator="bench")
                if j < 2:
                    continue  # the first labels of two classes: the first version also builds state
                newest = store.last_annotation_id()
                t0 = time.perf_counter()
                while True:
                    latest = store.versions.latest()
                    if latest and latest.metrics.get("last_annotation_id", 0) >= newest:
                        break
                    time.sleep(0.01)
                waits.append(time.perf_counter() - t0)
                time.sleep(1.0)  # the expert looks at the next image
        finally:
            worker.shutdown.set()
            thread.join(timeout=120)
        num_items = latest.num_items
    row = {
        "part": "latency",
        "items": num_items,
        "median_s": statistics.median(waits),
        "max_s": max(waits),
        "waits_s": waits,
    }
    rows.append(row)
    return row


def load(root: Path, rows: list[dict], n_items: int) -> dict:
    from labelkit.cache import ImageSpec, RowFile, decode_for

    files = _photos(root, "train")[0]
    spec = ImageSpec(224, 3, "crop")
    t0 = time.perf_counter()
    arrays = [decode_for(f, spec) for f in files]
    per_original = (time.perf_counter() - t0) / len(files)
    with tempfile.TemporaryDirectory() as tmp:
        rf = RowFile(Path(tmp) / "r", (3, 224, 224), np.uint8)
        stacked = np.stack(arrays)
        for start in range(0, n_items, len(stacked)):
            take = min(len(stacked), n_items - start)
            rf.append(list(range(start, start + take)), stacked[:take])
        t0 = time.perf_counter()
        _, bad = rf.read(list(range(n_items)))
        per_cached = (time.perf_counter() - t0) / n_items
    row = {
        "part": "load",
        "items": n_items,
        "original_ms": per_original * 1e3,
        "cached_ms": per_cached * 1e3,
        "ratio": per_original / per_cached,
        "corrupt": len(bad),
    }
    rows.append(row)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True, help="an ImageFolder root with train/ and val/")
    parser.add_argument("--parts", default="probe,product,latency,load")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--labels-per-class", default="1,2,5,10")
    parser.add_argument("--latency-items", type=int, default=10_000)
    parser.add_argument("--load-items", type=int, default=10_000)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)"
    )
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    root = Path(args.data_root).expanduser()
    rows: list[dict] = []
    summary: dict = {}
    parts = args.parts.split(",")
    if "probe" in parts:
        summary["probe"] = probe(root, rows, args.seeds, [int(v) for v in args.labels_per_class.split(",")])
        table: dict[tuple[str, int], list[float]] = {}
        for r in rows:
            if r["part"] == "probe":
                table.setdefault((r["method"], r["labels_per_class"]), []).append(r["accuracy"])
        methods = sorted({m for m, _ in table})
        counts = sorted({n for _, n in table})
        print(f"{'method':24s}" + "".join(f"{n:>10d}/cls" for n in counts))
        for m in methods:
            print(f"{m:24s}" + "".join(f"{100 * np.mean(table[(m, n)]):13.1f}" for n in counts))
        print(f"embedding: {summary['probe']['embed_images_per_s']:.1f} images/s")
    if "product" in parts:
        r = product(root, rows)
        print(
            f"product path: {r['method']} {100 * r['accuracy']:.1f} % on {r['val_items']} val photos, "
            f"worker --once {r['round_s']:.0f} s, import {r['import_s']:.0f} s"
        )
    if "latency" in parts:
        r = latency(root, rows, args.latency_items)
        print(
            f"label → refreshed predictions at {r['items']} items: median {r['median_s']:.2f} s, max {r['max_s']:.2f} s"
        )
    if "load" in parts:
        r = load(root, rows, args.load_items)
        print(
            f"round load per image: originals {r['original_ms']:.1f} ms, cache {r['cached_ms']:.3f} ms (× {r['ratio']:.0f})"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
