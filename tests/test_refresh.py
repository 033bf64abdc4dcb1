"""The fast model end to end: photos → pretrained features → a version with predictions for every
item, refreshed after new labels, exported and predicted like any version; and on the digits
demo (pixels), never worse than logistic regression on the same labels."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from labelkit.importer import import_path
from labelkit.refresh import FastState, assess, prepare, publish
from labelkit.store import Store
from labelkit.worker import Worker, WorkerSettings


def _make_photos(folder: Path, per_class: int = 12, seed: int = 0) -> dict[str, str]:
    """Colour photos of two kinds made here: a red disc or a blue square on a textured
    background, at varying places, sizes and aspect ratios. Returns file name → class."""
    rng = np.random.default_rng(seed)
    truth = {}
    folder.mkdir(parents=True)
    for i in range(2 * per_class):
        cls = "disc" if i % 2 == 0 else "square"
        w, h = int(rng.integers(120, 200)), int(rng.integers(90, 150))
        background = rng.integers(80, 180, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(background)
        draw = ImageDraw.Draw(image)
        r = int(rng.integers(18, 30))
        cx, cy = w // 2 + int(rng.integers(-15, 15)), h // 2 + int(rng.integers(-10, 10))
        if cls == "disc":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(220, 30, 30))
        else:
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=(30, 40, 220))
        name = f"photo-{i:03d}.jpg"
        image.save(folder / name, quality=90)
        truth[name] = cls
    return truth


@pytest.fixture
def photo_store(store: Store, tmp_path: Path) -> tuple[Store, dict[int, str]]:
    truth = _make_photos(tmp_path / "photos")
    store.ensure_classes(["disc", "square"])
    import_path(store, tmp_path / "photos")
    items = store.item_table()
    return store, {int(i): truth[n] for i, n in zip(items["item_id"], items["original_name"], strict=True)}


def _label(store: Store, truth: dict[int, str], per_class: int) -> list[int]:
    done = []
    for cls in ("disc", "square"):
        for item_id in [i for i, c in truth.items() if c == cls][:per_class]:
            store.label(item_id, store.class_by_name(cls).id, annotator="expert")
            done.append(item_id)
    return done


def _accuracy(store: Store, version_id: int, truth: dict[int, str], skip: list[int]) -> float:
    names = {c.id: c.name for c in store.classes()}
    pred = store.versions.predictions(version_id)
    rest = pred[~pred["item_id"].isin(skip)]
    return float(
        np.mean(
            [names[int(c)] == truth[int(i)] for i, c in zip(rest["item_id"], rest["class_id"], strict=True)]
        )
    )


def test_worker_once_on_photos_publishes_a_fast_version_without_a_chosen_backbone(photo_store) -> None:
    store, truth = photo_store
    labelled = _label(store, truth, 3)
    worker = Worker(store, WorkerSettings(poll=0.05), log=lambda m: None)
    worker.serve(once=True)
    latest = store.versions.latest()
    assert (
        latest is not None and latest.method.startswith("fast:") and latest.backbone == "efficientnet_lite0"
    )
    assert latest.num_items == len(truth)
    assert _accuracy(store, latest.id, truth, labelled) >= 0.9
    estimate = latest.metrics["estimate"]
    assert estimate["n"] == 6 and estimate["how"].startswith("5-fold") and len(estimate["ci95"]) == 2
    # no deep round on a CPU for photos: it runs when asked for
    assert store.jobs.active() is None or not store.jobs.active()


def test_a_fast_version_exports_and_predicts_like_any_version(photo_store, tmp_path: Path) -> None:
    from labelkit.export import export_bundle
    from labelkit.predict import load_bundle, predict_files

    store, truth = photo_store
    _label(store, truth, 3)
    state = prepare(store, FastState())
    version = publish(store, state)
    bundle = load_bundle(export_bundle(store, version, tmp_path / "bundle"))
    assert bundle.card["input"]["fit"] == "crop" and bundle.card["pretrained_weights"]["source"] == "package"
    files = sorted((tmp_path / "photos").iterdir())[:6]
    table = predict_files(bundle, files)
    stored = store.versions.predictions(version).set_index("item_id")["class_id"]
    by_name = dict(zip(store.item_table()["original_name"], store.item_table()["item_id"], strict=True))
    names = {c.id: c.name for c in store.classes()}
    for path, predicted in zip(table["path"], table["class"], strict=True):
        assert predicted == names[int(stored[by_name[Path(path).name]])]


def test_new_labels_refresh_the_predictions_within_seconds(photo_store) -> None:
    store, truth = photo_store
    _label(store, truth, 1)
    worker = Worker(store, WorkerSettings(poll=0.05, auto_min_new_labels=0), log=lambda m: None)
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 240  # the first refresh embeds every photo
        while store.versions.latest() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        first = store.versions.latest()
        assert first is not None
        more = _label(store, {i: c for i, c in truth.items() if i not in (1, 2)}, 2)
        newest = store.last_annotation_id()
        labelled_at = time.monotonic()
        while time.monotonic() < labelled_at + 60:
            latest = store.versions.latest()
            if latest and latest.metrics.get("last_annotation_id", 0) >= newest:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no refreshed version within 60 s of the labels")
        assert latest.id > first.id and latest.metrics["train_labels"] == 2 + len(more)
    finally:
        worker.shutdown.set()
        thread.join(timeout=60)


def test_on_the_digits_demo_the_fast_model_beats_logistic_regression_on_pixels(store: Store) -> None:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from labelkit.demo import build_demo, source_index

    build_demo(store)
    x, y = load_digits(return_X_y=True)
    items = store.item_table()
    source = np.array([source_index(n) for n in items["original_name"]])
    ids = items["item_id"].to_numpy()
    rng = np.random.default_rng(0)
    picked = np.concatenate([rng.choice(np.flatnonzero(y[source] == d), 5, replace=False) for d in range(10)])
    for p in picked:
        store.label(int(ids[p]), store.class_by_name(str(y[source[p]])).id, annotator="expert")
    state = prepare(store, FastState())
    assert state.plan is not None and state.plan.backbone == "pixels" and not state.plan.hflip
    version = publish(store, state)
    pred = store.versions.predictions(version).set_index("item_id")["class_id"]
    names = {c.id: int(c.name) for c in store.classes()}
    rest = np.setdiff1d(np.arange(len(ids)), picked)
    ours = np.mean([names[int(pred[ids[r]])] == y[source[r]] for r in rest])
    baseline = LogisticRegression(max_iter=5000).fit(x[source[picked]], y[source[picked]])
    theirs = (baseline.predict(x[source[rest]]) == y[source[rest]]).mean()
    assert ours >= theirs, f"fast model {ours:.3f} < logistic regression on pixels {theirs:.3f}"
    result = assess(store, state, version)
    assert result is not None and result["estimate"]["n"] == 50


def test_a_deep_round_on_photos_fine_tunes_the_chosen_pretrained_backbone(
    photo_store, tmp_path: Path
) -> None:
    """The deep round starts from the resolved pretrained weights (here a file the user named, for a
    small timm model), at the backbone's input size, from the image cache."""
    import timm
    import torch

    from labelkit.store.jobs import JobInfo
    from labelkit.worker import run_round

    store, truth = photo_store
    _label(store, truth, 3)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    torch.save(net.state_dict(), tmp_path / "r10t.pth")
    store.settings.set("backbone", "resnet10t")
    store.settings.set("weights_path", str(tmp_path / "r10t.pth"))
    tiny = {"steps": 2, "batch_size": 2, "mu": 1, "checkpoint_every": 0, "log_every": 1}
    job_id = store.jobs.enqueue("train", {"config": tiny, "image_size": 64})
    job = store.jobs.claim("test")
    assert isinstance(job, JobInfo) and job.id == job_id
    version_id = run_round(
        store, job, settings=WorkerSettings(), device=torch.device("cpu"), report=lambda p: False
    )
    version = store.versions.get(version_id)
    assert version.backbone == "resnet10t" and version.config["hflip"] is True
    assert version.metrics["warm_start"]["pretrained"]["source"] == "file"
    saved = torch.load(store.workspace.path(version.path) / "model.pt", weights_only=True)
    assert saved["fit"] == "crop" and saved["image_size"] == 64 and saved["in_channels"] == 3
    # two small steps from the named file's weights stay next to them (a random start would not)
    start = net.state_dict()["conv1.0.weight"]
    assert (saved["state_dict"]["body.conv1.0.weight"] - start).abs().max() < 0.05
    assert (torch.randn_like(start) * start.std() - start).abs().max() > 0.05


