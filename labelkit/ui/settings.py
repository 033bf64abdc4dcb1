"""Settings page: the label classes (add, rename, reorder, shortcut keys, delete) and the workspace."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st
from sqlalchemy.engine import make_url

from labelkit.store import SHORTCUT_KEYS, ClassInfo, ClassInUseError, Store, StoreError
from labelkit.ui import resources
from labelkit.ui.common import flash, plain, show_flash

UNLABEL = -1  # the "leave them unlabelled" choice among the classes labels can move to

state = st.session_state


def _attempt(action: str, call: Callable[..., object], *args: object) -> bool:
    try:
        call(*args)
    except StoreError as error:
        flash("error", f"{action}: {error}")
        return False
    return True


def _add(store: Store) -> None:
    name = state["settings_new_name"]
    if _attempt("Could not add the class", store.add_class, name):
        state["settings_new_name"] = ""
        flash("success", f"Added class {name.strip()}")


def _rename(store: Store, label: ClassInfo) -> None:
    new = state[f"settings_name_{label.id}"]
    if _attempt("Could not rename", store.rename_class, label.id, new):
        flash("success", f"Renamed {label.name} to {new.strip()}")


def _shortcut(store: Store, label: ClassInfo) -> None:
    key = state[f"settings_key_{label.id}"]
    if not _attempt("Could not set the key", store.set_shortcut, label.id, key):
        state[f"settings_key_{label.id}"] = label.shortcut


def _move(store: Store, classes: list[ClassInfo], index: int, step: int) -> None:
    ids = [c.id for c in classes]
    ids[index], ids[index + step] = ids[index + step], ids[index]
    _attempt("Could not reorder", store.reorder_classes, ids)


def _delete(store: Store, label: ClassInfo) -> None:
    target = state.get("settings_move_to")
    try:
        if target == UNLABEL:
            # The user confirmed that the items lose their label; the history keeps the old one.
            table = store.item_table()
            labelled = table.loc[table["class_id"] == label.id, "item_id"].tolist()
            store.label_many(labelled, None, annotator=state.get("annotator", "settings"))
            target = None
        moved = store.delete_class(label.id, move_labels_to=target)
    except ClassInUseError as error:
        flash("error", f"{error} (or tick that they become unlabelled)")
        return
    except StoreError as error:
        flash("error", f"Could not delete {label.name}: {error}")
        return
    flash("success", f"Deleted class {label.name}" + (f"; moved {moved} label(s)" if moved else ""))


def _class_row(store: Store, classes: list[ClassInfo], index: int) -> None:
    label = classes[index]
    taken = {c.shortcut for c in classes if c.id != label.id}
    keys = [None, *(k for k in SHORTCUT_KEYS if k not in taken)]
    state.setdefault(f"settings_name_{label.id}", label.name)
    state.setdefault(f"settings_key_{label.id}", label.shortcut)
    name, rename, key, up, down = st.columns([4, 1, 2, 1, 1], vertical_alignment="bottom")
    name.text_input("Name", key=f"settings_name_{label.id}", label_visibility="collapsed")
    rename.button("Rename", key=f"settings_rename_{label.id}", on_click=_rename, args=(store, label))
    key.selectbox(
        "Key",
        keys,
        key=f"settings_key_{label.id}",
        format_func=lambda k: "no key" if k is None else f"key {k}",
        label_visibility="collapsed",
        on_change=_shortcut,
        args=(store, label),
    )
    up.button(
        "↑",
        key=f"settings_up_{label.id}",
        disabled=index == 0,
        on_click=_move,
        args=(store, classes, index, -1),
    )
    down.button(
        "↓",
        key=f"settings_down_{label.id}",
        disabled=index == len(classes) - 1,
        on_click=_move,
        args=(store, classes, index, 1),
    )


def _delete_section(store: Store, classes: list[ClassInfo]) -> None:
    st.subheader("Delete a class")
    names = {c.id: c for c in classes}
    doomed = st.selectbox(
        "Class to delete", list(names), format_func=lambda i: names[i].name, key="settings_delete"
    )
    if doomed is None:
        return
    in_use = int(store.label_counts().query("class_id == @doomed")["count"].sum())
    if in_use:
        others = {c.id: c.name for c in classes if c.id != doomed}
        choices = [*others, UNLABEL]
        st.selectbox(
            plain(f"{in_use} item(s) carry this label. Move them to"),
            choices,
            index=None,
            placeholder="choose a class, or leave them unlabelled",
            format_func=lambda i: "leave them unlabelled" if i == UNLABEL else others[i],
            key="settings_move_to",
        )
    st.button(
        "Delete", key="settings_delete_button", type="primary", on_click=_delete, args=(store, names[doomed])
    )


def _workspace(store: Store) -> None:
    st.subheader("Workspace")
    st.dataframe(
        {
            "setting": ["folder", "database", "dialect", "items (active)", "items (all)"],
            "value": [
                str(store.workspace.root),
                make_url(store.workspace.db_url).render_as_string(hide_password=True),
                store.dialect,
                str(store.count_items()),
                str(store.count_items(status=None)),
            ],
        },
        hide_index=True,
    )


def _save_model_settings(store: Store) -> None:
    values = {
        "backbone": state["settings_backbone"].strip() or "auto",
        "weights_path": state["settings_weights"].strip() or None,
        "allow_download": bool(state["settings_download"]),
        "hflip": state["settings_hflip"],
        "fast_method": None if state["settings_fast"] == "default" else state["settings_fast"],
    }
    for key, value in values.items():
        if value != store.settings.get(key) and not _attempt(f"set {key}", store.settings.set, key, value):
            return
    flash("success", "Saved; the worker uses them from its next refresh or round.")


def _model(store: Store) -> None:
    from labelkit.cache import status

    st.subheader("Backbone and caches")
    current = store.settings.all()
    with st.form("settings_model"):
        left, right = st.columns(2)
        left.text_input(
            "Backbone",
            value=current["backbone"],
            key="settings_backbone",
            help="auto: a pretrained EfficientNet-Lite0 for photos, pixels and a small CNN for small grey "
            "images; or cnn_small, pixels, or any timm model name (its weights must be on this machine, "
            "named below, or downloadable where allowed)",
        )
        right.text_input(
            "Weights file (optional)", value=current["weights_path"] or "", key="settings_weights"
        )
        left.selectbox(
            "Mirror images in training",
            ["auto", "on", "off"],
            index=["auto", "on", "off"].index(current["hflip"]),
            key="settings_hflip",
        )
        methods = ["default", "association", "labelprop", "pseudolabel", "supervised"]
        right.selectbox(
            "Fast model method",
            methods,
            index=methods.index(current["fast_method"]) if current["fast_method"] in methods else 0,
            key="settings_fast",
        )
        st.checkbox(
            "Allow downloading pretrained weights", value=current["allow_download"], key="settings_download"
        )
        st.form_submit_button("Save", on_click=_save_model_settings, args=(store,))
    caches = status(store.workspace.cache)
    if caches:
        total = store.count_items()
        st.dataframe([{**c, "of active items": f"{c['items']} / {total}"} for c in caches], hide_index=True)
    else:
        st.caption("Nothing cached yet: the worker decodes and embeds the images after the first labels.")


def main() -> None:
    store = resources.store()
    st.title("Settings")
    show_flash()
    st.subheader("Classes")
    classes = store.classes()
    for index in range(len(classes)):
        _class_row(store, classes, index)
    new, add = st.columns([4, 1], vertical_alignment="bottom")
    new.text_input("New class", key="settings_new_name", placeholder="name of a new class")
    add.button("Add class", key="settings_add", on_click=_add, args=(store,))
    if classes:
        _delete_section(store, classes)
    _model(store)
    _workspace(store)


main()
