"""Home page: what the workspace holds, and importing more images into it."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from labelkit.importer import ImportReport, import_path, import_uploads
from labelkit.store import Store, StoreError
from labelkit.ui import resources
from labelkit.workspace import ENV_IMPORT_ROOTS

# What the upload box offers; the importer decides by content, these only filter the file picker.
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "zip"]
LABEL_CHOICES = {
    "none": "No labels",
    "folders": "Class = first sub-folder (ImageFolder layout)",
    "csv": "From a CSV file (filename,label)",
}

state = st.session_state


def _summary(store: Store) -> None:
    counts = store.label_counts()
    by_source = counts.groupby("source")["count"].sum()
    cells = st.columns(2 + len(by_source))
    cells[0].metric("Items", store.count_items())
    cells[1].metric("Labelled", int(by_source.sum()))
    for cell, (source, count) in zip(cells[2:], by_source.items(), strict=True):
        cell.metric(f"Labelled ({source})", int(count))
    classes = store.classes()
    if not classes:
        st.info("No classes yet: add them on the Settings page, or import a labelled folder.")
        return
    per_class = counts.groupby("class_id")["count"].sum()
    table = pd.DataFrame(
        {"class": [c.name for c in classes], "labels": [int(per_class.get(c.id, 0)) for c in classes]}
    )
    left, right = st.columns(2)
    left.dataframe(table, hide_index=True)
    if table["labels"].any():
        right.bar_chart(table, x="class", y="labels", horizontal=True, sort=False)


def _progress_bar() -> Callable[[int, int], None]:
    bar = st.progress(0.0, text="Reading files…")

    def update(done: int, total: int) -> None:
        bar.progress(done / total if total else 1.0, text=f"{done} of {total} files")

    return update


def _run_import(start: Callable[[Callable[[int, int], None]], ImportReport]) -> None:
    try:
        state["home_report"] = start(_progress_bar())
    except (ValueError, StoreError) as error:
        # The importer raises ValueError (SourceError) when the import cannot start at all.
        state.pop("home_report", None)
        st.error(f"Import failed: {error}")
        return
    # The summary above was drawn before the import; draw the page again with the new counts.
    st.rerun()


def _uploads(store: Store) -> None:
    files = st.file_uploader(
        "Images or .zip files", type=UPLOAD_TYPES, accept_multiple_files=True, key="home_uploads"
    )
    folders = st.checkbox("Class = first sub-folder inside uploaded .zip files", key="home_upload_folders")
    if st.button("Import uploaded files", key="home_upload_button", disabled=not files):
        uploads = [(f.name, f.getvalue()) for f in files or []]
        labels = "folders" if folders else "none"
        _run_import(lambda progress: import_uploads(store, uploads, labels=labels, progress=progress))


def _server_path(store: Store) -> None:
    roots = store.workspace.import_roots
    if not roots:
        st.info(
            f"Importing from the server is off. Set {ENV_IMPORT_ROOTS} to the folders it may read "
            "(separated by ':') and restart the app."
        )
        return
    st.caption("Reads only inside " + ", ".join(f"`{r}`" for r in roots))
    source = st.text_input("Folder or .zip on the server", key="home_path", placeholder=str(roots[0]))
    labels = st.radio(
        "Labels", list(LABEL_CHOICES), format_func=LABEL_CHOICES.get, key="home_labels", horizontal=True
    )
    labels_csv = st.text_input("Labels CSV on the server", key="home_labels_csv") if labels == "csv" else None
    if st.button("Import from the server", key="home_path_button", disabled=not source.strip()):

        def start(progress: Callable[[int, int], None]) -> ImportReport:
            # Both paths resolved (symbolic links included) and checked against the roots first.
            folder = store.workspace.server_path(source.strip())
            csv = store.workspace.server_path(labels_csv.strip()) if labels_csv else None
            return import_path(store, folder, labels=labels, labels_csv=csv, progress=progress)

        _run_import(start)


def _report(report: ImportReport) -> None:
    st.subheader("Last import")
    counts = report.counts()
    for cell, (name, count) in zip(st.columns(len(counts)), counts.items(), strict=True):
        cell.metric(name.capitalize(), count)
    rejected = report.table().query("status == 'rejected'")[["source", "reason"]]
    if not rejected.empty:
        st.dataframe(rejected, hide_index=True)
    if report.csv_path is not None and report.csv_path.exists():
        st.download_button(
            "Download the full report (CSV)",
            report.csv_path.read_bytes(),
            file_name=report.csv_path.name,
            mime="text/csv",
            key="home_report_csv",
            on_click="ignore",
        )


def main() -> None:
    store = resources.store()
    st.title("labelkit")
    _summary(store)
    st.header("Import images")
    upload_tab, path_tab = st.tabs(["Upload", "From the server"])
    with upload_tab:
        _uploads(store)
    with path_tab:
        _server_path(store)
    if "home_report" in state:
        _report(state["home_report"])


main()
