"""`benchmarks/RESULTS.md`: one section per table, rewritten in place when its script runs again.

A section starts with a level-2 heading `## <title> (<date>)`; the date is optional. Writing a
section whose title is already there replaces that section (heading to the next level-2
heading), so the file holds the latest run of every table and never a second copy of one.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

__all__ = ["RESULTS", "write_results", "section_title"]

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
_DATED = re.compile(r"^(?P<title>.*?)(?: \(\d{4}-\d{2}-\d{2}(?: \d{2}:\d{2})?\))?$")


def section_title(heading: str) -> str:
    """The title of a `## ...` heading without its trailing date.

    >>> section_title("## Graph units (issue 12) (2026-12-01 12:00)")
    'Graph units (issue 12)'
    """
    return _DATED.match(heading.removeprefix("## ").strip()).group("title")


def _sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The preamble before the first section, and (title, whole section text) per section."""
    parts = re.split(r"(?m)^(?=## )", text)
    preamble = parts[0] if parts and not parts[0].startswith("## ") else ""
    body = parts[1:] if preamble or (parts and not parts[0].startswith("## ")) else parts
    return preamble, [(section_title(p.splitlines()[0]), p) for p in body if p.startswith("## ")]


def write_results(title: str, body: str, command: str, path: Path = RESULTS) -> None:
    """Write section `title` (dated now, with the command that produced it): replaced if present, else added."""
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    section = f"## {title} ({stamp})\n\n`{command}`\n\n{body.strip()}\n\n"
    preamble, sections = _sections(path.read_text() if path.exists() else "")
    out, placed = [], False
    for name, text in sections:
        if name == title:
            if not placed:
                out.append(section)
            placed = True
        else:
            out.append(text if text.endswith("\n\n") else text.rstrip("\n") + "\n\n")
    if not placed:
        out.append(section)
    path.write_text((preamble + "".join(out)).rstrip("\n") + "\n")
