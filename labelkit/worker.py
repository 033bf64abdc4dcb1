"""The background trainer: a separate process that trains while the expert labels.

``labelkit worker --workspace W`` holds the workspace's worker lease (one worker per workspace; a
stale lease of a dead worker is taken over), then serves jobs from the database: the Train page
asks for a round, or the worker starts one itself when enough new labels arrived. A round trains
on the current labels plus every item as unlabelled data, evaluates on a held-out slice of the
labels, predicts every item and records a model version with its predictions.

Crash safety: training checkpoints atomically into ``runs/job-<id>/``; a killed worker's running
job goes back to the queue and resumes from that checkpoint. A version's files are written to a
temporary folder that is renamed into place before the database row that names it is committed,
so the database never points at half-written files.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from labelkit.backbones import WeightsNotFound
from labelkit.cache import ImageSpec
from labelkit.config import TrainConfig
from labelkit.datasets import WorkspaceArrays, load_workspace
from labelkit.features import Plan, feature_model, plan
from labelkit.refresh import FastState, NotEnoughLabels, assess, current_plan, prepare, publish
from labelkit.store import Store
from labelkit.store.jobs import JobInfo, LeaseHeldError
from labelkit.train import TrainData, predict, train
from labelkit.workspace import Workspace

ROUND_TRIP_SAMPLE = 2_000  # unlabelled items in the round-trip statistics (keeps it O(1 s))
COLD_START_CHECK_S = 30.0  # seconds between the idle worker's looks for new imports to embed
FAST_DEBOUNCE_S = 0.5  # seconds without a new label before the fast model refreshes
# Inverse temperature on unit embeddings for the round trip drawn on the Explore page. Sharper than
# the association loss's default (5): the drawing walks over a 2,000-item sample rather than a
# training batch of tens, and at 5 the mass spread over so many items hid the class blocks (a
# demo model of benchmarks/screenshot_explore.py: walker accuracy 29 % at 5, 67 % at 10).
ROUND_TRIP_SCALE = 10.0


@dataclass(frozen=True)
class WorkerSettings:
    stale_after: float = 30.0  # seconds without a heartbeat after which a lease counts as dead
    poll: float = 0.5  # seconds between looks at the job queue and for new labels
    auto_min_new_labels: int = 20  # new labels that start a round by themselves (0 = never)
    holdout_fraction: float = 0.2
    min_holdout: int = 10  # fewer labels than this: no held-out evaluation, every label trains


class RoundError(RuntimeError):
    """A round cannot run (e.g. not enough labels); the message is for the user."""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def cpu_threads() -> int:
    """Leave a core to the app so labelling stays responsive while the worker trains."""
    return max(1, (os.cpu_count() or 2) - 1)


def default_config(num_items: int, on_cuda: bool, workspace_plan: Plan | None = None) -> dict[str, Any]:
    """Settings that fit the workspace size, its images and the device when the page does not choose.

    Photos fine-tune their pretrained backbone at its own input size (gently: lr 0.01); small grey
    images train a small CNN from scratch, never with mirror images (a mirrored digit is not a digit).
    """
    flips = {"hflip": workspace_plan.hflip} if workspace_plan is not None else {}
    if workspace_plan is not None and workspace_plan.pretrained:
        size = (
            {"steps": 2_000, "batch_size": 32, "mu": 7}
            if on_cuda
            else {"steps": 200, "batch_size": 8, "mu": 2}
        )
        return {
            "model": workspace_plan.deep_model,
            "methods": ["fixmatch"],
            "lr": 0.01,
            "eval_every": 0,
            "checkpoint_every": 50,
            **size,
            **flips,
        }
    if on_cuda:
        return {
            "model": "wrn28_2",
            "methods": ["fixmatch"],
            "steps": 2_000,
            "batch_size": 64,
            "mu": 7,
            **flips,
        }
    steps = 300 if num_items <= 5_000 else 500
    return {
        **flips,
        "model": "cnn_small",
        "methods": ["fixmatch"],
        "steps": steps,
        "batch_size": 32,
        "mu": 3,
        "aug_group": 1,  # per-image strong views: with the FixMatch op table they cost what groups of 4 did
        "eval_every": 0,
        "checkpoint_every": 50,
        "log_every": 10,
    }


# ---------------------------------------------------------------------------------------- a round
def split_holdout(y: np.ndarray, *, fraction: float, minimum: int, seed: int) -> np.ndarray:
    """Boolean mask of labels held out for evaluation: ``fraction`` of each class (at least one
    where the class has two or more labels); nothing when there are fewer than ``minimum`` labels."""
    mask = np.zeros(len(y), dtype=bool)
    if len(y) < minimum:
        return mask
    rng = np.random.default_rng(seed)
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        if len(members) < 2:
            continue
        k = max(1, round(fraction * len(members)))
        mask[rng.choice(members, size=min(k, len(members) - 1), replace=False)] = True
    return mask


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy measured on ``n`` labels (NaN for none)."""
    from labelkit import estimate

    return (math.nan, math.nan) if n == 0 else estimate.wilson_interval(correct, n, z=z)


