"""Time from a widget change to the redrawn page, on the app's cached views (embedded default).

Usage: python benchmarks/ui_latency.py [--repeats 3] [--browser] [--write]

AppTest part (default): for each page and widget, the page is opened once (its
views computed and cached), then the widget is moved to a new value and back,
`repeats` times; every move is a full script rerun in-process (app.py, sidebar and
the page, as the server would do), timed until the new elements (charts included)
are produced. "first" is the first move (it may compute a view not cached yet),
"cached" the median of the later moves, which hit the caches.

Browser part (`--browser`): `streamlit run` on a free port and Debian's chromium;
a slider is moved with the keyboard and the time is taken until the page shows
the new value's metric and the script is idle again (so it includes the network
round trip and the browser drawing the charts).

Goal: under 1 s per cached change. Prints Markdown tables; `--write` rewrites their section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_results  # noqa: E402
from ptq_ui.server import app_server  # noqa: E402

GOAL_S = 1.0


@dataclass
class Case:
    """One widget move: page, widget kind and key, the value to move to (and back from)."""

    page: str
    kind: str  # AppTest accessor: slider, select_slider, selectbox, radio, toggle, number_input
    key: str
    value: Any
    setup: tuple[tuple[str, str, Any], ...] = ()  # widgets to set once before timing


CASES = [
    Case("pages/learn_quantizer.py", "slider", "learn_bits", 2),
    Case("pages/learn_quantizer.py", "slider", "learn_ratio", 0.5),
    Case("pages/learn_quantizer.py", "toggle", "learn_sym", True),
    Case("pages/learn_quantizer.py", "radio", "w_learn_source", "activations"),
    Case("pages/learn_quantizer.py", "radio", "learn_mode", "manual"),
    Case("pages/learn_adaround.py", "select_slider", "ar_lambda", 0.1),
    Case("pages/learn_adaround.py", "slider", "ar_iters", 200),
    Case("pages/learn_qdrop.py", "slider", "qd_p", 0.2),
    Case("pages/learn_qdrop.py", "selectbox", "qd_bits", 4),
    Case("pages/learn_multipoint.py", "select_slider", "mp_budget", 50),
    Case("pages/learn_multipoint.py", "slider", "mp_shown", 4),
    Case("pages/learn_cat.py", "slider", "cat_alpha", 0.7),
    Case("pages/learn_cat.py", "select_slider", "cat_k", 16),
    Case("pages/compare_runs.py", "selectbox", "w_cr_method", "rtn"),
    Case("pages/compare_runs.py", "selectbox", "w_cr_sort", "top1"),
    Case("pages/layer_errors.py", "radio", "le_metric", "mse"),
]


def _seed_store(n: int = 30) -> None:
    """Synthetic finished runs, so Compare runs and Layer errors have something to draw."""
    from ptq_core.store import RunStore

    store = RunStore()
    layers = [
        {"name": f"layer{i}", "mse": 0.01 * i, "sqnr_db": 30.0 - i, "cosine": 0.99, "wbits": 4, "abits": 4}
        for i in range(22)
    ]
    for i in range(n):
        method = ("rtn", "adaround", "qdrop")[i % 3]
        wbits = (2, 3, 4, 8)[i % 4]
        with store.run("fmnist-resnet20", method, wbits, wbits, {"calib": 256}) as handle:
            handle.finish(
                {"fp_top1": 93.6, "top1": 60 + 8 * (i % 4), "size_bits": 1e6, "seconds": 5.0 + i},
                layers,
                {"layers_alone": layers},
            )


def _widget(at: Any, kind: str, key: str) -> Any:
    return getattr(at, kind)(key=key)


def _charts(at: Any) -> int:
    return len(at.get("plotly_chart"))


def measure_apptest(repeats: int) -> list[dict[str, Any]]:
    """Move each case's widget `repeats` times; returns one row per case."""
    from streamlit.testing.v1 import AppTest

    rows = []
    opened: dict[str, Any] = {}
    for case in CASES:
        at = opened.get(case.page)
        if at is None:
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
            at.run()
            t0 = time.perf_counter()
            at.switch_page(case.page).run()
            first_view = time.perf_counter() - t0
            opened[case.page] = at
        else:
            first_view = None
        if at.exception:
            raise RuntimeError(f"{case.page}: {at.exception[0].value}")
        original = _widget(at, case.kind, case.key).value
        times = []
        for i in range(2 * repeats):
            value = case.value if i % 2 == 0 else original
            t0 = time.perf_counter()
            _widget(at, case.kind, case.key).set_value(value).run()
            times.append(time.perf_counter() - t0)
            if at.exception:
                raise RuntimeError(f"{case.page} {case.key}={value!r}: {at.exception[0].value}")
        cached = statistics.median(times[1:]) if len(times) > 1 else times[0]
        rows.append(
            {
                "page": Path(case.page).stem,
                "widget": case.key,
                "change": f"{original!r} → {case.value!r}",
                "open s": first_view,
                "first s": times[0],
                "cached s": cached,
                "charts": _charts(at),
                "ok": cached < GOAL_S,
            }
        )
    return rows


