"""What every page shares: messages that outlive the rerun of a callback, user text as text, and
undoing the session's last step."""

from __future__ import annotations

import re
from typing import Literal

import streamlit as st

from labelkit.store import AnnotationInfo, Store, StoreError, UndoConflictError

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


def undo_last(store: Store, stack: str) -> list[AnnotationInfo] | None:
    """Undo the last step on the session's undo stack ``st.session_state[stack]`` (lists of the
    annotation ids one action wrote); None when it could not be undone, with the reason flashed."""
    step = st.session_state[stack].pop()
    try:
        return store.undo_many(list(reversed(step)), annotator=st.session_state["annotator"])
    except UndoConflictError as error:
        # Someone labelled one of the items again: the step can never be undone now; dropping it
        # keeps the steps before it reachable.
        flash("warning", str(error))
    except StoreError as error:
        st.session_state[stack].append(step)
        flash("error", str(error))
    return None