def uncertainty_scores(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Per item of ``probs`` (N, K ≥ 2): predicted class, confidence (max p; higher is surer),
    margin (p1 − p2; smaller is less sure), entropy (nats; higher is less sure)."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1)
    return {
        "pred": probs.argmax(1),
        "confidence": top2[:, 1],
        "margin": top2[:, 1] - top2[:, 0],
        "entropy": entropy,
    }


def round_trip(
    emb_lb: np.ndarray, y_lb: np.ndarray, emb_ulb: np.ndarray, num_classes: int, *, seed: int
) -> dict:
    """Learning-by-association statistics on the model's embeddings: the class × class round-trip
    matrix and how evenly the walk visits the unlabelled sample."""
    from labelkit.ssl.losses import association_probabilities, round_trip_by_class

    rng = np.random.default_rng(seed)
    if len(emb_ulb) > ROUND_TRIP_SAMPLE:
        emb_ulb = emb_ulb[rng.choice(len(emb_ulb), ROUND_TRIP_SAMPLE, replace=False)]
    a = torch.from_numpy(emb_lb).double() * ROUND_TRIP_SCALE
    b = torch.from_numpy(emb_ulb).double()
    p_ab, _, p_aba = association_probabilities(a, b)
    matrix = round_trip_by_class(p_aba, torch.from_numpy(y_lb), num_classes)
    visit = p_ab.mean(0)
    return {
        "matrix": [[None if math.isnan(v) else float(v) for v in row] for row in matrix.tolist()],
        "walker_accuracy": float(torch.nanmean(torch.diagonal(matrix))),
        "visit_entropy_ratio": float(-(visit * visit.clamp_min(1e-12).log()).sum() / math.log(len(visit))),
        "unlabelled_sample": len(emb_ulb),
    }


def run_round(
    store: Store,
    job: JobInfo,
    *,
    settings: WorkerSettings,
    device: torch.device,
    report: Callable[[dict[str, Any]], bool],
    halted: Callable[[], bool] = lambda: False,
) -> int | None:
    """Train, evaluate and predict for one job; returns the new model version id, or None if the
    job was asked to stop (its checkpoint stays for a later resume). ``halted`` is polled between
    training steps (the worker's shutdown or a lost lease stops at once, not at the next report)."""
    try:
        workspace_plan = plan(store)
    except WeightsNotFound as error:
        raise RoundError(str(error)) from None
    image = workspace_plan.image
    if "image_size" in job.params:
        image = ImageSpec(int(job.params["image_size"]), image.channels, image.fit)
    image_size, channels = image.size, image.channels
    data = load_workspace(store, image=image)
    if data.unreadable:
        report({"phase": "loading", "unreadable": len(data.unreadable)})
    labelled_classes = np.unique(data.y_lb)
    if len(labelled_classes) < 2:
        raise RoundError(
            f"need labels of at least two classes to train; have {len(data.y_lb)} label(s) in "
            f"{len(labelled_classes)} class(es)"
        )
    seed = int(job.params.get("seed", job.id))
    hold = split_holdout(
        data.y_lb, fraction=settings.holdout_fraction, minimum=settings.min_holdout, seed=seed
    )
    everything = np.concatenate([data.x_lb, data.x_ulb])
    train_data = TrainData(
        x_lb=data.x_lb[~hold],
        y_lb=data.y_lb[~hold],
        x_ulb=everything,
        x_test=data.x_lb[hold] if hold.any() else None,
        y_test=data.y_lb[hold] if hold.any() else None,
        class_names=data.class_names,
    )
    options = {
        **default_config(len(everything), device.type == "cuda", workspace_plan),
        **job.params.get("config", {}),
    }
    options.update(device=str(device), seed=seed, num_threads=0 if device.type == "cuda" else cpu_threads())
    config = TrainConfig.from_dict(options)
    last_annotation = store.last_annotation_id()

    started = time.monotonic()
    stop_asked = False

    def on_metrics(step: int, metrics: dict[str, float]) -> None:
        nonlocal stop_asked
        elapsed = time.monotonic() - started
        stop_asked = report(
            {
                "phase": "training",
                "step": step,
                "steps": config.steps,
                "elapsed_s": elapsed,
                **{k: v for k, v in metrics.items() if math.isfinite(v)},
            }
        )

    init, warm_start = warm_start_state(store, config, data, image_size=image_size, channels=channels)
    if init is None and workspace_plan.pretrained and config.model == workspace_plan.backbone:
        # A first deep round on photos starts from the pretrained backbone, not from random weights.
        init = {
            k: v
            for k, v in feature_model(workspace_plan, 2).state_dict().items()
            if not k.startswith("classifier.")
        }
        warm_start["pretrained"] = workspace_plan.weights.to_dict() if workspace_plan.weights else None
    run_dir = store.workspace.runs / f"job-{job.id}"
    resumed_from = _checkpoint_step(run_dir)
    result = train(
        config,
        train_data,
        run_dir=run_dir,
        callback=on_metrics,
        stop=lambda: stop_asked or halted(),
        init=init,
    )
    if result.stopped:
        return None

    report({"phase": "predicting", "step": result.step, "steps": config.steps})
    probs, emb = predict(result.model, everything, batch_size=512, device=device)
    item_ids = np.concatenate([data.lb_ids, data.ulb_ids])
    metrics: dict[str, Any] = {"train_labels": int((~hold).sum()), "holdout_labels": int(hold.sum())}
    if hold.any():
        correct = int((probs[: len(data.y_lb)][hold].argmax(1) == data.y_lb[hold]).sum())
        n = int(hold.sum())
        low, high = wilson_interval(correct, n)
        metrics.update(
            holdout_accuracy=correct / n,
            holdout_ci95=[low, high],
            holdout_item_ids=data.lb_ids[hold].tolist(),
        )
    else:
        metrics["holdout_note"] = f"fewer than {settings.min_holdout} labels: every label used for training"
    metrics["round_trip"] = round_trip(
        emb[: len(data.y_lb)], data.y_lb, emb[len(data.y_lb) :], len(data.class_ids), seed=seed
    )
    metrics["train_history"] = result.history[-50:]
    metrics["last_annotation_id"] = last_annotation
    metrics["resumed_from_step"] = resumed_from
    metrics["warm_start"] = warm_start
    metrics["wall_s"] = time.monotonic() - started

    folder = _write_version_files(store.workspace, job, result, item_ids, probs, emb, data, config, image.fit)
    version_id = record_version(
        store,
        method="+".join(config.methods),
        backbone=config.model,
        config=config.to_dict(),
        metrics=metrics,
        classes=list(zip(data.class_ids, data.class_names, strict=True)),
        device=device_name(device),
        folder=folder,
        item_ids=item_ids,
        probs=probs,
    )
    shutil.rmtree(run_dir, ignore_errors=True)  # the version folder keeps the final model
    _map_version(store, version_id, report)
    return version_id


def record_version(
    store: Store,
    *,
    method: str,
    backbone: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    classes: list[tuple[int, str]],
    device: str,
    folder: Path,
    item_ids: np.ndarray,
    probs: np.ndarray,
) -> int:
    """Record a version whose files are in ``folder``: its predictions (class, confidence, margin,
    entropy of ``probs``, whose columns follow ``classes``), the label counts it was trained with,
    and its parent, the latest version until now."""
    scores = uncertainty_scores(probs)
    class_ids = np.asarray([class_id for class_id, _ in classes])
    predictions = pd.DataFrame(
        {
            "item_id": item_ids,
            "class_id": class_ids[scores["pred"]],
            "confidence": scores["confidence"],
            "margin": scores["margin"],
            "entropy": scores["entropy"],
        }
    )
    counts = store.label_counts()
    latest = store.versions.latest()
    return store.versions.add(
        method=method,
        backbone=backbone,
        config=config,
        metrics=metrics,
        label_counts={src: int(n) for src, n in counts.groupby("source")["count"].sum().items()},
        classes=[{"id": int(i), "name": n} for i, n in classes],
        device=device,
        path=str(folder.relative_to(store.workspace.root)),
        parent_id=latest.id if latest else None,
        predictions=predictions,
    )


def warm_start_state(
    store: Store, config: TrainConfig, data: WorkspaceArrays, *, image_size: int, channels: int
) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]]:
    """Weights of the latest version to start this round from, and a note of what happened.

    The classifier's rows follow the classes by id, so a reordered class keeps its row; a class new
    since that version starts at zero weights (every logit equal to the others' mean bias). A
    version with another backbone or input shape cannot be reused: the round starts fresh.
    """
    latest = store.versions.latest(fast=False)  # a fast version is a head on frozen features
    if latest is None:
        return None, {"from_version": None, "why_not": "first deep round of this workspace"}
    path = store.workspace.path(latest.path) / "model.pt"
    if not path.exists():
        return None, {"from_version": None, "why_not": f"version {latest.id} has no model file"}
    saved = torch.load(path, map_location="cpu", weights_only=True)
    was = (saved["config"]["model"], int(saved["in_channels"]), int(saved["image_size"]))
    now = (config.model, channels, image_size)
    if was != now:
        return None, {
            "from_version": None,
            "why_not": f"version {latest.id} is (backbone, channels, size) {was}, this round {now}",
        }
    state = dict(saved["state_dict"])
    weight, bias = state["classifier.weight"], state["classifier.bias"]
    row = {int(c): i for i, c in enumerate(saved["class_ids"])}
    new_weight = torch.zeros(len(data.class_ids), weight.shape[1], dtype=weight.dtype)
    new_bias = torch.full((len(data.class_ids),), float(bias.mean()), dtype=bias.dtype)
    for i, class_id in enumerate(data.class_ids):
        if class_id in row:
            new_weight[i], new_bias[i] = weight[row[class_id]], bias[row[class_id]]
    state["classifier.weight"], state["classifier.bias"] = new_weight, new_bias
    new_classes = [c for c in data.class_ids if c not in row]
    return state, {"from_version": latest.id, "new_classes": new_classes}


