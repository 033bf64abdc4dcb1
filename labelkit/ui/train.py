"""Train page: the background worker, requests for training rounds, their live progress, and the
model versions they produced.

The page never trains itself: it enqueues jobs that the worker process (``labelkit worker``, started
here or elsewhere) claims, and reads back the progress the worker reports.
"""

from __future__ import annotations

import math
import socket
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from labelkit import worker
from labelkit.config import TrainConfig
from labelkit.models import MODELS
from labelkit.ssl import METHODS
from labelkit.store import Store
from labelkit.store.jobs import JobInfo
from labelkit.ui import resources
from labelkit.ui.common import flash, plain, show_flash

STALE_AFTER = worker.WorkerSettings().stale_after  # the age at which the worker itself takes a lease over
# Curves drawn from a round's metrics: losses share one panel, rates (0..1) the other.
LOSSES = ("train/sup_loss", "train/unsup_loss", "train/loss")
RATES = ("train/mask_rate", "train/pseudo_acc", "eval/acc")
LOG_TAIL_BYTES = 4_000
HISTORY_POINTS = 2_000  # per job kept in session_state; the worker reports every log_every steps

state = st.session_state


# ------------------------------------------------------------------------------------- callbacks
def _start_worker(store: Store) -> None:
    pid = worker.spawn(store.workspace)
    log = store.workspace.logs / "worker.log"
    flash("success", f"Started a worker (pid {pid}); it loads in a few seconds. Its log: {log}")


def _stop_worker(store: Store) -> None:
    lease = store.jobs.lease()
    if worker.stop(store):
        flash(
            "success",
            "Asked the worker to stop: it saves a checkpoint, puts its job back in the queue and exits.",
        )
    elif lease is not None and lease.host != socket.gethostname():
        flash("warning", f"The worker runs on host {lease.host}; stop it there (pid {lease.pid}).")
    else:
        flash("info", "No worker process to stop on this host.")


def _request_round(store: Store, defaults: dict[str, Any]) -> None:
    chosen = {
        "methods": list(state["train_methods"]),
        "model": state["train_model"],
        "steps": int(state["train_steps"]),
        "batch_size": int(state["train_batch_size"]),
        "mu": int(state["train_mu"]),
        "lr": float(state["train_lr"]),
    }
    seed = int(state["train_seed"])
    try:
        # Validate what the worker will run: its defaults for this workspace, overridden by the form.
        TrainConfig.from_dict({**defaults, **chosen, "seed": seed})
    except ValueError as error:
        flash("error", f"Not queued: {error}")
        return
    # The worker takes the seed from the job (it also draws the held-out split), not from the config.
    job_id = store.jobs.enqueue("train", {"config": chosen, "seed": seed})
    flash(
        "success",
        f"Queued round {job_id}: {', '.join(chosen['methods'])} on {chosen['model']}, {chosen['steps']} steps.",
    )


def _stop_job(store: Store, job_id: int) -> None:
    # A button in the live fragment reruns only the fragment, which shows the job's new state itself.
    store.jobs.request_stop(job_id)


# --------------------------------------------------------------------------------------- drawing
def _defaults(store: Store) -> dict[str, Any]:
    import torch

    from labelkit.backbones import WeightsNotFound
    from labelkit.features import plan

    try:
        workspace_plan = plan(store)
    except (WeightsNotFound, ValueError):
        workspace_plan = None
    return worker.default_config(store.count_items(), torch.cuda.is_available(), workspace_plan)


@st.fragment(run_every=2)
def _fast_model(store: Store) -> None:
    """The fast model: a head on cached features the worker refreshes within seconds of a label."""
    from labelkit.refresh import summary

    shown = summary(store.versions.all())
    if shown is None:
        st.caption(
            "No fast model yet: once two classes have labels, the running worker fits one on the "
            "cached embeddings within seconds and refreshes it after every few labels."
        )
        return
    cells = st.columns(4)
    cells[0].metric("Fast model", f"v{shown['version']}", help=shown["method"])
    cells[1].metric("Labels used", shown["labels"])
    cells[2].metric("Last refresh", shown["age"])
    cells[3].metric("Estimated accuracy", shown["accuracy"], help=shown["how"])
    st.caption(plain(shown["detail"]))
    if shown.get("floor"):
        st.info(plain(shown["floor"]))


