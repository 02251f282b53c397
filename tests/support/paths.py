"""Where the tests find the repository: its root, the app's entry script, the support folder."""

from __future__ import annotations

from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
ROOT = SUPPORT.parents[1]
APP = str(ROOT / "app.py")  # AppTest.from_file takes it as is (a relative path would be the caller's)