def _map_version(store: Store, version_id: int, report: Callable[[dict[str, Any]], bool]) -> None:
    """The Explore page's UMAP map, cached with the version so the page only reads it. A failure
    here loses nothing: the version is recorded and the page computes the map itself."""
    from labelkit.explore import projection

    def progress(fraction: float, text: str) -> None:
        report({"phase": "mapping", "fraction": fraction, "text": text})

    try:
        projection(store, store.versions.get(version_id), progress=progress)
    except Exception as error:  # any failure of the optional map must not fail the round
        report({"phase": "mapping", "error": f"{type(error).__name__}: {error}"})


def _checkpoint_step(run_dir: Path) -> int:
    """Step of the checkpoint an interrupted run of this job left (0 if none)."""
    from labelkit.train import CHECKPOINT

    path = run_dir / CHECKPOINT
    if not path.exists():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=False)["step"])


def _write_version_files(
    workspace: Workspace,
    job: JobInfo,
    result: Any,
    item_ids: np.ndarray,
    probs: np.ndarray,
    emb: np.ndarray,
    data: WorkspaceArrays,
    config: TrainConfig,
    fit: str,
) -> Path:
    checkpoint = {
        "state_dict": result.model.state_dict(),
        "config": config.to_dict(),
        "class_ids": list(data.class_ids),
        "class_names": list(data.class_names),
        "in_channels": int(data.x_lb.shape[1]),
        "image_size": int(data.x_lb.shape[-1]),
        "fit": fit,
    }
    return write_version_folder(workspace, f"job{job.id}", checkpoint, item_ids, probs, emb, config.to_dict())