def _worker_status(store: Store) -> None:
    lease = store.jobs.lease()
    if lease is None:
        st.warning("No worker is running: start one to train the rounds you request.")
        return
    age = lease.age()
    where = f"pid {lease.pid} on {lease.host}, {lease.device}"
    if age >= STALE_AFTER:
        st.warning(
            f"No worker is running: the last one ({where}) stopped answering {age:.0f} s ago. "
            "A new worker takes its place and resumes its round."
        )
        return
    st.success(f"Worker running: {where}; heartbeat {age:.0f} s ago.")
    if lease.host != socket.gethostname():
        st.caption(f"It runs on another host than this app ({socket.gethostname()}): stop it there.")


def _worker_buttons(store: Store) -> None:
    alive = store.jobs.worker_alive(STALE_AFTER)
    left, right, _ = st.columns([1, 1, 4])
    left.button(
        "Start worker", key="train_start_worker", disabled=alive, on_click=_start_worker, args=(store,)
    )
    right.button(
        "Stop worker", key="train_stop_worker", disabled=not alive, on_click=_stop_worker, args=(store,)
    )


def _worker_log(store: Store) -> None:
    log = store.workspace.logs / "worker.log"
    if not log.exists():
        return
    # The log grows with every round (and holds tracebacks of failed ones); read only its end.
    start = max(0, log.stat().st_size - LOG_TAIL_BYTES)
    with open(log, "rb") as handle:
        handle.seek(start)
        tail = handle.read().decode(errors="replace")
    if start:
        tail = tail.partition("\n")[2]  # the first line read is cut
    with st.expander("Worker log (last lines)"):
        st.code(tail, language=None)


def _request_form(store: Store) -> None:
    defaults = _defaults(store)
    with st.form("train_request"):
        st.multiselect("Methods", sorted(METHODS), default=defaults["methods"], key="train_methods")
        cells = st.columns(3)
        models = sorted({*MODELS, defaults["model"]})
        cells[0].selectbox("Model", models, index=models.index(defaults["model"]), key="train_model")
        cells[1].number_input("Steps", value=defaults["steps"], step=100, key="train_steps")
        cells[2].number_input(
            "Batch size (labelled images per step)",
            value=defaults["batch_size"],
            step=8,
            key="train_batch_size",
        )
        cells = st.columns(3)
        cells[0].number_input(
            "μ (unlabelled images per labelled one)", value=defaults["mu"], step=1, key="train_mu"
        )
        cells[1].number_input(
            "Learning rate", value=TrainConfig().lr, step=0.005, format="%.4f", key="train_lr"
        )
        cells[2].number_input("Seed", value=0, step=1, key="train_seed")
        st.form_submit_button(
            "Request a round", type="primary", on_click=_request_round, args=(store, defaults)
        )


def _eta(progress: dict[str, Any]) -> str:
    step, steps, elapsed = progress.get("step", 0), progress.get("steps", 0), progress.get("elapsed_s")
    if not step or elapsed is None or steps <= step:
        return "–"
    seconds = elapsed / step * (steps - step)
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _shown(progress: dict[str, Any], name: str, form: str) -> str:
    value = progress.get(name)
    return "–" if value is None or not math.isfinite(value) else form.format(value)


def _remember(job: JobInfo) -> list[tuple[int, dict[str, float]]]:
    """The curve points this session has seen for ``job`` (the worker keeps only the latest)."""
    history = state.setdefault("train_history", {}).setdefault(job.id, [])
    progress = job.progress
    if progress.get("phase") == "training" and (not history or history[-1][0] != progress["step"]):
        history.append(
            (progress["step"], {k: v for k, v in progress.items() if k.startswith(("train/", "eval/"))})
        )
        del history[:-HISTORY_POINTS]
    return history


