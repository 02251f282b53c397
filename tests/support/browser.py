"""Browser tests: Debian's chromium (where it is, the flags it runs with here) and page helpers for Streamlit."""

from __future__ import annotations

import os
import re

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "PAGE_S", "START_S", "go", "no_exception", "open_app", "settle"]

START_S = 180  # server start (imports torch) on a slow 2-core machine
PAGE_S = 240  # one page's script run (the Learn pages compute on first view)
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning'][data-test-connection-state='CONNECTED']"

CHROMIUM = os.environ.get("PTQ_CHROMIUM", "/usr/bin/chromium")  # playwright cannot download browsers here
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def settle(page) -> None:
    """Wait until the script has finished running (the way Streamlit's own e2e tests do)."""
    page.wait_for_timeout(300)  # let a rerun start
    page.locator(IDLE).wait_for(timeout=PAGE_S * 1000)
    page.locator("h1").first.wait_for(timeout=PAGE_S * 1000)


def no_exception(page, where: str) -> None:
    """Fail with the first exception box's text when the page shows one."""
    boxes = page.locator("[data-testid='stException']")
    assert boxes.count() == 0, f"{where}: {boxes.first.inner_text()[:500]}"


def open_app(page, server: str) -> None:
    """Open the entry page first: until app.py has called st.navigation once in a fresh server,
    Streamlit serves a page URL through its legacy pages/ discovery (no sidebar, no titles)."""
    page.goto(server, wait_until="domcontentloaded")
    settle(page)


def go(page, title: str) -> None:
    """Follow the sidebar's link to a page (the same session, unlike a new URL)."""
    page.locator("[data-testid='stSidebarNavLink']", has_text=re.compile(f"^{re.escape(title)}$")).click()
    settle(page)
    page.get_by_role("heading", name=title).first.wait_for()
