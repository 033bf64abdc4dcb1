"""Explore page render time in a real browser, on a workspace of ``--items`` items (issue 6: the map
visible in under 3 s once the projection is cached).

    python -m benchmarks.bench_explore_page --items 60000 --classes 10 --runs 3 --json bench-results/explore_page.json

Builds a temporary workspace of ``--items`` tiny PNG items (one shared PNG per class), labels
``--labelled`` of them, records a model version with synthetic class-clustered probabilities and
embeddings (held-out ids and round-trip statistics in its metrics, as the worker records them) and
caches its map: with ``--fake-map`` (the default) clustered 2-D coordinates are written to the files
``labelkit.explore`` caches UMAP in, with ``--real-map`` UMAP itself runs (minutes at 60,000 items).

Then it times, in-process, what the page's Python does before the map is sent (``map_frame``,
``map_figure`` and the figure's JSON size, ``map_image``), serves the app and opens ``/explore`` in
headless Chromium ``--runs`` times, each in a fresh page, measuring from ``page.goto``:
- title: the page's title is drawn (the frontend loaded and the script started);
- map: the map is visible: above ``explore.INTERACTIVE_ITEMS`` items the page opens it as an image
  (decoded), otherwise as the plotly chart (WebGL canvas laid out, every point plotted);
- heatmap: the class round-trip heatmap is drawn;
- idle: Streamlit reports the script run finished (``stApp``'s ``data-test-script-state``);
- interactive: the plotly map is drawn, from the click on the page's "Interactive map" toggle when
  the map opened as an image (otherwise the same as map).
The whole Explore script is also timed without a browser (AppTest), to split server from browser,
and the same map figure is timed in two floors: drawn by plotly.js alone in a static HTML page, and
in a Streamlit page holding only that chart (``benchmarks/map_only_app.py``).
The first run includes the server's first script run (imports, per-process caches); later runs are warm.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from labelkit import explore
from labelkit.store import NewItem, Store
from labelkit.workspace import ENV_WORKSPACE, Workspace
from tests.served import chromium, served_browser
from tests.uitools import add_model_version, png_bytes

REPO = Path(__file__).resolve().parents[1]
CHUNK = 5_000  # items per add_items transaction
EMBEDDING_DIM = 64
HOLDOUT_FRACTION = 0.2  # of the labelled items, the worker's default (WorkerSettings.holdout_fraction)
TIMEOUT_MS = 300_000

# In the page: plotly has computed every point of the first figure (``_fullData``, filled while it
# plots) and the figure's WebGL canvas is laid out with a size.
MAP_DRAWN_JS = """(expected) => {
  const gd = document.querySelector('.js-plotly-plot');
  if (!gd || !gd._fullData || !gd._fullLayout || gd._transitioning) return false;
  const points = gd._fullData.reduce((n, t) => n + (t._length || 0), 0);
  const canvas = gd.querySelector('.gl-container canvas');
  return points === expected && !!canvas && canvas.width > 0 && canvas.getBoundingClientRect().height > 0;
}"""
HEATMAP_DRAWN_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].some(
  (plot) => !!plot.querySelector('.heatmaplayer .hm image'))"""