BROWSER_CASES = [  # (url path, slider's label, metric whose value must change)
    ("learn_quantizer", "Bits", "Total MSE"),
    ("learn_qdrop", "Drop probability p (share kept float)", "Input MSE: mixed"),
    ("learn_cat", "Blend α", "With CAT"),
]


def _metric_value(page: Any, label: str) -> str:
    box = page.locator("[data-testid='stMetric']").filter(has_text=label).first
    return box.locator("[data-testid='stMetricValue']").inner_text()


# In the page: from the key press, poll every 5 ms until the metric shows a new value and the script is idle;
# also note when the server started the rerun. Times in ms, read back from window.__lat.
_WATCH = """([label, before]) => {
  window.__lat = null;
  const started = {t0: null, run: null};
  const value = () => {
    const m = [...document.querySelectorAll("[data-testid='stMetric']")].find(e => e.innerText.includes(label));
    return m ? m.querySelector("[data-testid='stMetricValue']").innerText : null;
  };
  document.addEventListener("keydown", () => { started.t0 = performance.now(); }, {once: true, capture: true});
  const check = () => {
    if (started.t0 !== null) {
      const state = document.querySelector("[data-testid='stApp']").getAttribute("data-test-script-state");
      if (state === "running" && started.run === null) started.run = performance.now() - started.t0;
      if (value() !== before && state === "notRunning") {
        window.__lat = [performance.now() - started.t0, started.run];
        return;
      }
    }
    setTimeout(check, 5);
  };
  check();
}"""


def measure_browser(repeats: int) -> list[dict[str, Any]]:
    """Keyboard moves of a slider in headless chromium, timed in the page until it is redrawn."""
    from playwright.sync_api import sync_playwright

    idle = "[data-testid='stApp'][data-test-script-state='notRunning']"
    rows = []
    with app_server(start_timeout=180) as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium",
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-dev-shm-usage",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(600_000)
            for path, label, metric in BROWSER_CASES:
                page.goto(f"{url}/{path}")
                page.wait_for_timeout(500)
                page.locator(idle).wait_for()
                page.locator("[data-testid='stMetric']").filter(has_text=metric).first.wait_for()
                thumb = page.get_by_role("slider", name=label).first
                totals, starts = [], []
                for i in range(2 * repeats):
                    page.evaluate(_WATCH, [metric, _metric_value(page, metric)])
                    thumb.focus()
                    thumb.press("ArrowLeft" if i % 2 == 0 else "ArrowRight")
                    page.wait_for_function("window.__lat !== null", timeout=120_000)
                    total_ms, run_ms = page.evaluate("window.__lat")
                    totals.append(total_ms / 1000)
                    starts.append((run_ms or 0.0) / 1000)
                    page.locator(idle).wait_for()
                rows.append(
                    {
                        "page": path,
                        "widget": label,
                        "first s": totals[0],
                        "cached s": statistics.median(totals[1:]) if len(totals) > 1 else totals[0],
                        "of which until the rerun starts s": statistics.median(starts),
                        "ok": statistics.median(totals[1:]) < GOAL_S,
                    }
                )
            browser.close()
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="moves there and back per widget")
    parser.add_argument("--browser", action="store_true", help="also time slider moves in headless chromium")
    parser.add_argument("--write", action="store_true", help="rewrite the tables' section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="ptq-ui-latency-")
    os.environ["PTQ_EXPLORER_HOME"] = home  # a private run store, also for the browser's server
    _seed_store()
    threads = os.environ.get("PTQ_UI_THREADS", "default")
    command = f"python benchmarks/ui_latency.py{' --browser' if args.browser else ''}"
    out = [
        f"On {platform.machine()}, "
        f"{os.cpu_count()} cores, PTQ_UI_THREADS={threads}; embedded default (fmnist-resnet20, fmnist-sample, "
        "cpu). AppTest: full script rerun in-process; open = first view of the page (computes its views), "
        f"first = first move, cached = median of {2 * args.repeats - 1} later moves. Goal: cached < {GOAL_S} s.\n",
        table(measure_apptest(args.repeats)),
    ]
    if args.browser:
        out += [
            "\nBrowser (headless chromium, keyboard move of a slider until the metric changed and the script is "
            "idle):\n",
            table(measure_browser(args.repeats)),
        ]
    text = "\n".join(out) + "\n"
    print(text)
    if args.write:
        write_results("UI latency: widget change to redrawn page", text, command)


if __name__ == "__main__":
    main()