def write_version_folder(
    workspace: Workspace,
    tag: str,
    checkpoint: dict[str, Any],
    item_ids: np.ndarray,
    probs: np.ndarray,
    emb: np.ndarray | Path,
    config: dict[str, Any],
) -> Path:
    """model.pt, probs.npy, embeddings.npy (memory-mappable), item_ids.npy in a folder that appears
    complete or not at all. ``emb`` given as the path of a saved ``.npy`` (the fast model's
    embeddings, the same for every refresh) is hard-linked rather than written again."""
    name = f"model-{time.strftime('%Y%m%d-%H%M%S')}-{tag}-{secrets.token_hex(2)}"
    final = workspace.runs / name
    tmp = workspace.runs / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(checkpoint, tmp / "model.pt")
    np.save(tmp / "probs.npy", probs.astype(np.float32))
    if isinstance(emb, Path):
        try:
            os.link(emb, tmp / "embeddings.npy")
        except OSError:  # another file system, or no hard links: copy
            shutil.copyfile(emb, tmp / "embeddings.npy")
    else:
        np.save(tmp / "embeddings.npy", emb.astype(np.float32))
    np.save(tmp / "item_ids.npy", item_ids.astype(np.int64))
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    os.replace(tmp, final)
    return final


# ------------------------------------------------------------------------------------ the process
class Worker:
    def __init__(self, store: Store, settings: WorkerSettings, *, log: Callable[[str], None] = print) -> None:
        self.store = store
        self.settings = settings
        self.log = log
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._cold_start_checked = -math.inf
        self._fast = FastState()
        self._fast_error: str | None = None
        self.shutdown = threading.Event()
        self._lease_lost = threading.Event()

    def _heartbeat(self) -> None:
        # A thread in the worker process (not in the app): training steps can take longer than the
        # stale timeout on a slow CPU, and the lease must not look dead meanwhile.
        last_beat = time.monotonic()
        while not self.shutdown.wait(self.settings.stale_after / 4):
            try:
                self.store.jobs.heartbeat(self.owner)
                last_beat = time.monotonic()
            except LeaseHeldError as exc:
                self._lose_lease(str(exc))
            except Exception as exc:  # a transient database error: log it and beat again
                silent = time.monotonic() - last_beat
                self.log(f"worker: heartbeat failed ({type(exc).__name__}: {exc}); retrying")
                if silent >= self.settings.stale_after:
                    # Another worker may take the lease over from now on: stop before two run one job.
                    self._lose_lease(f"no heartbeat for {silent:.0f} s, so the lease may be taken over")

    def _lose_lease(self, why: str) -> None:
        self.log(f"worker: {why}; stopping")
        self._lease_lost.set()
        self.shutdown.set()

    def serve(self, *, once: bool = False) -> int:
        """Serve jobs until shut down (or, with ``once``, run one round and return)."""
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads())
        took_over = self.store.jobs.acquire(
            self.owner,
            pid=os.getpid(),
            host=socket.gethostname(),
            device=device_name(self.device),
            stale_after=self.settings.stale_after,
        )
        requeued = self.store.jobs.requeue_running()
        self.log(
            f"worker {self.owner} on {device_name(self.device)}"
            + (f" ({took_over})" if took_over else "")
            + (f"; {requeued} interrupted job(s) resume" if requeued else "")
        )
        beat = threading.Thread(target=self._heartbeat, name="lease-heartbeat", daemon=True)
        beat.start()
        try:
            while not self.shutdown.is_set():
                job = self.store.jobs.claim(self.owner)
                if job is None and once:
                    # One round: the fast model first (predictions in seconds), then a deep round
                    # where this device makes it affordable by default.
                    self._refresh_fast(force=True)
                    if not self._deep_by_default():
                        break
                    self.store.jobs.enqueue("train", {"reason": "once"})
                    continue
                if job is None and self._labels_warrant_a_round():
                    self.store.jobs.enqueue("train", {"reason": "new labels"})
                    continue
                if job is not None:
                    self._run(job)
                    if once:
                        break
                else:
                    self._prepare_cold_start()
                    if not self._refresh_fast():
                        self.shutdown.wait(self.settings.poll)
        finally:
            self.shutdown.set()
            if not self._lease_lost.is_set():
                self.store.jobs.release(self.owner)
        return 0

    def _prepare_cold_start(self) -> None:
        """Before the first model, keep the cold-start embeddings current (new imports included) so
        the Label page's first request on a large workspace does not compute them itself."""
        now = time.monotonic()
        if now - self._cold_start_checked < COLD_START_CHECK_S or self.store.versions.latest() is not None:
            return
        self._cold_start_checked = now
        from labelkit.coldstart import ensure_cold_start

        try:
            ensure_cold_start(self.store)
        except Exception as exc:  # the page computes them itself if this fails; keep serving
            self.log(f"cold-start embeddings: {type(exc).__name__}: {exc}")

    def _deep_by_default(self) -> bool:
        """Deep rounds start by themselves on a GPU, and on a CPU for small images; fine-tuning a
        pretrained photo backbone on a CPU takes long, so there it runs when asked for."""
        if self.device.type == "cuda":
            return True
        try:
            return not current_plan(self.store, self._fast).pretrained
        except WeightsNotFound:
            return False

    def _refresh_fast(self, *, force: bool = False) -> bool:
        """Publish a fast-model version when labels changed since the latest version (debounced:
        a burst of keypresses becomes one refresh). Returns True when it published one."""
        latest = self.store.versions.latest()
        newest = self.store.last_annotation_id()
        covered = int(latest.metrics.get("last_annotation_id", 0)) if latest else 0
        if newest <= covered and not force:
            if (
                latest is not None
                and latest.metrics.get("kind") == "fast"
                and "estimate" not in latest.metrics
            ):
                self._assess(latest.id, covered)
            return False
        if not force:
            last = self.store.annotations(since_id=newest - 1)
            if len(last) and (time.time() - last["created_at"].iloc[-1].timestamp()) < FAST_DEBOUNCE_S:
                return False  # the expert is still typing; refresh after the burst
        try:
            prepare(self.store, self._fast, stop=self.shutdown.is_set)
            if self.shutdown.is_set():
                return False
            version = publish(self.store, self._fast)
            self.log(f"fast model: version {version}")
            if force:  # one round and exit: the estimate is part of the round
                self._assess(version, newest)
        except NotEnoughLabels:
            return False
        except (WeightsNotFound, ValueError) as error:
            if str(error) != self._fast_error:
                self.log(f"fast model: {error}")
            self._fast_error = str(error)
            return False
        self._fast_error = None
        return True

    def _assess(self, version_id: int, covered: int) -> None:
        """The fast version's cross-validated estimate, computed while the expert is not labelling:
        a new label interrupts it (that label's refresh comes first)."""
        if self._fast.fs is None:
            return
        try:
            assess(
                self.store,
                self._fast,
                version_id,
                stop=lambda: self.shutdown.is_set() or self.store.last_annotation_id() > covered,
            )
        except (ValueError, LookupError) as error:
            self.log(f"fast model estimate: {error}")
            self.store.versions.update_metrics(
                version_id, {"estimate": {"n": 0, "accuracy": None, "how": str(error)}}
            )

    def _labels_warrant_a_round(self) -> bool:
        if self.settings.auto_min_new_labels <= 0 or self.store.jobs.active():
            return False
        if not self._deep_by_default():
            return False
        # New labels since the last deep round: fast refreshes after each burst do not reset it.
        latest = self.store.versions.latest(fast=False)
        since = int(latest.metrics.get("last_annotation_id", 0)) if latest else 0
        return len(self.store.annotations(since_id=since)) >= self.settings.auto_min_new_labels

    def _run(self, job: JobInfo) -> None:
        self.log(f"job {job.id}: {job.kind} {job.params}")

        def report(progress: dict[str, Any]) -> bool:
            return self.store.jobs.report(job.id, progress) or self.shutdown.is_set()

        try:
            version = run_round(
                self.store,
                job,
                settings=self.settings,
                device=self.device,
                report=report,
                halted=self.shutdown.is_set,
            )
        except (RoundError, ValueError) as exc:
            self.store.jobs.finish(job.id, "failed", error=str(exc))
            self.log(f"job {job.id} failed: {exc}")
            return
        except torch.cuda.OutOfMemoryError:
            self.store.jobs.finish(
                job.id, "failed", error="the GPU ran out of memory; choose a smaller batch size or model"
            )
            return
        except Exception as exc:  # the worker keeps serving; the job says what went wrong
            self.store.jobs.finish(job.id, "failed", error=f"{type(exc).__name__}: {exc}")
            self.log(traceback.format_exc())
            return
        if version is None:
            if self._lease_lost.is_set():  # the job belongs to whoever holds the lease now
                self.log(f"job {job.id}: stopped, lease lost; left to the worker that holds it")
                return
            if self.shutdown.is_set() and not self.store.jobs.get(job.id).stop_requested:
                self.store.jobs.requeue_running()  # shutting down: resume this job next start
            else:
                self.store.jobs.finish(job.id, "cancelled")
            self.log(f"job {job.id}: stopped")
            return
        self.store.jobs.finish(job.id, "done", model_version_id=version)
        self.log(f"job {job.id}: model version {version}")


