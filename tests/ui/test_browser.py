"""End to end in a real browser: `streamlit run app.py`, headless Chromium through every page.

The pages come from app.py's navigation (so pages added later are covered). On the
Quantize page the test starts a round-to-nearest run and waits for its result; on
every page it asserts that no exception box is shown, and saves a screenshot under
tests/artifacts/. A second test drives two users at once (two browser contexts): the
second run waits in the queue with its place shown, each sees their own last run, B
cannot delete A's run, and no request goes to any host but the app's. It uses Debian's
chromium (`make test` installs it when missing) and is skipped, with the reason, only
when no chromium or no playwright is there.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ptq_ui.server import app_server
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, PAGE_S, START_S, go, no_exception, open_app, settle
from tests.support.paths import ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"
RUN_S = 420  # a whole RTN run on the tiny settings

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - requirements.txt installs it
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason=f"no chromium at {CHROMIUM}: `apt-get install "
        "chromium` (make test does it when it runs as root or with sudo)",
    ),
]


def app_pages(app: Path = ROOT / "app.py") -> list[dict[str, str]]:
    """Every `st.Page("pages/x.py", title=..., url_path=..., default=...)` declared in app.py, in order."""
    pages = []
    for node in ast.walk(ast.parse(app.read_text())):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Page" and node.args):
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        kw = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
        stem = Path(first.value).stem
        url = "" if kw.get("default") else str(kw.get("url_path") or stem)
        pages.append({"file": first.value, "title": str(kw.get("title", stem)), "url": url, "stem": stem})
    return sorted(pages, key=lambda p: p["file"] != "pages/quantize.py")  # start the run first


def test_app_pages_are_discovered():
    pages = app_pages()
    assert {"pages/model_data.py", "pages/quantize.py", "pages/learn_quantizer.py"} <= {p["file"] for p in pages}
    assert all((ROOT / p["file"]).is_file() for p in pages)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free loopback port, with a private run store and a small evaluation."""
    home = tmp_path_factory.mktemp("browser-store")
    env = dict(
        os.environ,
        PTQ_EXPLORER_HOME=str(home),
        PTQ_UI_EVAL_LIMIT="200",
        PTQ_UI_THREADS="1",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PTQ_MAX_JOBS="1",
        PTQ_JOB_THREADS="1",
    )
    with open(home / "server.log", "w") as log:
        try:
            with app_server(env, log, START_S) as url:
                yield url
        except RuntimeError as e:
            raise RuntimeError(f"{e}: {(home / 'server.log').read_text()[-2000:]}") from None


def _run_rtn(page) -> None:
    """Press Run on the Quantize page (default RTN) and wait for the saved result."""
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Quantized top-1").first.wait_for(timeout=RUN_S * 1000)
    settle(page)
    assert page.get_by_text("The run failed").count() == 0


def test_every_page_in_chromium(server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    seen = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_S * 1000)
            open_app(page, server)
            for info in app_pages():
                page.goto(f"{server}/{info['url']}", wait_until="domcontentloaded")
                settle(page)
                no_exception(page, info["title"])
                if info["file"] == "pages/quantize.py":
                    _run_rtn(page)
                    no_exception(page, "Quantize after the run")
                page.screenshot(path=str(ARTIFACTS / f"{info['stem']}.png"), full_page=True)
                seen.append(info["title"])
        finally:
            browser.close()
    assert len(seen) == len(app_pages())


def _as(page, name: str) -> None:
    """Give this browser session a user name (sidebar)."""
    box = page.get_by_role("textbox", name="Your name (optional)", exact=True)
    box.fill(name)
    box.press("Enter")
    settle(page)
    page.get_by_text(f"You are user:{name}").wait_for()


def _own_run_id(page) -> str:
    """The run id in the sidebar's "Your last run" line."""
    line = page.get_by_text(re.compile(r"Your last run [0-9a-f]{12}")).first
    line.wait_for()
    return re.search(r"Your last run ([0-9a-f]{12})", line.inner_text()).group(1)


def test_two_users_at_once(server):
    """A and B in two browser contexts: queue, own last run, ownership, and no request off the machine."""
    hosts: set[str] = set()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            pages = []
            for name in ("Ada", "Bob"):
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                context.on("request", lambda request: hosts.add(urlsplit(request.url).netloc or request.url))
                page = context.new_page()
                page.set_default_timeout(PAGE_S * 1000)
                open_app(page, server)
                _as(page, name)
                go(page, "Quantize")
                pages.append(page)
            a, b = pages
            a.get_by_role("button", name="Run", exact=True).click()
            a.locator("[data-testid='stProgress']").first.wait_for(timeout=60_000)  # A's job has the only slot
            b.get_by_role("button", name="Run", exact=True).click()
            b.get_by_text("Queued: place 1 in the queue").wait_for(timeout=60_000)  # while A's run goes
            b.screenshot(path=str(ARTIFACTS / "two_users_queued.png"), full_page=True)
            for page in (a, b):
                page.get_by_text("Quantized top-1").first.wait_for(timeout=RUN_S * 1000)
                settle(page)
                assert page.get_by_text("The run failed").count() == 0
                no_exception(page, "Quantize after the run")
            a_run, b_run = _own_run_id(a), _own_run_id(b)
            assert a_run != b_run  # each sees their own last run
            go(b, "Compare runs")
            pick = b.locator("[data-testid='stMultiSelect'] input").first
            pick.click()
            pick.fill(a_run)  # the options are filtered to A's run; Enter picks it
            pick.press("Enter")
            b.keyboard.press("Escape")
            settle(b)
            b.get_by_text("you can delete only your own runs").wait_for()
            assert b.get_by_role("button", name="Delete selected").is_disabled()
            no_exception(b, "Compare runs")
        finally:
            browser.close()
    app_host = urlsplit(server).netloc
    assert hosts and hosts <= {app_host}, f"requests left for {sorted(hosts - {app_host})}"