# The map as an image (workspaces above explore.INTERACTIVE_ITEMS), decoded.
MAP_IMAGE_JS = """(alt) => {
  const img = document.querySelector(`img[alt="${alt}"]`);
  return !!img && img.complete && img.naturalWidth > 0;
}"""
IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.getAttribute('data-test-script-state') === 'notRunning';
}"""


def synthetic_version_data(
    n: int, classes: int, *, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per item: its true class (n,), unit embeddings (n, EMBEDDING_DIM) clustered by class, class
    probabilities (n, classes) as a softmax over the cosine to each class centre, and 2-D map
    coordinates (n, 2): one Gaussian blob per class on a circle."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, EMBEDDING_DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    emb = centres[truth] + rng.normal(scale=0.12, size=(n, EMBEDDING_DIM))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    logits = 8.0 * emb @ centres.T
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    angle = 2 * np.pi * truth / classes
    coords = np.column_stack([np.cos(angle), np.sin(angle)]) * 10 + rng.normal(scale=1.2, size=(n, 2))
    return truth, emb.astype(np.float32), probs.astype(np.float32), coords.astype(np.float32)


def build_workspace(
    root: Path, *, items: int, classes: int, labelled: int, real_map: bool, seed: int = 0
) -> tuple[Workspace, int, dict[str, float]]:
    """The workspace, its one model version's id and the seconds each build step took."""
    from labelkit.worker import round_trip

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    workspace = Workspace.resolve(root).ensure()
    store = Store.open(workspace)
    try:
        names = [f"class{k}" for k in range(classes)]
        class_ids = [c.id for c in store.ensure_classes(names)]
        truth, emb, probs, coords = synthetic_version_data(items, classes, seed=seed)
        # Items share one PNG per class: the page reads files only for a selection's thumbnails.
        for k in range(classes):
            workspace.path(f"images/class{k}.png").write_bytes(png_bytes(k))
        item_ids: list[int] = []
        for start in range(0, items, CHUNK):
            new = [
                NewItem(
                    f"{i:064x}",
                    f"images/class{truth[i]}.png",
                    f"images/class{truth[i]}.png",
                    f"item{i}.png",
                    "bench",
                    16,
                    16,
                    "PNG",
                    "L",
                )
                for i in range(start, min(start + CHUNK, items))
            ]
            ids = store.add_items(new)
            item_ids += [ids[item.sha256] for item in new]
        seconds["add_items"] = time.perf_counter() - started

        step = time.perf_counter()
        rng = np.random.default_rng(seed + 1)
        rows = np.sort(rng.choice(items, min(labelled, items), replace=False))
        for k in range(classes):
            members = [item_ids[r] for r in rows if truth[r] == k]
            if members:
                store.label_many(members, class_ids[k], annotator="bench")
        seconds["label"] = time.perf_counter() - step

        step = time.perf_counter()
        held = rows[rng.random(len(rows)) < HOLDOUT_FRACTION]
        correct = probs[held].argmax(1) == truth[held]
        unlabelled = np.setdiff1d(np.arange(items), rows)
        metrics: dict[str, Any] = {
            "holdout_item_ids": [item_ids[r] for r in held],
            "holdout_accuracy": float(correct.mean()) if len(held) else None,
            "round_trip": round_trip(emb[rows], truth[rows], emb[unlabelled], classes, seed=seed),
        }
        version_id = add_model_version(store, item_ids, probs, metrics=metrics)
        folder = workspace.path(store.versions.get(version_id).path)
        # add_model_version stores the unit-length probabilities as embeddings; a model's are wider.
        np.save(folder / "embeddings.npy", emb)
        seconds["version"] = time.perf_counter() - step

        step = time.perf_counter()
        if real_map:
            explore.projection(store, store.versions.get(version_id))
        else:
            # the files explore.projection caches, ids first (a reader that finds the map finds its ids)
            np.save(folder / explore.UMAP_IDS_FILE, np.asarray(item_ids, dtype=np.int64))
            np.save(folder / explore.UMAP_FILE, coords)
        seconds["map"] = time.perf_counter() - step
    finally:
        store.close()
    return workspace, version_id, seconds


def python_side(workspace: Workspace, version_id: int) -> tuple[dict[str, Any], str]:
    """Seconds the page's Python spends before ``st.plotly_chart`` sends the map and the JSON size;
    and the map's figure as JSON."""
    store = Store.open(workspace)
    try:
        version = store.versions.get(version_id)
        out: dict[str, Any] = {}
        started = time.perf_counter()
        frame = explore.map_frame(store, version)
        out["map_frame_s"] = time.perf_counter() - started
        names = explore.class_names(store, version)
        order = [names[int(c["id"])] for c in version.classes]
        started = time.perf_counter()
        fig, _ = explore.map_figure(frame, next(iter(explore.COLOR_BY)), order)
        out["map_figure_s"] = time.perf_counter() - started
        started = time.perf_counter()
        text = fig.to_json()
        out["to_json_s"] = time.perf_counter() - started
        out["json_mb"] = len(text) / 1e6
        started = time.perf_counter()
        out["image_kb"] = len(explore.map_image(frame, next(iter(explore.COLOR_BY)), order)) / 1e3
        out["map_image_s"] = time.perf_counter() - started
        return out, text
    finally:
        store.close()