def test_deep_rounds_count_and_warm_start_from_deep_rounds_not_from_fast_refreshes(store: Store) -> None:
    """Fast versions follow every burst of labels; a deep round must still warm-start from the last
    deep round, and the new labels that start one are counted since that round."""
    import torch

    from labelkit.demo import build_demo, source_index
    from labelkit.worker import run_round

    build_demo(store, limit=40)
    items = store.item_table()
    names = dict(zip(items["item_id"], items["original_name"], strict=True))
    from sklearn.datasets import load_digits

    truth = load_digits().target
    ids = [int(i) for i in items["item_id"]]

    def label(some: list[int]) -> None:
        for i in some:
            store.label(i, store.class_by_name(str(truth[source_index(names[i])])).id, annotator="expert")

    label(ids[:12])
    tiny = {"steps": 4, "batch_size": 8, "mu": 1, "checkpoint_every": 0, "log_every": 1}

    def deep_round() -> int:
        store.jobs.enqueue("train", {"config": tiny, "image_size": 16})
        job = store.jobs.claim("t")
        version = run_round(
            store, job, settings=WorkerSettings(), device=torch.device("cpu"), report=lambda p: False
        )
        assert version is not None
        store.jobs.finish(job.id, "done", model_version_id=version)  # as the worker does
        return version

    deep = deep_round()
    label(ids[12:15])
    fast_version = publish(store, prepare(store, FastState()))
    assert store.versions.latest().id == fast_version and store.versions.latest(fast=False).id == deep
    worker = Worker(store, WorkerSettings(auto_min_new_labels=3), log=lambda m: None)
    assert worker._labels_warrant_a_round()  # 3 labels since the deep round, none since the fast one
    second = deep_round()
    assert store.versions.get(second).metrics["warm_start"]["from_version"] == deep
