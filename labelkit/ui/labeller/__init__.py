"""The browser side of one-at-a-time labelling: a Streamlit components v2 component whose
JavaScript and CSS live next to this file (vendored, no build step). ``labelkit.labelling`` holds
the protocol it speaks and applies its events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

HERE = Path(__file__).parent
LABELLER_KEY = "label_labeller"  # its session-state key on the Label page

# Declared once per process (this module is imported once); a page script re-runs on every rerun.
_component = st.components.v2.component(
    "labelkit_labeller",
    html="",
    css=(HERE / "labeller.css").read_text(encoding="utf-8"),
    js=(HERE / "labeller.js").read_text(encoding="utf-8"),
)


def _nothing() -> None:
    # The page reads the update from session state on every run; the callback only declares it.
    return None


def labeller(data: dict[str, Any], *, key: str) -> Any:
    """Mount the labeller with ``data`` (classes, the preloaded items, the acknowledgement); its
    ``update`` state value is what the browser sent last."""
    return _component(key=key, data=data, on_update_change=_nothing)
