"""The background worker: rounds that produce model versions, the lease, and crash safety under kill -9."""

from __future__ import annotations

import math
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy.exc import OperationalError

from labelkit.demo import build_demo, source_index
from labelkit.store import Store
from labelkit.store.jobs import LeaseHeldError, retry_locked
from labelkit.worker import (
    RoundError,
    Worker,
    WorkerSettings,
    run_round,
    split_holdout,
    uncertainty_scores,
    wilson_interval,
)
from labelkit.workspace import Workspace

# A round small enough for a test on a busy 2-core machine: 16 × 16 images, tiny batches.
TINY = {"steps": 6, "batch_size": 8, "mu": 1, "checkpoint_every": 2, "log_every": 1, "aug_group": 8}


def _labelled_demo(store: Store, n: int = 60, labels: int = 24) -> None:
    from labelkit.datasets import load_digits

    build_demo(store, limit=n)
    _, truth = load_digits()
    for row in store.item_table().head(labels).itertuples():
        digit = truth[source_index(row.original_name)]
        store.label(int(row.item_id), store.class_by_name(str(digit)).id, annotator="t")


def test_wilson_interval_matches_a_hand_computation() -> None:
    # 8 of 10 right, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.71677,
    # half 1.96 · sqrt(0.016 + 0.0096040) / 1.38416 = 0.22657 → (0.4902, 0.9433)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_uncertainty_scores_by_hand() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]])
    s = uncertainty_scores(probs)
    assert s["pred"].tolist() == [0, 0]
    assert s["confidence"] == pytest.approx([0.7, 0.4])
    assert s["margin"] == pytest.approx([0.5, 0.0])
    h0 = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert s["entropy"][0] == pytest.approx(h0)


def test_holdout_takes_a_share_of_every_class_but_never_a_class_s_only_label() -> None:
    y = np.array([0] * 10 + [1] * 5 + [2])
    mask = split_holdout(y, fraction=0.2, minimum=10, seed=0)
    assert mask[y == 0].sum() == 2 and mask[y == 1].sum() == 1 and mask[y == 2].sum() == 0
    assert not split_holdout(y[:9], fraction=0.2, minimum=10, seed=0).any()


def test_a_round_records_a_version_with_predictions_for_every_item(store: Store) -> None:
    _labelled_demo(store)
    job_id = store.jobs.enqueue("train", {"config": TINY, "image_size": 16})
    job = store.jobs.claim("test")
    progress: list[dict] = []
    version_id = run_round(
        store,
        job,
        settings=WorkerSettings(),
        device=torch.device("cpu"),
        report=lambda p: progress.append(p) or False,
    )
    assert job.id == job_id and version_id is not None
    version = store.versions.get(version_id)
    predictions = store.versions.predictions(version_id)
    assert sorted(predictions["item_id"]) == sorted(store.item_table()["item_id"])
    assert predictions["confidence"].between(0, 1).all() and (predictions["margin"] >= 0).all()
    assert version.metrics["holdout_labels"] > 0 and 0 <= version.metrics["holdout_accuracy"] <= 1
    matrix = np.array(version.metrics["round_trip"]["matrix"], dtype=float)
    labelled_rows = ~np.isnan(matrix).any(axis=1)
    assert np.allclose(matrix[labelled_rows].sum(axis=1), 1.0)
    folder = store.workspace.path(version.path)
    embeddings = np.load(folder / "embeddings.npy", mmap_mode="r")
    assert embeddings.shape[0] == len(predictions)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)
    assert [p["step"] for p in progress if p.get("phase") == "training"][-1] == TINY["steps"]


