"""Plotly selection events (as Streamlit 1.67 returns them) turned into item ids."""

from __future__ import annotations

import json

import pytest

from labelkit.selection import selected_item_ids

# Two traces, as px.scatter(color=...) draws two classes: trace 0 rows → ids 10, 11; trace 1 → 20, 21, 22.
IDS = [[10, 11], [20, 21, 22]]


def _event(*points: dict) -> dict:
    return {"selection": {"points": list(points), "point_indices": [], "box": [], "lasso": []}}


@pytest.mark.parametrize(
    "event", [None, {}, {"selection": {}}, _event()], ids=["none", "empty", "no-points", "empty-points"]
)
def test_no_selection_gives_no_ids(event: dict | None) -> None:
    assert selected_item_ids(event, IDS) == []


def test_points_of_several_traces_map_through_their_own_trace() -> None:
    event = _event(
        {"curve_number": 1, "point_index": 2},
        {"curve_number": 0, "point_index": 1},
        {"curve_number": 1, "point_index": 0},
    )
    # The pooled top-level list cannot tell trace 0's row 1 from trace 1's; it must not be read.
    event["selection"]["point_indices"] = [0, 1, 2]
    assert selected_item_ids(event, IDS) == [11, 20, 22]  # trace by trace, row by row


def test_a_point_selected_twice_or_an_id_drawn_twice_appears_once() -> None:
    ids = [[10, 11], [11, 20]]  # id 11 is drawn in both traces
    event = _event(
        {"curve_number": 0, "point_index": 1},
        {"curve_number": 0, "point_index": 1},  # the same point, clicked and then boxed
        {"curve_number": 1, "point_index": 0},
        {"curve_number": 1, "point_index": 1},
    )
    assert selected_item_ids(event, ids) == [11, 20]


def test_an_aggregated_point_selects_all_its_rows() -> None:
    event = _event({"curve_number": 1, "point_indices": [2, 0]})
    assert selected_item_ids(event, IDS) == [20, 22]


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"curve_number": 2, "point_index": 0}, "names trace 2 but point_item_ids has 2 trace"),
        ({"curve_number": 0, "point_index": 2}, "names row 2 of trace 0, which has 2 ids"),
        ({"curve_number": 0}, "non-integer point_index: None"),
    ],
)
def test_points_the_ids_do_not_cover_are_an_error(point: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        selected_item_ids(_event(point), IDS)


def test_reads_streamlits_own_event_object() -> None:
    # What the frontend sends for a lasso over two traces, parsed by the class st.plotly_chart uses.
    from streamlit.elements.plotly_chart import PlotlyChartSelectionSerde

    sent = _event(
        {"curve_number": 0, "point_number": 0, "point_index": 0, "x": 0.1, "y": 0.2, "customdata": ["a"]},
        {"curve_number": 1, "point_number": 1, "point_index": 1, "x": 0.3, "y": 0.4, "legendgroup": "b"},
    )
    sent["selection"]["lasso"] = [{"xref": "x", "yref": "y", "x": [0, 1, 1], "y": [0, 0, 1]}]
    state = PlotlyChartSelectionSerde().deserialize(json.dumps(sent))
    assert selected_item_ids(state, IDS) == [10, 21]
    assert selected_item_ids(PlotlyChartSelectionSerde().deserialize(None), IDS) == []