def curves(history: list[tuple[int, dict[str, float]]], title: str) -> go.Figure:
    """Loss and rate curves of one round from (step, metrics) points."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("losses", "mask rate and accuracy"))
    for column, names in enumerate((LOSSES, RATES), start=1):
        for name in names:
            points = [(step, m[name]) for step, m in history if name in m and math.isfinite(m[name])]
            if points:
                steps, values = zip(*points, strict=True)
                figure.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=name), row=1, col=column)
    figure.update_xaxes(title_text="step")
    figure.update_layout(title_text=title, height=320, margin={"t": 60, "b": 30})
    return figure


def _job_row(job: JobInfo) -> dict[str, Any]:
    config = job.params.get("config", {})
    return {
        "round": job.id,
        "status": job.status,
        "methods": ", ".join(config.get("methods", [])) or "defaults",
        "model": config.get("model", "default"),
        "steps": config.get("steps"),
        "requested": job.created_at,
        "finished": job.finished_at,
        "error": job.error or "",
    }


def _running(job: JobInfo) -> None:
    progress = job.progress
    phase = progress.get("phase", "waiting for the worker")
    if phase == "mapping":  # the version is saved; the worker draws its Explore map
        fraction = min(max(float(progress.get("fraction", 0.0)), 0.0), 1.0)
        st.progress(fraction, text=f"Round {job.id}: model saved; {progress.get('text', 'drawing the map')}")
        return
    step, steps = int(progress.get("step", 0)), int(progress.get("steps", 0))
    st.progress(
        min(step / steps, 1.0) if steps else 0.0,
        text=f"Round {job.id}: {phase}, step {step} of {steps or '?'}",
    )
    cells = st.columns(5)
    cells[0].metric("Supervised loss", _shown(progress, "train/sup_loss", "{:.3f}"))
    cells[1].metric("Unsupervised loss", _shown(progress, "train/unsup_loss", "{:.3f}"))
    cells[2].metric("Mask rate", _shown(progress, "train/mask_rate", "{:.0%}"))
    cells[3].metric("Images / s", _shown(progress, "train/imgs_per_s", "{:.0f}"))
    cells[4].metric("Time left", _eta(progress))
    history = _remember(job)
    if history:
        st.plotly_chart(curves(history, f"Round {job.id} so far"), key=f"train_live_{job.id}")


@st.fragment(run_every=2)
def _live(store: Store) -> None:
    _worker_status(store)
    active = store.jobs.active()
    running = [j for j in active if j.status == "running"]
    watched = state.get("train_watching")
    if watched is not None and watched not in {j.id for j in active}:
        # The round this session watched has ended: redraw the whole page for its version and outcome.
        state["train_watching"] = None
        st.rerun(scope="app")
    if running:
        state["train_watching"] = running[0].id
        _running(running[0])
    elif active:
        state["train_watching"] = active[0].id
        st.info(f"{len(active)} round(s) queued; waiting for the worker to take round {active[0].id}.")
    for job in active:
        if job.stop_requested:
            st.caption(f"Round {job.id}: stop requested; the worker stops it at its next step.")
        else:
            st.button(
                f"Stop round {job.id} ({job.status})",
                key=f"train_stop_job_{job.id}",
                on_click=_stop_job,
                args=(store, job.id),
            )


def _versions(store: Store) -> None:
    versions = store.versions.all()
    if not versions:
        st.info("No model yet: request a round above.")
        return
    rows = []
    for v in reversed(versions):
        m = v.metrics
        if "holdout_accuracy" in m:
            low, high = m["holdout_ci95"]
            held_out = f"{m['holdout_accuracy']:.1%} (95 % CI {low:.1%}–{high:.1%}, n={m['holdout_labels']})"
        else:
            held_out = m.get("holdout_note", "not measured")
        rows.append(
            {
                "version": v.id,
                "created": v.created_at,
                "method": v.method,
                "backbone": v.backbone,
                "held-out accuracy": held_out,
                "training labels": m.get("train_labels"),
                "device": v.device,
                "items predicted": v.num_items,
                "wall time (s)": round(m["wall_s"]) if "wall_s" in m else None,
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    latest = store.versions.latest()
    if latest is not None and latest.metrics.get("train_history"):
        history = [(int(step), metrics) for step, metrics in latest.metrics["train_history"]]
        st.plotly_chart(curves(history, f"Model v{latest.id}: last logged steps"), key="train_latest_curves")


def main() -> None:
    store = resources.store()
    st.title("Train")
    show_flash()
    st.subheader("Worker")
    _live(store)
    _worker_buttons(store)
    _worker_log(store)
    st.subheader("Fast model")
    _fast_model(store)
    st.subheader("Request a deep round")
    st.caption(
        "A deep round fine-tunes the whole network with the chosen semi-supervised methods. On a GPU "
        "the worker runs one by itself; on a CPU it is slow for photos (the time left shows once it runs)."
    )
    _request_form(store)
    recent = store.jobs.recent(10)
    if recent:
        with st.expander("Recent rounds"):
            st.dataframe(pd.DataFrame([_job_row(j) for j in recent]), hide_index=True)
        if recent[0].status == "failed":
            st.error(plain(f"Round {recent[0].id} failed: {recent[0].error}"))
    st.subheader("Model versions")
    _versions(store)


main()