def test_the_next_round_warm_starts_from_the_last_version_and_its_map_is_drawn(store: Store) -> None:
    from labelkit.config import TrainConfig
    from labelkit.datasets import load_workspace
    from labelkit.explore import UMAP_FILE
    from labelkit.worker import warm_start_state

    def one_round() -> tuple[int, list[dict]]:
        store.jobs.enqueue("train", {"config": TINY, "image_size": 16})
        progress: list[dict] = []
        report = lambda p: progress.append(p) or False  # noqa: E731
        job = store.jobs.claim("test")
        version_id = run_round(
            store, job, settings=WorkerSettings(), device=torch.device("cpu"), report=report
        )
        store.jobs.finish(job.id, "done", model_version_id=version_id)
        return version_id, progress

    _labelled_demo(store)
    first, progress = one_round()
    assert store.versions.get(first).metrics["warm_start"]["from_version"] is None
    assert (store.workspace.path(store.versions.get(first).path) / UMAP_FILE).exists()
    assert any(p.get("phase") == "mapping" for p in progress)

    # A class added since, placed first: the old classes keep their rows by id, the new one starts at 0.
    extra = store.add_class("smudge")
    store.reorder_classes([extra.id] + [c.id for c in store.classes() if c.id != extra.id])
    data = load_workspace(store, image_size=16, channels=1)
    config = TrainConfig.from_dict({"model": "cnn_small"})
    state, note = warm_start_state(store, config, data, image_size=16, channels=1)
    saved = torch.load(store.workspace.path(store.versions.get(first).path) / "model.pt", weights_only=True)
    old_row = {c: i for i, c in enumerate(saved["class_ids"])}
    assert note == {"from_version": first, "new_classes": [extra.id]}
    assert data.class_ids[0] == extra.id and not state["classifier.weight"][0].any()
    for i, class_id in enumerate(data.class_ids[1:], start=1):
        torch.testing.assert_close(
            state["classifier.weight"][i], saved["state_dict"]["classifier.weight"][old_row[class_id]]
        )
    # Another input size cannot reuse the weights: the round starts fresh and says why.
    assert warm_start_state(store, config, data, image_size=24, channels=1)[0] is None

    second, _ = one_round()
    assert store.versions.get(second).metrics["warm_start"]["from_version"] == first


def test_a_round_without_two_labelled_classes_explains_what_is_missing(store: Store) -> None:
    build_demo(store, limit=10)
    store.label(1, store.class_by_name("3").id, annotator="t")
    store.jobs.enqueue("train", {"config": TINY, "image_size": 16})
    job = store.jobs.claim("test")
    with pytest.raises(RoundError, match="at least two classes"):
        run_round(store, job, settings=WorkerSettings(), device=torch.device("cpu"), report=lambda p: False)


def test_a_live_lease_refuses_a_second_worker_and_a_stale_one_is_taken_over(store: Store) -> None:
    jobs = store.jobs
    assert jobs.acquire("a", pid=1, host="h", device="cpu", stale_after=30) is None
    with pytest.raises(LeaseHeldError, match="pid 1 on h"):
        jobs.acquire("b", pid=2, host="h", device="cpu", stale_after=30)
    assert "stale lease of worker pid 1 on h" in jobs.acquire(
        "b", pid=2, host="h", device="cpu", stale_after=0
    )
    with pytest.raises(LeaseHeldError):
        jobs.heartbeat("a")  # the old holder learns it lost the lease
    jobs.heartbeat("b")


def test_a_fresh_lease_whose_process_is_gone_from_this_host_is_taken_over_at_once(store: Store) -> None:
    host = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store.jobs.acquire("dead", pid=gone.pid, host=host, device="cpu", stale_after=3600)
    message = store.jobs.acquire("new", pid=os.getpid(), host=host, device="cpu", stale_after=3600)
    assert message is not None and f"pid {gone.pid} on {host}, which no longer runs" in message
    assert store.jobs.lease().owner == "new"
    # a live process on this host keeps its lease, and so does one on another host
    with pytest.raises(LeaseHeldError, match=f"pid {os.getpid()}"):
        store.jobs.acquire("third", pid=gone.pid, host=host, device="cpu", stale_after=3600)
    store.jobs.acquire("far", pid=gone.pid, host="other-host", device="cpu", stale_after=0)
    with pytest.raises(LeaseHeldError, match="other-host"):
        store.jobs.acquire("fourth", pid=os.getpid(), host=host, device="cpu", stale_after=3600)


