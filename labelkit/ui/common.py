"""What every page shares: messages that outlive the rerun of a callback, and user text as text."""

from __future__ import annotations

import re
from typing import Literal

import streamlit as st

Kind = Literal["success", "info", "warning", "error"]
_FLASH = "flash"
# CommonMark lets any ASCII punctuation be escaped; Streamlit's own :emoji: and :color[...]
# directives start with ':' so escaping it keeps names such as ":red[x]" literal too.
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:=])")


def flash(kind: Kind, message: str) -> None:
    """Show ``message`` on the next run of the page (callbacks run before the page is drawn)."""
    st.session_state[_FLASH] = (kind, message)


def show_flash() -> None:
    kind, message = st.session_state.pop(_FLASH, ("", ""))
    if kind:
        getattr(st, kind)(plain(message))


def plain(text: str) -> str:
    """``text`` escaped for widget labels, which Streamlit renders as Markdown."""
    return _MARKDOWN.sub(r"\\\1", text)
