"""benchmarks/RESULTS.md is rewritten section by section, never appended."""

from __future__ import annotations

from benchmarks.results import section_title, write_results


def test_a_second_run_replaces_its_section_and_keeps_the_others(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Measured results\n\nintro\n\n## A (2026-01-01 10:00)\n\nold a\n\n## B\n\nb stays\n")
    write_results("A", "newer a", "python a.py", path)
    write_results("C", "c", "python c.py", path)
    text = path.read_text()
    titles = [section_title(line) for line in text.splitlines() if line.startswith("## ")]
    assert titles == ["A", "B", "C"]
    assert "newer a" in text and "old a" not in text and "b stays" in text
    assert text.startswith("# Measured results\n\nintro\n")


def test_the_shipped_results_hold_each_table_once():
    from benchmarks.results import RESULTS

    titles = [section_title(line) for line in RESULTS.read_text().splitlines() if line.startswith("## ")]
    assert titles and len(titles) == len(set(titles))