def script_runs(workspace: Workspace, runs: int = 2) -> list[float]:
    """Seconds of whole Explore script runs under Streamlit's AppTest (no browser): the server's share."""
    from streamlit.testing.v1 import AppTest

    previous = os.environ.get(ENV_WORKSPACE)
    os.environ[ENV_WORKSPACE] = str(workspace.root)
    try:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT_MS / 1000).run()
        seconds = []
        for _ in range(runs):
            started = time.perf_counter()
            at.switch_page("labelkit/ui/explore.py").run()
            seconds.append(time.perf_counter() - started)
            if at.exception:
                raise RuntimeError(f"the Explore page raised: {at.exception[0].message}")
        return seconds
    finally:
        if previous is None:
            del os.environ[ENV_WORKSPACE]
        else:
            os.environ[ENV_WORKSPACE] = previous


def _seconds_until(page: Any, js: str, arg: Any, t0: float) -> float:
    page.wait_for_function(js, arg=arg, timeout=TIMEOUT_MS, polling=50)
    return time.perf_counter() - t0


def browse(workspace: Workspace, *, items: int, runs: int) -> list[dict[str, float]]:
    """Per run, seconds from ``page.goto`` to each stage (see the module docstring)."""
    as_image = items > explore.INTERACTIVE_ITEMS
    results = []
    with served_browser(workspace.root) as (base, browser):
        for run in range(runs):
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            t0 = time.perf_counter()
            page.goto(f"{base}/explore")
            page.get_by_role("heading", name="Explore").wait_for(timeout=TIMEOUT_MS)
            row = {"run": run + 1, "title_s": time.perf_counter() - t0}
            if as_image:
                row["map_s"] = _seconds_until(page, MAP_IMAGE_JS, explore.MAP_ALT, t0)
            else:
                row["map_s"] = _seconds_until(page, MAP_DRAWN_JS, items, t0)
            row["heatmap_s"] = _seconds_until(page, HEATMAP_DRAWN_JS, None, t0)
            row["idle_s"] = _seconds_until(page, IDLE_JS, None, t0)
            row["interactive_s"] = row["map_s"]
            if as_image:
                t1 = time.perf_counter()
                page.get_by_text("Interactive map: hover").click()
                row["interactive_s"] = _seconds_until(page, MAP_DRAWN_JS, items, t1)
            results.append(row)
            print(
                f"run {row['run']}: title {row['title_s']:.2f} s, map {'image' if as_image else 'plot'} "
                f"{row['map_s']:.2f} s, heatmap {row['heatmap_s']:.2f} s, idle {row['idle_s']:.2f} s, "
                f"interactive map {row['interactive_s']:.2f} s" + (" after the toggle" if as_image else ""),
                flush=True,
            )
            page.close()
    return results


PLOTLY_PAGE = """<!doctype html><html><body><div id="map" style="width:1300px"></div>
<script src="plotly.min.js"></script>
<script>fetch("figure.json").then(r => r.json()).then(f => Plotly.newPlot("map", f.data, f.layout));</script>
</body></html>"""


def _time_map(browser: Any, url: str, items: int) -> float:
    """Seconds from ``page.goto(url)`` to the map drawn, in a fresh page."""
    page = browser.new_page(viewport={"width": 1400, "height": 1500})
    try:
        t0 = time.perf_counter()
        page.goto(url)
        return _seconds_until(page, MAP_DRAWN_JS, items, t0)
    finally:
        page.close()


