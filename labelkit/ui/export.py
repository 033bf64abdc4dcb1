"""Export page: a model version's bundle (TorchScript, ONNX, model card, labels, predictions) as a
.zip to download, and the labels alone as CSV.

Bundles are built into the workspace's ``reports/exports/`` folder; the download buttons read their
data only when clicked, so a large bundle or label table costs nothing until someone asks for it.
"""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from labelkit import tables
from labelkit.export import ExportError, export_zip, labels_table
from labelkit.store import Store
from labelkit.store.versions import VersionInfo
from labelkit.ui import resources
from labelkit.ui.common import plain

state = st.session_state


def _version_label(version: VersionInfo) -> str:
    accuracy = version.metrics.get("holdout_accuracy")
    scored = f" · held-out {accuracy:.1%}" if accuracy is not None else ""
    return (
        f"Version {version.id} · {version.method} on {version.backbone} · "
        f"{version.created_at:%Y-%m-%d %H:%M}{scored}"
    )


def _card_summary(version: VersionInfo) -> None:
    metrics = version.metrics
    cells = st.columns(4)
    if "holdout_accuracy" in metrics:
        low, high = metrics["holdout_ci95"]
        cells[0].metric("Held-out accuracy", f"{metrics['holdout_accuracy']:.1%}")
        cells[0].caption(f"95 % CI {low:.1%}–{high:.1%} (Wilson), n = {metrics['holdout_labels']}")
    else:
        cells[0].metric("Held-out accuracy", "—")
        cells[0].caption(plain(metrics.get("holdout_note", "no held-out evaluation")))
    cells[1].metric("Items predicted", f"{version.num_items:,}")
    cells[2].metric("Labels when trained", sum(int(n) for n in version.label_counts.values()))
    cells[2].caption(", ".join(f"{source} {n}" for source, n in sorted(version.label_counts.items())))
    cells[3].metric("Classes", len(version.classes))
    cells[3].caption(plain(", ".join(c["name"] for c in version.classes)))
    with st.expander(plain(f"Settings (trained on {version.device})")):
        st.json(version.config)


def _build(store: Store, version_id: int, imagefolder: bool) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = store.workspace.reports / "exports" / f"labelkit-model-v{version_id}-{stamp}.zip"
    bar = st.progress(0.0, text="Loading the model…")

    def update(done: int, total: int, what: str) -> None:
        bar.progress(min(1.0, done / total), text=what)

    try:
        path = export_zip(store, version_id, out, imagefolder=imagefolder, progress=update)
    except (ExportError, OSError) as error:
        bar.empty()
        st.error(f"Export failed: {error}")
        return
    bar.empty()
    previous = state.get("export_built")
    if previous is not None:
        # One bundle per session on disk: a rebuilt bundle replaces this session's earlier one.
        Path(previous[1]).unlink(missing_ok=True)
    state["export_built"] = (version_id, str(path))


def _bundle(store: Store) -> None:
    versions = {v.id: v for v in reversed(store.versions.all()) if v.status == "ready"}
    if not versions:
        st.info(
            "No model version yet: label a few items of two or more classes, then train a round on the Train page."
        )
        return
    version_id = st.selectbox(
        "Model version",
        list(versions),
        format_func=lambda i: _version_label(versions[i]),
        key="export_version",
    )
    version = versions[version_id]
    _card_summary(version)
    imagefolder = st.checkbox(
        "Also include the labelled images (imagefolder/CLASS/…, for torchvision's ImageFolder)",
        key="export_imagefolder",
    )
    if st.button("Build the bundle", key="export_build", type="primary"):
        _build(store, version_id, imagefolder)
    built = state.get("export_built")
    if built is not None and built[0] == version_id and Path(built[1]).is_file():
        path = Path(built[1])
        st.download_button(
            f"Download {path.name} ({path.stat().st_size / 2**20:.1f} MiB)",
            path.read_bytes,
            file_name=path.name,
            mime="application/zip",
            key="export_download",
            on_click="ignore",
            icon=":material/download:",
        )
        st.caption(
            plain(
                f"Saved on the server as {path}. Predict with it anywhere: "
                f"labelkit predict --model {path.name} IMAGES_OR_FOLDER"
            )
        )


def _labels(store: Store) -> None:
    counts = store.label_counts()
    by_source = counts.groupby("source")["count"].sum()
    total = int(by_source.sum()) if len(by_source) else 0
    detail = ", ".join(f"{source} {int(n)}" for source, n in by_source.items())
    st.write(f"{total} labelled items" + (f" ({detail})" if detail else ""))
    st.download_button(
        "Download labels (CSV)",
        lambda: tables.csv_text(labels_table(store)),
        file_name="labels.csv",
        mime="text/csv",
        key="export_labels_csv",
        on_click="ignore",
        disabled=total == 0,
    )


def main() -> None:
    store = resources.store()
    st.title("Export")
    st.header("Model bundle")
    _bundle(store)
    st.header("Labels only")
    _labels(store)


main()