def main(workspace: Workspace, *, once: bool, settings: WorkerSettings) -> int:
    store = Store.open(workspace)
    worker = Worker(store, settings, log=lambda m: print(m, flush=True))
    # SIGTERM (the Train page's stop button, or a service manager) stops between steps, with a checkpoint.
    signal.signal(signal.SIGTERM, lambda *_: worker.shutdown.set())
    try:
        return worker.serve(once=once)
    except LeaseHeldError as exc:
        print(f"labelkit worker: {exc}", flush=True)
        return 3
    except KeyboardInterrupt:
        worker.shutdown.set()
        return 130


def spawn(workspace: Workspace, *, auto_min_new_labels: int = 20) -> int:
    """Start ``labelkit worker`` for ``workspace`` as a detached process (it outlives the page that
    started it), logging to ``logs/worker.log``; returns its pid."""
    import subprocess
    import sys

    workspace.logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LABELKIT_DB_URL": workspace.db_url, "PYTHONUNBUFFERED": "1"}
    with open(workspace.logs / "worker.log", "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "labelkit",
                "--workspace",
                str(workspace.root),
                "worker",
                "--auto-min-new-labels",
                str(auto_min_new_labels),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return proc.pid


def stop(store: Store) -> bool:
    """Ask the workspace's worker to stop (SIGTERM: it checkpoints and requeues its job).

    Only a worker on this host can be signalled; returns False when there is none to stop here.
    """
    lease = store.jobs.lease()
    if lease is None or lease.host != socket.gethostname():
        return False
    try:
        os.kill(lease.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True