def floors(workspace: Workspace, figure_json: str, *, items: int, runs: int) -> dict[str, list[float]]:
    """The same map figure drawn (a) by plotly.js alone in a static HTML page and (b) in a Streamlit
    page holding only that chart (``benchmarks/map_only_app.py``): what plotly and Streamlit cost
    before anything the Explore page adds. Seconds from ``page.goto`` to the map drawn, per run."""
    import functools
    import http.server
    import threading

    import plotly

    out: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "figure.json").write_text(figure_json)
        (folder / "index.html").write_text(PLOTLY_PAGE)
        (folder / "plotly.min.js").write_bytes(
            (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
        )

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=tmp))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with chromium() as browser:
                url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
                out["plotly_alone_s"] = [_time_map(browser, url, items) for _ in range(runs)]
        finally:
            server.shutdown()
        env = {"LABELKIT_BENCH_FIGURE": str(folder / "figure.json")}
        with served_browser(workspace.root, script=REPO / "benchmarks" / "map_only_app.py", env=env) as (
            base,
            browser,
        ):
            out["map_only_page_s"] = [_time_map(browser, base, items) for _ in range(runs)]
    for name, seconds in out.items():
        print(f"floor: {name} " + ", ".join(f"{t:.2f} s" for t in seconds), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=60_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--labelled", type=int, default=None, help="labelled items (default 5 %% of --items)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    maps = parser.add_mutually_exclusive_group()
    maps.add_argument("--fake-map", dest="real_map", action="store_false", help="write clustered coordinates")
    maps.add_argument("--real-map", dest="real_map", action="store_true", help="run UMAP as the worker does")
    parser.set_defaults(real_map=False)
    args = parser.parse_args(argv)
    labelled = args.labelled if args.labelled is not None else max(2 * args.classes, args.items // 20)

    with tempfile.TemporaryDirectory() as tmp:
        workspace, version_id, build = build_workspace(
            Path(tmp) / "ws",
            items=args.items,
            classes=args.classes,
            labelled=labelled,
            real_map=args.real_map,
        )
        print("build: " + ", ".join(f"{k} {v:.1f} s" for k, v in build.items()), flush=True)
        python, figure_json = python_side(workspace, version_id)
        print(
            f"python: map_frame {python['map_frame_s']:.2f} s, map_figure {python['map_figure_s']:.2f} s, "
            f"to_json {python['to_json_s']:.2f} s ({python['json_mb']:.1f} MB), "
            f"map_image {python['map_image_s']:.2f} s ({python['image_kb']:.0f} kB)",
            flush=True,
        )
        python["script_s"] = script_runs(workspace)
        print("python: whole Explore script (AppTest) " + ", ".join(f"{t:.2f} s" for t in python["script_s"]))
        runs = browse(workspace, items=args.items, runs=args.runs)
        floor = floors(workspace, figure_json, items=args.items, runs=args.runs)

    columns = {
        "title_s": "title s",
        "map_s": "map s",
        "heatmap_s": "heatmap s",
        "idle_s": "idle s",
        "interactive_s": "interact. s",
    }
    print(f"\n{'items':>7} {'run':>8} " + " ".join(f"{name:>11}" for name in columns.values()))
    for row in runs:
        kind = "first" if row["run"] == 1 else "warm"
        print(
            f"{args.items:>7} {row['run']:>2} {kind:<5} " + " ".join(f"{row[key]:>11.2f}" for key in columns)
        )
    warm = runs[1:] or runs
    print(f"warm map visible: median {float(np.median([r['map_s'] for r in warm])):.2f} s (goal < 3 s)")
    print(f"warm interactive map: median {float(np.median([r['interactive_s'] for r in warm])):.2f} s")
    for name, label in (
        ("plotly_alone_s", "plotly.js alone"),
        ("map_only_page_s", "Streamlit page, map only"),
    ):
        print(f"{label}: median of warm runs {float(np.median(floor[name][1:] or floor[name])):.2f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "measures": "seconds from page.goto('/explore') to: the page title drawn (title_s), "
                    "the map visible (map_s: as an image, decoded, above explore.INTERACTIVE_ITEMS "
                    "items, else every point plotted on a visible WebGL canvas), the class round-trip "
                    "heatmap drawn (heatmap_s), Streamlit's script run finished (idle_s); interactive_s: "
                    "seconds from the click on the 'Interactive map' toggle to the plotly map drawn "
                    "(map_s when the map opened interactive). Run 1 is the server's first script run, "
                    "later runs are warm. python: the page's map_frame / map_figure / to_json / "
                    "map_image in-process and whole Explore script runs under AppTest (script_s). "
                    "Headless Chromium with tests/served.py's flags: --disable-gpu, so WebGL "
                    "draws in software. floors: seconds from page.goto to the same map drawn by "
                    "plotly.js alone in a static page (plotly_alone_s) and in a Streamlit page with "
                    "only that chart (map_only_page_s, benchmarks/map_only_app.py)",
                    "interactive_items": explore.INTERACTIVE_ITEMS,
                    "items": args.items,
                    "classes": args.classes,
                    "labelled": labelled,
                    "map": "umap" if args.real_map else "fake",
                    "build_s": build,
                    "python": python,
                    "runs": runs,
                    "floors": floor,
                    "cpu_count": os.cpu_count(),
                    "platform": platform.platform(),
                },
                indent=2,
            )
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
