"""The Train page under AppTest: worker status, requesting and stopping rounds, live progress and the
model versions table. No test starts a worker process (tests/test_worker.py covers the process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from labelkit.store import Store
from tests.uitools import add_model_version, make_workspace, open_app, unescaped

PAGE = "labelkit/ui/train.py"
METRICS = {
    "holdout_accuracy": 0.75,
    "holdout_ci95": [0.4, 0.93],
    "holdout_labels": 8,
    "train_labels": 30,
    "train_history": [[10, {"train/sup_loss": 1.2, "train/mask_rate": 0.1}], [20, {"train/sup_loss": 0.8}]],
    "wall_s": 12.4,
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(make_workspace(tmp_path / "ws", items=4, classes=["a", "b"]))
    yield opened
    opened.close()


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch, store: Store) -> AppTest:
    return open_app(monkeypatch, store.workspace, PAGE)


def submit(at: AppTest, **values: object) -> None:
    for key, value in values.items():
        widget = at.multiselect(key=key) if key == "train_methods" else at.get_by_key(key)
        widget.set_value(value)
    at.button(key="FormSubmitter:train_request-Request a round").click().run()


def test_without_a_worker_the_page_says_so_and_offers_only_start(at) -> None:
    assert any("No worker is running" in w.value for w in at.warning)
    assert not at.button(key="train_start_worker").disabled
    assert at.button(key="train_stop_worker").disabled
    assert "No model yet" in at.info[0].value
    assert not at.exception


def test_versions_table_shows_held_out_accuracy_with_its_interval_and_n(monkeypatch, store) -> None:
    items = store.queue_ids(start_key=0, limit=4)
    add_model_version(store, items, [[0.9, 0.1]] * 4, metrics=METRICS)
    at = open_app(monkeypatch, store.workspace, PAGE)
    row = at.dataframe[-1].value.iloc[0]
    assert row["version"] == 1
    assert row["held-out accuracy"] == "75.0% (95 % CI 40.0%–93.0%, n=8)"
    assert (row["method"], row["backbone"], row["items predicted"], row["wall time (s)"]) == (
        "fixmatch",
        "cnn_small",
        4,
        12,
    )
    assert not at.exception


def test_a_version_without_a_held_out_slice_shows_why(monkeypatch, store) -> None:
    items = store.queue_ids(start_key=0, limit=4)
    add_model_version(store, items, [[0.9, 0.1]] * 4, metrics={"holdout_note": "fewer than 10 labels"})
    at = open_app(monkeypatch, store.workspace, PAGE)
    assert at.dataframe[-1].value.iloc[0]["held-out accuracy"] == "fewer than 10 labels"
    assert not at.exception


def test_form_starts_from_the_cpu_defaults_for_the_workspace(at) -> None:
    # worker.default_config for 4 items on a CPU: cnn_small, 300 steps, batch 32, mu 3.
    assert at.multiselect(key="train_methods").value == ["fixmatch"]
    assert at.selectbox(key="train_model").value == "cnn_small"
    assert [at.number_input(key=k).value for k in ("train_steps", "train_batch_size", "train_mu")] == [
        300,
        32,
        3,
    ]


def test_invalid_settings_show_the_validation_error_and_queue_nothing(at, store) -> None:
    submit(at, train_methods=[])
    assert "choose at least one SSL method" in unescaped(at.error[0].value)
    submit(at, train_methods=["fixmatch"], train_lr=0.0)
    assert "need lr > 0" in unescaped(at.error[0].value)
    assert store.jobs.recent() == []
    assert not at.exception


def test_a_valid_request_queues_a_job_with_exactly_those_settings(at, store) -> None:
    submit(
        at,
        train_methods=["fixmatch", "meanteacher"],
        train_model="wrn28_2",
        train_steps=120,
        train_batch_size=16,
        train_mu=2,
        train_lr=0.01,
        train_seed=7,
    )
    [job] = store.jobs.recent()
    assert job.status == "queued"
    assert job.params == {
        "config": {
            "methods": ["fixmatch", "meanteacher"],
            "model": "wrn28_2",
            "steps": 120,
            "batch_size": 16,
            "mu": 2,
            "lr": 0.01,
        },
        "seed": 7,
    }
    assert unescaped(at.success[0].value).startswith(f"Queued round {job.id}:")
    assert at.button(key=f"train_stop_job_{job.id}")
    assert not at.exception


def test_stopping_a_queued_round_cancels_it(monkeypatch, store) -> None:
    job_id = store.jobs.enqueue("train", {"config": {"steps": 50}})
    at = open_app(monkeypatch, store.workspace, PAGE)
    at.button(key=f"train_stop_job_{job_id}").click().run()
    job = store.jobs.get(job_id)
    assert (job.status, job.stop_requested) == ("cancelled", True)
    assert not at.exception


def test_a_running_round_shows_progress_eta_and_can_be_asked_to_stop(monkeypatch, store) -> None:
    job_id = store.jobs.enqueue("train", {"config": {"steps": 200}})
    store.jobs.claim("test-worker")
    store.jobs.report(
        job_id,
        {
            "phase": "training",
            "step": 50,
            "steps": 200,
            "elapsed_s": 10.0,
            "train/sup_loss": 0.5,
            "train/unsup_loss": 0.25,
            "train/mask_rate": 0.4,
            "train/imgs_per_s": 321.0,
        },
    )
    at = open_app(monkeypatch, store.workspace, PAGE)
    bar = at.get("progress")[0].proto
    assert bar.text == f"Round {job_id}: training, step 50 of 200"
    shown = {m.label: m.value for m in at.metric}
    # 10 s for 50 steps, 150 steps to go: 30 s.
    assert shown == {
        "Supervised loss": "0.500",
        "Unsupervised loss": "0.250",
        "Mask rate": "40%",
        "Images / s": "321",
        "Time left": "30 s",
    }
    assert at.session_state["train_history"][job_id][0][0] == 50
    at.button(key=f"train_stop_job_{job_id}").click().run()
    job = store.jobs.get(job_id)
    assert (job.status, job.stop_requested) == ("running", True)
    assert any("stop requested" in c.value for c in at.caption)
    assert not at.exception


def test_a_worker_on_another_host_is_shown_and_cannot_be_stopped_from_here(at, store) -> None:
    store.jobs.acquire("elsewhere:123:abc", pid=123, host="gpu-box", device="cuda (H100)", stale_after=30)
    at.run()
    assert "Worker running: pid 123 on gpu-box, cuda (H100)" in unescaped(at.success[0].value)
    assert at.button(key="train_start_worker").disabled
    at.button(key="train_stop_worker").click().run()
    assert "runs on host gpu-box; stop it there" in unescaped(at.warning[0].value)
    assert not at.exception


def test_a_claimed_round_without_progress_shows_dashes_not_nan(monkeypatch, store) -> None:
    job_id = store.jobs.enqueue("train", {})
    store.jobs.claim("test-worker")
    at = open_app(monkeypatch, store.workspace, PAGE)
    assert at.get("progress")[0].proto.text == f"Round {job_id}: waiting for the worker, step 0 of ?"
    assert {m.value for m in at.metric} == {"–"}
    assert not at.exception


def test_the_worker_log_shows_only_its_end(monkeypatch, store) -> None:
    store.workspace.logs.joinpath("worker.log").write_text("old line\n" * 1_000 + "job 1: model version 1\n")
    at = open_app(monkeypatch, store.workspace, PAGE)
    [log] = at.code
    lines = log.value.splitlines()
    assert lines[-1] == "job 1: model version 1"
    assert set(lines[:-1]) == {"old line"}  # whole lines only
    assert len(log.value) <= 4_000
    assert not at.exception
