"""The Explore page benchmark's workspace: items, labels, a ready version and its cached map."""

from __future__ import annotations

import numpy as np

from benchmarks.bench_explore_page import build_workspace, synthetic_version_data
from labelkit import explore
from labelkit.store import Store


def test_synthetic_probabilities_favour_each_items_class() -> None:
    truth, emb, probs, coords = synthetic_version_data(300, 4, seed=0)
    assert emb.shape == (300, 64) and probs.shape == (300, 4) and coords.shape == (300, 2)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (probs.argmax(1) == truth).mean() > 0.95
    # each class's blob sits on its own point of the circle of radius 10
    for k in range(4):
        centre = coords[truth == k].mean(0)
        np.testing.assert_allclose(centre, [10 * np.cos(np.pi * k / 2), 10 * np.sin(np.pi * k / 2)], atol=0.5)


def test_workspace_holds_the_items_labels_version_and_cached_map(tmp_path) -> None:
    workspace, version_id, _ = build_workspace(
        tmp_path / "ws", items=200, classes=3, labelled=30, real_map=False
    )
    store = Store.open(workspace)
    try:
        table = store.item_table()
        assert len(table) == 200 and table["class_id"].notna().sum() == 30
        version = store.versions.get(version_id)
        assert version.status == "ready"
        held = version.metrics["holdout_item_ids"]
        assert held and set(held) <= set(table.loc[table["class_id"].notna(), "item_id"])
        assert len(version.metrics["round_trip"]["matrix"]) == 3
        folder = workspace.path(version.path)
        assert (folder / explore.UMAP_FILE).exists() and (folder / explore.UMAP_IDS_FILE).exists()
        frame = explore.map_frame(store, version)
        assert len(frame) == 200 and frame["heldout"].sum() == len(held)
        # items point at their class's shared PNG, which exists
        assert all(workspace.path(p).exists() for p in table["thumb_path"].unique())
    finally:
        store.close()
