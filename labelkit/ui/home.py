"""Home page: what the workspace holds, and importing more images into it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from labelkit.store import Store
from labelkit.ui import resources


def _summary(store: Store) -> None:
    counts = store.label_counts()
    total = store.count_items()
    by_source = counts.groupby("source")["count"].sum()
    labelled = int(by_source.sum())
    cells = st.columns(2 + len(by_source))
    cells[0].metric("Items", total)
    cells[1].metric("Labelled", labelled)
    for cell, (source, count) in zip(cells[2:], by_source.items(), strict=True):
        cell.metric(f"Labelled ({source})", int(count))
    classes = store.classes()
    if not classes:
        st.info("No classes yet: add them on the Settings page.")
        return
    per_class = counts.groupby("class_id")["count"].sum()
    table = pd.DataFrame(
        {"class": [c.name for c in classes], "labels": [int(per_class.get(c.id, 0)) for c in classes]}
    )
    left, right = st.columns(2)
    left.dataframe(table, hide_index=True)
    right.bar_chart(table, x="class", y="labels", horizontal=True, sort=False)


def main() -> None:
    store = resources.store()
    st.title("labelkit")
    _summary(store)


main()
