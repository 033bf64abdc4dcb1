"""The ``labelkit`` command end to end, in-process: what a script or a terminal user sees."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from labelkit.cli import main
from labelkit.store import Store
from labelkit.workspace import Workspace


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return tmp_path / "ws"


def _store(ws: Path) -> Store:
    return Store.open(Workspace.resolve(ws))


def test_init_import_label_status_and_export(ws: Path, tmp_path: Path, capsys) -> None:
    photos = tmp_path / "photos"
    (photos / "salmon").mkdir(parents=True)
    (photos / "salmon" / "a.png").write_bytes(_png(1))
    (photos / "b.png").write_bytes(_png(2))
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")

    assert main(["-w", str(ws), "init", "--classes", "salmon, trout"]) == 0
    assert main(["-w", str(ws), "import", str(photos), "--labels", "folders"]) == 0
    out = capsys.readouterr().out
    assert "2 imported, 0 duplicates skipped, 1 rejected, 1 labelled from the data" in out
    assert "rejected broken.png: not an image" in out

    store = _store(ws)
    unlabelled = store.queue_ids(start_key=0, limit=10)
    assert len(unlabelled) == 1
    assert main(["-w", str(ws), "label", str(unlabelled[0]), "trout", "--annotator", "ola"]) == 0
    assert store.current_label(unlabelled[0]).annotator == "ola"

    capsys.readouterr()
    assert main(["-w", str(ws), "status"]) == 0
    status = capsys.readouterr().out
    assert "2 active, 2 labelled" in status
    assert "salmon" in status and "imported 1" in status and "human 1" in status

    out_csv = tmp_path / "labels.csv"
    assert main(["-w", str(ws), "export-labels", "--format", "csv", "--out", str(out_csv)]) == 0
    table = pd.read_csv(out_csv)
    assert sorted(zip(table["class"], table["source"], strict=True)) == [
        ("salmon", "imported"),
        ("trout", "human"),
    ]
    out_json = tmp_path / "labels.json"
    assert main(["-w", str(ws), "export-labels", "--format", "json", "--out", str(out_json)]) == 0
    rows = json.loads(out_json.read_text())
    assert {r["annotator"] for r in rows} == {"import", "ola"}


def test_label_with_unknown_class_exits_2_and_names_the_classes(ws: Path, capsys) -> None:
    main(["-w", str(ws), "init", "--classes", "salmon"])
    assert main(["-w", str(ws), "label", "1", "shark"]) == 2
    err = capsys.readouterr().err
    assert "unknown class 'shark'" in err and "salmon" in err


def test_import_of_missing_folder_exits_2(ws: Path, tmp_path: Path, capsys) -> None:
    assert main(["-w", str(ws), "import", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_arguments_exit_2(ws: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["-w", str(ws), "import", "x", "--labels", "subfolders"])
    assert exc.value.code == 2


def test_digits_demo_has_ten_classes_and_no_labels(ws: Path) -> None:
    assert main(["-w", str(ws), "demo", "--limit", "40"]) == 0
    store = _store(ws)
    assert [c.name for c in store.classes()] == [str(d) for d in range(10)]
    assert store.count_items() == 40
    assert store.label_counts().empty
    item = store.item(store.queue_ids(start_key=0, limit=1)[0])
    assert (item.width, item.height, item.format) == (32, 32, "PNG")
    # every name leads back to its digit: what the simulated experts of tests and benchmarks use
    from labelkit.demo import source_index

    assert sorted(source_index(name) for name in store.item_table()["original_name"]) == list(range(40))


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = (2051 if array.ndim == 3 else 2049).to_bytes(4, "big")
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(magic + dims + array.astype(np.uint8).tobytes())


def test_mnist_demo_reads_torchvision_layout_from_disk(ws: Path, tmp_path: Path) -> None:
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_idx(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (7, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte.gz", np.arange(7) % 10)
    assert (
        main(
            [
                "-w",
                str(ws),
                "demo",
                "--dataset",
                "mnist",
                "--data-root",
                str(tmp_path / "root"),
                "--limit",
                "5",
            ]
        )
        == 0
    )
    assert _store(ws).count_items() == 5


def test_mnist_demo_without_data_explains_where_it_looks(ws: Path, tmp_path: Path, capsys) -> None:
    assert main(["-w", str(ws), "demo", "--dataset", "mnist", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "MNIST/raw" in err and "--download" in err


def test_bench_with_unknown_name_exits_2_and_lists_the_benchmarks(capsys) -> None:
    assert main(["bench", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'nope'" in err
    for name in ("al", "ssl", "store", "worker"):
        assert name in err


def test_bench_outside_a_source_checkout_says_where_benchmarks_come_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr("labelkit.cli.BENCHMARKS", tmp_path / "no-benchmarks")
    assert main(["bench", "al"]) == 2
    assert "benchmarks come with the source repository" in capsys.readouterr().err


def test_bench_help_is_the_benchmark_s_own_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "al", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: labelkit bench al")
    assert "--strategy" in out and "--budget" in out


def test_bench_runs_benchmarks_that_import_the_checkout_s_test_helpers_from_any_folder(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    # A fresh process started elsewhere: nothing puts the repository root on sys.path but the command.
    done = subprocess.run(
        [sys.executable, "-m", "labelkit", "bench", "explore_page", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: labelkit bench explore_page")


def test_bench_store_runs_with_tiny_sizes_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "store.json"
    args = ["--items", "40", "--labels", "3", "--import-images", "4", "--json", str(out)]
    assert main(["bench", "store", *args]) == 0
    result = json.loads(out.read_text())
    assert result["items"] == 40
    assert result["labelling"]["save"]["n"] == 3
    assert result["import"]["images"] == 4


def test_the_readme_s_run_command_parses_and_workspace_options_go_before_or_after_the_command() -> None:
    import re
    import shlex

    from labelkit.cli import _parser

    # `make run` is the README's first command: its labelkit call must be one the CLI accepts.
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n\t(.+)$", makefile, flags=re.MULTILINE)
    assert recipe is not None
    words = shlex.split(recipe.group(1).replace("$(VENV)", ".venv").replace("$(WORKSPACE)", "data"))
    assert words[0].endswith("bin/labelkit")
    parsed = _parser().parse_args(words[1:])
    assert (parsed.command, parsed.workspace, parsed.demo_if_empty) == ("serve", "data", True)

    parser = _parser()
    assert parser.parse_args(["-w", "fish", "status"]).workspace == "fish"
    assert parser.parse_args(["status", "--workspace", "fish"]).workspace == "fish"
    assert parser.parse_args(["-w", "a", "status", "-w", "b"]).workspace == "b"
    assert parser.parse_args(["status"]).workspace is None


def test_import_with_a_secret_file_as_labels_csv_prints_none_of_it(ws: Path, tmp_path: Path, capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(_png(1))
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$very-secret:19000:0:99999:7:::\n")
    assert main(["-w", str(ws), "import", str(photos), "--labels-csv", str(shadow)]) == 2
    captured = capsys.readouterr()
    assert "error:" in captured.err and "filename,label" in captured.err
    assert "very-secret" not in captured.err + captured.out and "root:" not in captured.err + captured.out


def _cli(*args: str, cwd: Path = Path(__file__).parents[1]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labelkit", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("nonsense", "not a database URL"),
        ("foo://x/y", "unknown kind of database"),
        ("postgresql://u:hunter2@127.0.0.1:1/db", "is not installed"),  # psycopg 3, SQLAlchemy's default
        ("postgresql+psycopg2://u:hunter2@127.0.0.1:1/db", "Connection refused"),  # nobody listens on port 1
    ],
)
def test_a_bad_database_url_is_one_error_line_exit_2_and_no_folders(
    tmp_path: Path, url: str, says: str
) -> None:
    ws = tmp_path / "ws"
    done = _cli("-w", str(ws), "--db-url", url, "init", "--classes", "a,b")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labelkit init: error: ") and says in lines[0], done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr
    assert not ws.exists()  # nothing created before the database connected


def test_a_workspace_that_cannot_be_created_is_one_error_line(tmp_path: Path) -> None:
    # /sys refuses new folders even to root, which ignores file modes
    done = _cli("-w", "/sys/labelkit-test-ws", "status")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("labelkit status: error: cannot create the workspace"), done.stderr


def test_a_read_only_database_is_one_error_line_and_changes_nothing(ws: Path, tmp_path: Path) -> None:
    assert main(["-w", str(ws), "init", "--classes", "a,b"]) == 0
    read_only = f"sqlite:///file:{ws / 'labelkit.db'}?mode=ro&uri=true"
    done = _cli("-w", str(ws), "--db-url", read_only, "init", "--classes", "c")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "readonly database" in done.stderr
    assert [c.name for c in _store(ws).classes()] == ["a", "b"]


def test_versions_lists_method_steps_estimate_and_device(ws: Path, capsys) -> None:
    from labelkit.estimate import Estimate, to_metrics

    assert main(["--workspace", str(ws), "versions"]) == 0
    assert "no model versions yet" in capsys.readouterr().out
    store = _store(ws)
    # a version needs no items: empty predictions
    empty = pd.DataFrame(columns=["item_id", "class_id", "confidence", "margin", "entropy"])
    common = {"label_counts": {}, "classes": [], "path": "runs/x", "parent_id": None, "predictions": empty}
    store.versions.add(
        method="fixmatch",
        backbone="cnn_small",
        config={"steps": 300},
        metrics={"holdout_accuracy": 0.7, "holdout_ci95": [0.3968, 0.8922], "holdout_labels": 10},
        device="cpu",
        **common,
    )
    store.versions.add(
        method="supervised",
        backbone="efficientnet_lite0",
        config={"steps": 1200},
        metrics={"estimate": to_metrics(Estimate(0.825, 0.7, 0.91, 80, "cv_logreg"))},
        device="cuda (NVIDIA H200)",
        **common,
    )
    assert main(["--workspace", str(ws), "versions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["id", "created", "status"]
    assert "fixmatch" in lines[1] and "300" in lines[1] and "70.0% (40%–89%, n=10, holdout)" in lines[1]
    assert (
        "efficientnet_lite0" in lines[2]
        and "1200" in lines[2]
        and "82.5% (70%–91%, n=80, cv_logreg)" in lines[2]
    )
    assert "cuda (NVIDIA H200)" in lines[2]
    assert main(["--workspace", str(ws), "versions", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["id"], r["steps"], r["n"], r["device"]) for r in rows] == [
        (1, 300, 10, "cpu"),
        (2, 1200, 80, "cuda (NVIDIA H200)"),
    ]
    assert rows[0]["ci95"] == [0.3968, 0.8922] and rows[1]["estimate_method"] == "cv_logreg"
