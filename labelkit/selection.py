"""Which items a click, box or lasso on a plotly scatter selected.

``st.plotly_chart(fig, on_select="rerun")`` returns an event state (Streamlit 1.67,
``streamlit/elements/plotly_chart.py``: ``PlotlyState`` / ``PlotlySelectionState``), a read-only dict::

    {"selection": {"points": [...], "point_indices": [...], "box": [...], "lasso": [...]}}

Each entry of ``points`` is plotly.js's event point with its keys in snake_case; this module relies
on two of them: ``curve_number`` (which trace) and either ``point_index`` (the point's row within that
trace) or, for traces that aggregate rows such as histograms, ``point_indices`` (all of them).

The top-level ``selection.point_indices`` is not used: the frontend pools the indices of every
trace into one set, so once a figure has several traces (``px.scatter(color=...)`` makes one per
class) trace 0's point 3 and trace 1's point 3 become the same number. ``customdata`` is not used
either: what it holds is up to whoever built the figure, while ``point_item_ids`` states the mapping
outright.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeVar

ItemId = TypeVar("ItemId", bound=Hashable)


def _index(value: Any, *, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"selection point has a non-integer {what}: {value!r}")
    return value


def selected_item_ids(
    event: Mapping[str, Any] | None, point_item_ids: Sequence[Sequence[ItemId]]
) -> list[ItemId]:
    """Item ids of the selected points, in plotted order (trace by trace, row by row), each once.

    Parameters
    ----------
    event : Mapping or None
        What ``st.plotly_chart(..., on_select="rerun")`` returned (or ``st.session_state[key]``).
        None, an empty mapping and an empty selection all mean nothing is selected.
    point_item_ids : sequence of sequences
        ``point_item_ids[t][i]`` is the item id drawn as row ``i`` of trace ``t`` of the figure.

    Returns
    -------
    list
        The ids, ordered by (trace, row); a point selected twice (a click plus a box, or an id drawn
        in two traces) appears once, at its first place.

    Raises
    ------
    ValueError
        When a point names a trace or row that ``point_item_ids`` does not have: the ids do not
        belong to the figure that was drawn.
    """
    selection = (event or {}).get("selection") or {}
    rows: set[tuple[int, int]] = set()
    for point in selection.get("points") or []:
        trace = _index(point.get("curve_number"), what="curve_number")
        if "point_indices" in point and point["point_indices"] is not None:
            indices = [_index(i, what="point_indices entry") for i in point["point_indices"]]
        else:
            indices = [_index(point.get("point_index"), what="point_index")]
        if not 0 <= trace < len(point_item_ids):
            raise ValueError(
                f"selection names trace {trace} but point_item_ids has {len(point_item_ids)} trace(s); "
                "pass the ids of the figure that was drawn"
            )
        for i in indices:
            if not 0 <= i < len(point_item_ids[trace]):
                raise ValueError(
                    f"selection names row {i} of trace {trace}, which has {len(point_item_ids[trace])} "
                    "ids; pass the ids of the figure that was drawn"
                )
            rows.add((trace, i))
    ids = (point_item_ids[trace][i] for trace, i in sorted(rows))
    return list(dict.fromkeys(ids))
