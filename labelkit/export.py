"""What the user walks away with: the labels (and, with later model versions, the model)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from labelkit.store import Store

LABEL_FORMATS = ("csv", "json")
LABEL_COLUMNS = ["item_id", "path", "original_name", "sha256", "class", "source", "annotator", "labeled_at"]


def labels_table(store: Store, *, sources: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per labelled item; ``source`` keeps human, imported and accepted pseudo-labels apart."""
    items = store.item_table()
    names = {c.id: c.name for c in store.classes()}
    labelled = items[items["class_id"].notna()].copy()
    if sources is not None:
        labelled = labelled[labelled["source"].isin(sources)]
    labelled["class"] = labelled["class_id"].map(lambda cid: names.get(int(cid)))
    labelled["labeled_at"] = pd.to_datetime(labelled["labeled_at"]).map(
        lambda t: t.isoformat() if pd.notna(t) else None
    )
    return labelled[LABEL_COLUMNS].reset_index(drop=True)


def write_labels(store: Store, out: str | os.PathLike[str], *, fmt: str) -> int:
    """Write the labels as CSV or JSON (a list of objects); returns the number of rows."""
    if fmt not in LABEL_FORMATS:
        raise ValueError(f"format must be one of {', '.join(LABEL_FORMATS)}; got {fmt!r}")
    table = labels_table(store)
    path = Path(out)
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "csv":
        table.to_csv(tmp, index=False)
    else:
        tmp.write_text(json.dumps(table.to_dict(orient="records"), indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return len(table)
