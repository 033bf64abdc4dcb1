"""The label store: append-only history, undo, the current-label projection, classes, concurrency."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from labelkit.store import (
    ClassInUseError,
    NewItem,
    NotFoundError,
    QueueFilter,
    Store,
    StoreError,
    UndoConflictError,
)
from labelkit.store.schema import Base
from labelkit.workspace import Workspace


def add_items(store: Store, n: int, start: int = 0) -> list[int]:
    shas = store.add_items(
        [
            NewItem(
                f"{i:064x}", f"images/{i}.png", f"thumbs/{i}.png", f"img{i}.png", "test", 32, 32, "PNG", "L"
            )
            for i in range(start, start + n)
        ]
    )
    return [shas[f"{i:064x}"] for i in range(start, start + n)]


@pytest.fixture
def labelled(store: Store) -> tuple[Store, list[int], list[int]]:
    classes = [c.id for c in store.ensure_classes(["salmon", "trout", "cod"])]
    return store, add_items(store, 10), classes


def test_sqlite_runs_in_wal_mode_with_foreign_keys(store: Store) -> None:
    with store.read() as s:
        conn = s.connection()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000


def test_migrations_create_exactly_the_models_schema(store: Store) -> None:
    with store._reader.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_label_is_committed_when_label_returns(labelled) -> None:
    store, items, classes = labelled
    store.label(items[0], classes[1], annotator="ana")
    # A separate raw connection sees it at once: nothing waits in an open transaction.
    raw = sqlite3.connect(store.workspace.root / "labelkit.db")
    rows = raw.execute("SELECT item_id, class_id, annotator, source FROM annotations").fetchall()
    assert rows == [(items[0], classes[1], "ana", "human")]


def test_relabel_appends_history_and_moves_current_label(labelled) -> None:
    store, items, classes = labelled
    first = store.label(items[0], classes[0], annotator="ana")
    second = store.label(items[0], classes[1], annotator="bo")
    history = store.history(items[0])
    assert [h.id for h in history] == [first.id, second.id]
    current = store.current_label(items[0])
    assert current is not None
    assert (current.class_id, current.annotator, current.annotation_id) == (classes[1], "bo", second.id)


def test_undo_appends_a_row_restoring_the_previous_label(labelled) -> None:
    store, items, classes = labelled
    store.label(items[0], classes[0], annotator="ana")
    second = store.label(items[0], classes[1], annotator="ana")
    revert = store.undo(second.id, annotator="ana")
    assert revert.reverts_id == second.id
    assert len(store.history(items[0])) == 3  # nothing deleted
    current = store.current_label(items[0])
    assert current is not None and current.class_id == classes[0]


def test_undo_several_steps_back_to_unlabelled(labelled) -> None:
    store, items, classes = labelled
    steps = [store.label(items[0], c, annotator="ana") for c in classes]
    for step in reversed(steps):
        store.undo(step.id, annotator="ana")
    assert store.current_label(items[0]) is None
    assert store.label_counts().empty


def test_current_labels_follow_relabels_and_undos_and_match_the_item_table(labelled) -> None:
    store, items, classes = labelled
    assert store.current_labels().empty
    store.label(items[3], classes[0], annotator="ana")
    store.label(items[1], classes[0], annotator="ana")
    store.label(items[1], classes[2], annotator="bo")  # relabelled
    undone = store.label(items[5], classes[1], annotator="ana")
    store.undo(undone.id, annotator="ana")  # back to unlabelled
    current = store.current_labels()
    assert current.to_dict("list") == {"item_id": [items[1], items[3]], "class_id": [classes[2], classes[0]]}
    table = store.item_table()
    labelled_rows = table.loc[table["class_id"].notna(), ["item_id", "class_id"]].astype("int64")
    assert current.equals(labelled_rows.reset_index(drop=True))


def test_undo_refuses_when_someone_labelled_the_item_since(labelled) -> None:
    store, items, classes = labelled
    mine = store.label(items[0], classes[0], annotator="ana")
    store.label(items[0], classes[1], annotator="bo")
    with pytest.raises(UndoConflictError):
        store.undo(mine.id, annotator="ana")
    current = store.current_label(items[0])
    assert current is not None and current.class_id == classes[1]


def test_undo_allowed_after_the_later_label_was_itself_undone(labelled) -> None:
    store, items, classes = labelled
    mine = store.label(items[0], classes[0], annotator="ana")
    theirs = store.label(items[0], classes[1], annotator="bo")
    store.undo(theirs.id, annotator="bo")
    store.undo(mine.id, annotator="ana")
    assert store.current_label(items[0]) is None


def test_undo_twice_is_refused(labelled) -> None:
    store, items, classes = labelled
    mine = store.label(items[0], classes[0], annotator="ana")
    store.undo(mine.id, annotator="ana")
    with pytest.raises(UndoConflictError, match="already undone"):
        store.undo(mine.id, annotator="ana")


def test_undo_many_is_all_or_nothing(labelled) -> None:
    store, items, classes = labelled
    a = store.label(items[0], classes[0], annotator="ana")
    b = store.label(items[1], classes[0], annotator="ana")
    store.label(items[1], classes[2], annotator="bo")
    with pytest.raises(UndoConflictError):
        store.undo_many([a.id, b.id], annotator="ana")
    current = store.current_label(items[0])
    assert current is not None and current.class_id == classes[0]


def test_pseudo_accepted_labels_are_counted_apart(labelled) -> None:
    store, items, classes = labelled
    store.label_many(items[:3], classes[0], annotator="ana")
    store.label_many(items[3:5], classes[0], annotator="review", source="pseudo_accepted")
    counts = store.label_counts().set_index(["class_name", "source"])["count"].to_dict()
    assert counts == {("salmon", "human"): 3, ("salmon", "pseudo_accepted"): 2}


def test_rebuild_current_labels_agrees_with_the_maintained_projection(labelled) -> None:
    store, items, classes = labelled
    for i, item in enumerate(items):
        store.label(item, classes[i % 3], annotator="ana")
    last = store.label(items[0], classes[2], annotator="bo")
    store.undo(last.id, annotator="bo")
    store.label(items[1], None, annotator="ana")
    before = store.item_table()[["item_id", "class_id", "source"]]
    assert store.rebuild_current_labels() == 0
    with store.write() as s:  # corrupt the projection; the rebuild must notice and repair it
        s.connection().exec_driver_sql("DELETE FROM current_labels WHERE item_id = ?", (items[2],))
    assert store.rebuild_current_labels() > 0
    assert store.item_table()[["item_id", "class_id", "source"]].equals(before)


def test_bad_label_requests_raise_clear_errors(labelled) -> None:
    store, items, classes = labelled
    with pytest.raises(NotFoundError, match="no item"):
        store.label(999_999, classes[0], annotator="ana")
    with pytest.raises(NotFoundError, match="no class"):
        store.label(items[0], 999, annotator="ana")
    with pytest.raises(StoreError, match="annotator"):
        store.label(items[0], classes[0], annotator="  ")
    with pytest.raises(StoreError, match="source"):
        store.label(items[0], classes[0], annotator="ana", source="guess")
    with pytest.raises(NotFoundError, match=r"unknown class 'haddock' \(classes: salmon, trout, cod\)"):
        store.class_by_name("haddock")
    assert store.history(items[0]) == []


def test_class_shortcuts_skip_streamlits_reserved_keys(store: Store) -> None:
    infos = store.ensure_classes([f"c{i}" for i in range(13)])
    keys = [c.shortcut for c in infos]
    assert keys[:10] == list("1234567890")
    assert keys[10:] == ["a", "b", "d"]  # "c" belongs to Streamlit
    with pytest.raises(StoreError, match="shortcut"):
        store.set_shortcut(infos[0].id, "r")
    with pytest.raises(StoreError, match="already used"):
        store.set_shortcut(infos[0].id, "2")


def test_class_names_are_unique_ignoring_case(store: Store) -> None:
    store.add_class("Salmon")
    with pytest.raises(StoreError, match="already exists"):
        store.add_class("salmon")
    other = store.add_class("trout")
    with pytest.raises(StoreError, match="already exists"):
        store.rename_class(other.id, "SALMON")


def test_reorder_classes(store: Store) -> None:
    a, b, c = store.ensure_classes(["a", "b", "c"])
    store.reorder_classes([c.id, a.id, b.id])
    assert [x.name for x in store.classes()] == ["c", "a", "b"]
    with pytest.raises(StoreError, match="every class"):
        store.reorder_classes([a.id, b.id])


def test_a_class_with_labels_is_not_silently_deleted(labelled) -> None:
    store, items, classes = labelled
    store.label(items[0], classes[0], annotator="ana")
    with pytest.raises(ClassInUseError, match="1 item"):
        store.delete_class(classes[0])
    assert store.delete_class(classes[0], move_labels_to=classes[1]) == 1
    current = store.current_label(items[0])
    assert current is not None and current.class_id == classes[1]
    assert [c.name for c in store.classes()] == ["trout", "cod"]
    # The history still names the deleted class, and its name is free again.
    assert store.history(items[0])[0].class_id == classes[0]
    store.add_class("salmon")


def test_undo_will_not_restore_a_deleted_class(labelled) -> None:
    store, items, classes = labelled
    store.label(items[0], classes[0], annotator="ana")
    store.delete_class(classes[0], move_labels_to=classes[1])
    move = store.history(items[0])[-1]
    with pytest.raises(UndoConflictError, match="deleted"):
        store.undo(move.id, annotator="ana")


def test_unused_class_is_removed_outright(store: Store) -> None:
    info = store.add_class("tmp")
    assert store.delete_class(info.id) == 0
    assert store.classes() == []


def test_adding_items_skips_known_digests(store: Store) -> None:
    first = add_items(store, 5)
    again = add_items(store, 7)
    assert again[:5] == first
    assert store.count_items() == 7


def test_queue_walks_unlabelled_items_from_the_start_key(labelled) -> None:
    store, items, classes = labelled
    store.label(items[0], classes[0], annotator="ana")
    walk = store.queue_ids(start_key=0, limit=100)
    assert sorted(walk) == sorted(items[1:])
    # A different start key gives a rotation of the same ring.
    rotated = store.queue_ids(start_key=2**61, limit=100)
    assert sorted(rotated) == sorted(walk)
    i = walk.index(rotated[0])
    assert rotated == walk[i:] + walk[:i]


def test_queue_filters_and_priority(labelled) -> None:
    store, items, classes = labelled
    store.label_many(items[:2], classes[0], annotator="ana")
    store.label(items[2], classes[1], annotator="m", source="pseudo_accepted")
    assert sorted(store.queue_ids(start_key=0, limit=50, where=QueueFilter(labeled=True))) == items[:3]
    assert sorted(store.queue_ids(start_key=0, limit=50, where=QueueFilter(class_id=classes[0]))) == items[:2]
    assert store.queue_ids(start_key=0, limit=50, where=QueueFilter(source="pseudo_accepted")) == [items[2]]
    assert len(store.queue_ids(start_key=0, limit=50, where=QueueFilter(labeled=None))) == 10
    store.set_priority([items[7]], 1)
    assert store.queue_ids(start_key=2**62, limit=1) == [items[7]]
    store.set_status([items[7]], "excluded")
    assert items[7] not in store.queue_ids(start_key=0, limit=50)


def _label_worker(args: tuple[str, list[int], int, str]) -> list[int]:
    root, item_ids, class_id, annotator = args
    store = Store.open(Workspace.resolve(root))
    try:
        return [store.label(i, class_id, annotator=annotator).id for i in item_ids]
    finally:
        store.close()


def test_concurrent_processes_lose_no_label(store: Store) -> None:
    """Three processes x 500 labels on one SQLite file, two of them on the same items."""
    classes = [c.id for c in store.ensure_classes(["a", "b", "c"])]
    items = add_items(store, 1000)
    jobs = [
        (str(store.workspace.root), items[:500], classes[0], "p0"),
        (str(store.workspace.root), items[:500][::-1], classes[1], "p1"),
        (str(store.workspace.root), items[500:], classes[2], "p2"),
    ]
    with mp.get_context("spawn").Pool(3) as pool:
        results = pool.map(_label_worker, jobs)
    written = {a for ids in results for a in ids}
    history = store.annotations()
    assert len(written) == 1500 and set(history["id"]) == written
    assert history.groupby("annotator").size().to_dict() == {"p0": 500, "p1": 500, "p2": 500}
    # The projection holds the newest history row of every item.
    newest = history.sort_values("id").groupby("item_id").tail(1).set_index("item_id")["class_id"]
    table = store.item_table().set_index("item_id")["class_id"]
    assert (table.loc[newest.index].astype(int) == newest.astype(int)).all()
    assert store.rebuild_current_labels() == 0


def test_postgresql_backend_runs_the_same_store(pg_url: str, tmp_path) -> None:
    store = Store.open(Workspace.resolve(tmp_path / "pg", db_url=pg_url))
    try:
        with store.write() as s:  # start from an empty database whatever ran before
            for table in (
                "current_labels",
                "predictions",
                "annotations",
                "items",
                "model_versions",
                "classes",
            ):
                s.connection().exec_driver_sql(f"TRUNCATE {table} RESTART IDENTITY CASCADE")
        classes = [c.id for c in store.ensure_classes(["a", "b"])]
        items = add_items(store, 20)
        first = store.label(items[0], classes[0], annotator="ana")
        second = store.label(items[0], classes[1], annotator="bo")
        store.undo(second.id, annotator="bo")
        store.undo(first.id, annotator="ana")
        assert store.current_label(items[0]) is None
        store.label_many(items[1:5], classes[1], annotator="ana")
        assert store.label_counts()["count"].sum() == 4
        assert sorted(store.queue_ids(start_key=0, limit=100)) == sorted(set(items) - set(items[1:5]))
        assert store.rebuild_current_labels() == 0
        with store._reader.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        store.close()


def test_only_unlabelled_skips_items_labelled_when_the_transaction_runs(labelled) -> None:
    store, items, classes = labelled
    human = store.label(items[0], classes[0], annotator="ana")
    saved = store.label_many(
        items[:3], classes[1], annotator="model", source="pseudo_accepted", only_unlabelled=True
    )
    assert sorted(a.item_id for a in saved) == sorted(items[1:3])
    assert store.current_label(items[0]).annotation_id == human.id
    assert store.label_many([items[0]], classes[2], annotator="x", only_unlabelled=True) == []
    # without the flag a relabel is still a relabel
    assert store.label_many([items[0]], classes[2], annotator="ana")[0].class_id == classes[2]


def test_review_accept_racing_a_human_label_never_overwrites_it(tmp_path) -> None:
    from benchmarks.bench_accept_race import race

    result = race(tmp_path / "race", trials=20)
    assert result["human_label_survived"] == 20
    assert result["pseudo_written_after_human"] == 0
    assert 0 < result["accept_wrote"] < 20  # both orders of commit occurred