def test_the_heartbeat_survives_transient_database_errors(store: Store) -> None:
    messages: list[str] = []
    worker = Worker(store, WorkerSettings(stale_after=0.4), log=messages.append)
    store.jobs.acquire(worker.owner, pid=os.getpid(), host="h", device="cpu", stale_after=0.4)
    real = store.jobs.heartbeat
    calls: list[str] = []

    def flaky(owner: str) -> None:
        calls.append(owner)
        if len(calls) <= 2:
            raise OperationalError("UPDATE worker_lease", {}, Exception("disk I/O error"))
        real(owner)

    store.jobs.heartbeat = flaky  # type: ignore[method-assign]
    beat = threading.Thread(target=worker._heartbeat)
    beat.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 4:  # two failures, then two good beats
            assert time.monotonic() < deadline, messages
            time.sleep(0.02)
        assert store.jobs.lease().age() < 0.3
        assert beat.is_alive() and not worker._lease_lost.is_set()
        assert sum("heartbeat failed (OperationalError" in m for m in messages) == 2
    finally:
        worker.shutdown.set()
        beat.join()


def test_a_heartbeat_failing_past_the_stale_timeout_stops_the_worker(store: Store) -> None:
    messages: list[str] = []
    worker = Worker(store, WorkerSettings(stale_after=0.2), log=messages.append)

    def down(owner: str) -> None:
        raise OperationalError("UPDATE worker_lease", {}, Exception("unable to open database file"))

    store.jobs.heartbeat = down  # type: ignore[method-assign]
    beat = threading.Thread(target=worker._heartbeat)
    beat.start()
    beat.join(timeout=5)
    assert not beat.is_alive() and worker._lease_lost.is_set() and worker.shutdown.is_set()
    assert "may be taken over; stopping" in messages[-1]


def test_a_worker_that_loses_its_lease_stops_training_and_leaves_the_job_alone(store: Store) -> None:
    _labelled_demo(store, n=40, labels=20)
    job_id = store.jobs.enqueue("train", {"config": {**TINY, "steps": 5000}, "image_size": 16})
    messages: list[str] = []
    worker = Worker(
        store, WorkerSettings(stale_after=0.4, poll=0.05, auto_min_new_labels=0), log=messages.append
    )
    serving = threading.Thread(target=worker.serve)
    serving.start()
    try:
        deadline = time.monotonic() + 120
        while store.jobs.get(job_id).progress.get("step", 0) < 2:
            assert time.monotonic() < deadline and serving.is_alive(), messages
            time.sleep(0.05)
        store.jobs.acquire("usurper", pid=os.getpid(), host="elsewhere", device="cpu", stale_after=0)
        serving.join(timeout=30)
        assert not serving.is_alive(), "the worker went on after losing its lease"
    finally:
        worker.shutdown.set()
        serving.join()
    job = store.jobs.get(job_id)
    # stopped within a heartbeat and a step, and neither requeued nor finished: the job is the new
    # holder's now
    assert job.status == "running" and job.progress["step"] < 5000
    assert store.jobs.lease().owner == "usurper"
    assert any("lease was taken over" in m for m in messages)


def test_claim_waits_out_a_write_lock_longer_than_the_busy_timeout(tmp_path, monkeypatch) -> None:
    from labelkit.store import db

    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 200)
    store = Store.open(Workspace.resolve(tmp_path / "ws"))
    try:
        job_id = store.jobs.enqueue("train")
        locker = sqlite3.connect(
            store.workspace.root / "labelkit.db", isolation_level=None, check_same_thread=False
        )
        locker.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.7, locker.rollback)  # 3.5 busy timeouts
        release.start()
        try:
            assert store.jobs.claim("w").id == job_id
        finally:
            release.join()
            locker.close()
    finally:
        store.close()


