"""The ``labelkit`` command: workspaces, import, labels and the app, from a terminal or a script."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from labelkit import __version__

APP = Path(__file__).resolve().parent.parent / "app.py"
# Benchmarks are scripts of the source repository, not part of the installed package.
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labelkit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"labelkit {__version__}")
    # The workspace options are accepted before the command and after it (`labelkit serve -w fish`):
    # after it, SUPPRESS leaves the value given before it (or the default) unless one is given.
    where = argparse.ArgumentParser(add_help=False)
    for target, default in ((parser, None), (where, argparse.SUPPRESS)):
        target.add_argument(
            "--workspace",
            "-w",
            default=default,
            help="workspace folder (default: $LABELKIT_WORKSPACE or data/)",
        )
        target.add_argument(
            "--db-url",
            default=default,
            help="database URL (default: $LABELKIT_DB_URL or SQLite in the workspace)",
        )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[where], **kwargs)

    p = command("init", help="create a workspace, optionally with classes")
    p.add_argument("--classes", help="comma-separated class names, e.g. salmon,trout")
    _setting_flags(p)

    p = command("config", help="show or change the workspace settings (backbone, weights, downloads …)")
    _setting_flags(p)

    p = command("import", help="import a folder, a .zip or an image file")
    p.add_argument("source")
    p.add_argument(
        "--labels",
        choices=["none", "folders", "csv"],
        default="none",
        help="folders: sub-folder = class (ImageFolder); csv: use --labels-csv",
    )
    p.add_argument("--labels-csv", help="CSV with columns filename,label (implies --labels csv)")
    p.add_argument(
        "--new-classes",
        choices=["create", "reject"],
        default="create",
        help="what to do with class names the workspace does not have yet",
    )

    p = command("demo", help="build a demo workspace (offline)")
    p.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    p.add_argument("--data-root", help="folder holding MNIST/raw/*.gz (torchvision layout)")
    p.add_argument("--limit", type=int, help="import only the first N images")
    p.add_argument("--download", action="store_true", help="let torchvision download MNIST into --data-root")

    command("status", help="items, and labels per class and source")

    p = command("versions", help="model versions: method, backbone, steps, estimated accuracy, device")
    p.add_argument("--json", action="store_true", help="print one JSON object per version instead")

    p = command("label", help="label one item (for scripts)")
    p.add_argument("item", type=int, help="item id")
    p.add_argument("cls", metavar="CLASS", help="class name, or '-' to remove the label")
    p.add_argument("--annotator", default=os.environ.get("USER") or "cli")

    p = command("export-labels", help="write the current labels as CSV or JSON")
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--out", help="output file (default: labels.FORMAT in the workspace's reports/)")

    p = command(
        "export", help="write a model version's bundle: TorchScript, ONNX, model card, labels, predictions"
    )
    p.add_argument("--version", type=int, dest="model_version", help="model version id (default: the latest)")
    p.add_argument("--out", required=True, help="bundle folder to create (with --zip: the .zip file)")
    p.add_argument("--zip", action="store_true", help="write one .zip instead of a folder")
    p.add_argument(
        "--imagefolder", action="store_true", help="also copy the labelled images as imagefolder/CLASS/"
    )

    p = command("predict", help="predict image files with an exported bundle (no workspace needed)")
    p.add_argument("--model", required=True, help="bundle folder or .zip written by `labelkit export`")
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_FOLDER", help="image files and/or folders")
    p.add_argument("--top-k", type=int, default=1, help="also list the next K-1 classes and probabilities")
    p.add_argument("--out", help="CSV file to write (default: print the CSV)")
    p.add_argument("--backend", choices=["torchscript", "onnx"], default="torchscript")
    p.add_argument("--device", default="cpu", help="cpu or cuda")

    p = command("worker", help="run the background trainer for the workspace")
    p.add_argument("--once", action="store_true", help="run one training round and exit")
    p.add_argument(
        "--auto-min-new-labels",
        type=int,
        default=20,
        help="start a round by itself after this many new labels (0: only when asked)",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=30.0,
        help="seconds without a heartbeat after which another worker's lease is taken over",
    )
    p.add_argument("--poll", type=float, default=2.0, help="seconds between looks at the job queue")

    p = command(
        "bench",
        help="run a benchmark of the source repository (al, ssl, store, worker, …)",
        description="Run benchmarks/bench_NAME.py with ARGS; `labelkit bench NAME --help` shows its flags.",
    )
    p.add_argument("name", metavar="NAME", help="bench_NAME.py in the repository's benchmarks/ folder")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="passed to the benchmark unchanged")

    p = command("serve", help="start the app")
    p.add_argument("--port", type=int, default=None)
    p.add_argument(
        "--demo-if-empty", action="store_true", help="build the digits demo if the workspace has no items"
    )
    return parser


@contextlib.contextmanager
def _progress(desc: str) -> Iterator:
    from tqdm import tqdm

    with tqdm(desc=desc, unit="img", disable=None, file=sys.stderr) as bar:

        def update(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        yield update


def _open(args: argparse.Namespace):
    from labelkit.store import Store
    from labelkit.workspace import Workspace

    return Store.open(Workspace.resolve(args.workspace, db_url=args.db_url))


def _setting_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", help="auto (default), cnn_small, pixels, or any timm model name")
    p.add_argument("--weights", help="a pretrained weights file for the backbone ('-' to forget it)")
    p.add_argument(
        "--allow-download",
        choices=["on", "off"],
        help="may the worker download pretrained weights (off by default; never needed for the default)",
    )
    p.add_argument("--hflip", choices=["auto", "on", "off"], help="mirror images in training")
    p.add_argument("--fast-method", help="the fast model's method (labelkit.fast.FAST_METHODS)")


def _apply_settings(store, args: argparse.Namespace) -> bool:
    changes = {
        "backbone": args.backbone,
        "weights_path": None if args.weights == "-" else args.weights,
        "allow_download": None if args.allow_download is None else args.allow_download == "on",
        "hflip": args.hflip,
        "fast_method": args.fast_method,
    }
    given = {
        k: v for k, v in changes.items() if v is not None or (k == "weights_path" and args.weights == "-")
    }
    if given.get("weights_path"):
        given["weights_path"] = str(Path(given["weights_path"]).expanduser().resolve())
    for key, value in given.items():
        store.settings.set(key, value)
    return bool(given)


def _cmd_config(args: argparse.Namespace) -> int:
    store = _open(args)
    _apply_settings(store, args)
    for key, value in store.settings.all().items():
        print(f"{key} = {value}")
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    store = _open(args)
    _apply_settings(store, args)
    if args.classes:
        store.ensure_classes([c for c in (x.strip() for x in args.classes.split(",")) if c])
    names = ", ".join(c.name for c in store.classes()) or "none yet"
    print(f"workspace {store.workspace.root} ready; classes: {names}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from labelkit.importer import import_path

    labels = "csv" if args.labels_csv else args.labels
    store = _open(args)
    with _progress("import") as update:
        report = import_path(
            store,
            args.source,
            labels=labels,
            labels_csv=args.labels_csv,
            new_classes=args.new_classes,
            progress=update,
        )
    _print_report(report)
    return 0


def _print_report(report) -> None:
    print(report.summary())
    rejected = [o for o in report.outcomes if o.status == "rejected"]
    for o in rejected[:20]:
        print(f"  rejected {o.source}: {o.reason}")
    if len(rejected) > 20:
        print(f"  … and {len(rejected) - 20} more")
    print(f"report: {report.csv_path}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from labelkit.demo import build_demo

    store = _open(args)
    with _progress(f"demo {args.dataset}") as update:
        report = build_demo(
            store,
            dataset=args.dataset,
            data_root=args.data_root,
            limit=args.limit,
            download=args.download,
            progress=update,
        )
    _print_report(report)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    store = _open(args)
    counts = store.label_counts()
    total = store.count_items()
    print(f"workspace: {store.workspace.root}")
    print(f"database:  {store.dialect}")
    print(f"items:     {total} active, {int(counts['count'].sum()) if len(counts) else 0} labelled")
    by_class = counts.pivot_table(
        index="class_name", columns="source", values="count", aggfunc="sum", fill_value=0
    )
    for c in store.classes():
        row = by_class.loc[c.name] if c.name in by_class.index else None
        parts = [f"{src} {int(n)}" for src, n in (row.items() if row is not None else []) if n]
        print(f"  [{c.shortcut or ' '}] {c.name:<20} {', '.join(parts) or 'no labels'}")
    return 0


def _cmd_versions(args: argparse.Namespace) -> int:
    import json

    from labelkit.estimate import from_metrics

    rows = []
    for v in _open(args).versions.all():
        e = from_metrics(v.metrics)
        rows.append(
            {
                "id": v.id,
                "created": v.created_at.strftime("%Y-%m-%d %H:%M"),
                "status": v.status,
                "method": v.method,
                "backbone": v.backbone,
                "steps": v.config.get("steps"),
                "estimate": None if e is None else round(e.accuracy, 4),
                "ci95": None if e is None else [round(e.low, 4), round(e.high, 4)],
                "n": None if e is None else e.n,
                "estimate_method": None if e is None else e.method,
                "device": v.device,
            }
        )
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print("no model versions yet: label a few images per class and run `labelkit worker --once`")
        return 0
    header = (
        "id",
        "created",
        "status",
        "method",
        "backbone",
        "steps",
        "estimate (95 % interval, n)",
        "device",
    )
    table = [header] + [
        (
            str(r["id"]),
            r["created"],
            r["status"],
            r["method"],
            r["backbone"],
            str(r["steps"] if r["steps"] is not None else "–"),
            "–"
            if r["estimate"] is None
            else f"{r['estimate']:.1%} ({r['ci95'][0]:.0%}–{r['ci95'][1]:.0%}, n={r['n']}, {r['estimate_method']})",
            r["device"] or "–",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    store = _open(args)
    class_id = None if args.cls == "-" else store.class_by_name(args.cls).id
    row = store.label(args.item, class_id, annotator=args.annotator)
    print(f"item {args.item}: {args.cls if class_id else 'unlabelled'} (annotation {row.id})")
    return 0


def _cmd_export_labels(args: argparse.Namespace) -> int:
    from labelkit.export import write_labels

    store = _open(args)
    out = Path(args.out) if args.out else store.workspace.reports / f"labels.{args.format}"
    n = write_labels(store, out, fmt=args.format)
    print(f"{n} labels written to {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from labelkit.export import export_bundle, export_zip

    store = _open(args)
    out = Path(args.out)
    if args.zip and out.suffix.lower() != ".zip":
        out = out.with_name(f"{out.name}.zip")
    write = export_zip if args.zip else export_bundle
    with _progress("export") as update:
        path = write(
            store,
            args.model_version,
            out,
            imagefolder=args.imagefolder,
            progress=lambda done, total, _what: update(done, total),
        )
    size = (
        path.stat().st_size
        if path.is_file()
        else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    )
    print(f"bundle written to {path} ({size / 2**20:.1f} MiB)")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from labelkit.predict import load_bundle, predict_files

    bundle = load_bundle(args.model)
    table = predict_files(bundle, args.inputs, top_k=args.top_k, backend=args.backend, device=args.device)
    failed = int((table["error"] != "").sum())
    from labelkit.tables import to_csv

    to_csv(table, args.out or sys.stdout)  # file names in it come from anywhere: formula cells defused
    print(f"{len(table) - failed} file(s) predicted, {failed} could not be read", file=sys.stderr)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from labelkit import worker
    from labelkit.workspace import Workspace

    settings = worker.WorkerSettings(
        stale_after=args.stale_after, poll=args.poll, auto_min_new_labels=args.auto_min_new_labels
    )
    return worker.main(
        Workspace.resolve(args.workspace, db_url=args.db_url), once=args.once, settings=settings
    )


def _benchmarks() -> dict[str, Path]:
    """The runnable benchmarks by name: ``benchmarks/bench_NAME.py`` of the source checkout."""
    if not BENCHMARKS.is_dir():
        raise CliError(
            f"{BENCHMARKS} not found: benchmarks come with the source repository "
            "(clone it and run `pip install -e .` there)"
        )
    return {path.stem.removeprefix("bench_"): path for path in sorted(BENCHMARKS.glob("bench_*.py"))}


def _cmd_bench(args: argparse.Namespace) -> int:
    scripts = _benchmarks()
    if args.name not in scripts:
        raise CliError(f"unknown benchmark {args.name!r}; valid benchmarks: {', '.join(scripts) or 'none'}")
    path = scripts[args.name]
    spec = importlib.util.spec_from_file_location(f"labelkit_bench_{args.name}", path)
    if spec is None or spec.loader is None:
        raise CliError(f"{path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Benchmarks import helpers of their checkout (``tests.served``, ``benchmarks.bench_ssl``):
    # its root must be importable wherever the command is run from.
    root = str(BENCHMARKS.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    spec.loader.exec_module(module)
    # argparse names the program after sys.argv[0]: the script's usage and errors then show the
    # command that was typed instead of `labelkit` or the test runner.
    saved = sys.argv
    sys.argv = [f"labelkit bench {args.name}", *args.args]
    try:
        return int(module.main(list(args.args)))
    finally:
        sys.argv = saved


def _cmd_serve(args: argparse.Namespace) -> int:
    store = _open(args)
    if args.demo_if_empty and store.count_items(status=None) == 0:
        print("empty workspace: building the digits demo (1,797 images)…", file=sys.stderr)
        _cmd_demo(
            argparse.Namespace(
                **{**vars(args), "dataset": "digits", "data_root": None, "limit": None, "download": False}
            )
        )
    if not APP.exists():
        raise CliError(f"{APP} not found: serve runs from a source checkout (pip install -e .)")
    env = {**os.environ, "LABELKIT_WORKSPACE": str(store.workspace.root)}
    if args.db_url:
        env["LABELKIT_DB_URL"] = args.db_url
    command = [sys.executable, "-m", "streamlit", "run", str(APP)]
    if args.port:
        command += ["--server.port", str(args.port)]
    return subprocess.call(command, env=env, cwd=APP.parent)


COMMANDS = {
    "init": _cmd_init,
    "import": _cmd_import,
    "config": _cmd_config,
    "demo": _cmd_demo,
    "status": _cmd_status,
    "versions": _cmd_versions,
    "label": _cmd_label,
    "export-labels": _cmd_export_labels,
    "export": _cmd_export,
    "predict": _cmd_predict,
    "worker": _cmd_worker,
    "bench": _cmd_bench,
    "serve": _cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    from sqlalchemy.exc import DBAPIError

    from labelkit.importer import SourceError
    from labelkit.store import StoreError

    args = _parser().parse_args(argv)

    def fail(message: object) -> int:
        print(f"labelkit {args.command}: error: {message}", file=sys.stderr)
        return 2

    try:
        return COMMANDS[args.command](args)
    except (CliError, SourceError, StoreError, ValueError, FileNotFoundError) as exc:
        return fail(exc)
    except DBAPIError as exc:  # the database went away or refused a write after it opened
        detail = str(exc.orig).strip().splitlines()
        return fail(f"database: {detail[0] if detail else type(exc.orig).__name__}")
    except OSError as exc:  # a read-only or full workspace, mid-command
        return fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    except KeyboardInterrupt:
        print("interrupted; everything imported or labelled so far is saved", file=sys.stderr)
        return 130