def test_retry_locked_retries_only_a_locked_database() -> None:
    calls = []

    def locked() -> None:
        calls.append(1)
        raise OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))

    with pytest.raises(OperationalError):
        retry_locked(locked, attempts=3, pause=0)
    assert len(calls) == 3

    def broken() -> None:
        calls.append(2)
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: jobs"))

    with pytest.raises(OperationalError, match="no such table"):
        retry_locked(broken, attempts=3, pause=0)
    assert calls.count(2) == 1


def test_failed_round_is_recorded_and_the_worker_keeps_serving(store: Store) -> None:
    build_demo(store, limit=10)
    bad = store.jobs.enqueue("train", {"config": {"steps": -1}})
    worker = Worker(store, WorkerSettings(poll=0.05, auto_min_new_labels=0), log=lambda m: None)
    worker.serve(once=True)
    failed = store.jobs.get(bad)
    assert failed.status == "failed" and failed.error
    assert store.jobs.lease() is None  # released on exit


def test_an_idle_worker_before_the_first_model_prepares_the_cold_start_embeddings(store: Store) -> None:
    import threading

    from labelkit.coldstart import load_cold_start

    build_demo(store, limit=12)
    worker = Worker(store, WorkerSettings(poll=0.05, auto_min_new_labels=0), log=lambda m: None)
    thread = threading.Thread(target=worker.serve)
    thread.start()
    folder = store.workspace.runs / "coldstart"
    deadline = time.monotonic() + 60
    while not (folder / "meta.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.shutdown.set()
    thread.join(timeout=30)
    ids, embeddings = load_cold_start(folder)
    assert sorted(ids.tolist()) == sorted(store.item_table()["item_id"]) and embeddings.shape[0] == 12


def _start_worker(ws: Path, stale_after: float = 2) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labelkit",
            "-w",
            str(ws),
            "worker",
            "--stale-after",
            str(stale_after),
            "--poll",
            "0.2",
            "--auto-min-new-labels",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for_step(
    store: Store, job_id: int, at_least: int, proc: subprocess.Popen, timeout: float = 120
) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = store.jobs.get(job_id).progress.get("step", 0)
        if step >= at_least:
            return step
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early:\n{proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach step {at_least}")


@pytest.mark.slow
def test_kill_9_at_random_moments_leaves_the_workspace_consistent_and_training_resumes(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "ws"
    store = Store.open(Workspace.resolve(ws))
    _labelled_demo(store, n=40, labels=20)
    steps = 40
    job_id = store.jobs.enqueue("train", {"config": {**TINY, "steps": steps}, "image_size": 16})
    rng = random.Random(0)
    killed_at = []
    for _ in range(2):
        proc = _start_worker(ws)
        reached = store.jobs.get(job_id).progress.get("step", 0)
        killed_at.append(_wait_for_step(store, job_id, reached + rng.randint(3, 10), proc))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # consistent: no version row, no version folder without its row, the job still owed
        assert store.versions.all() == []
        assert not [p for p in (ws / "runs").iterdir() if p.name.startswith("model-")]
        assert store.jobs.get(job_id).status == "running"
    # No waiting for the dead worker's lease to go stale: its process is gone from this host.
    proc = _start_worker(ws, stale_after=600)
    try:
        deadline = time.monotonic() + 180
        while store.jobs.get(job_id).status != "done":
            assert time.monotonic() < deadline, "the restarted worker did not finish the job"
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert "which no longer runs" in out and "1 interrupted job(s) resume" in out
    version = store.versions.get(store.jobs.get(job_id).model_version_id)
    # resumed from the last checkpoint before the second kill (checkpoints every 2 steps), not from 0
    assert killed_at[-1] - 2 - TINY["log_every"] <= version.metrics["resumed_from_step"] <= killed_at[-1]
    assert version.metrics["resumed_from_step"] > 0
    assert len(store.versions.predictions(version.id)) == store.count_items()
    assert store.jobs.lease() is None  # SIGTERM released it
