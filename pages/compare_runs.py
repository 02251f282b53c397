"""Compare runs: the saved runs as a table, accuracy against bits and time, a sweep's grid, delete and export."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from ptq_ui import bridge, charts
from ptq_ui.runs import describe_run
from ptq_ui.widgets import errors_shown, keep, literal, seeded

ALL = "(all)"
NO_SWEEP = "(every run)"
SORT_KEYS = ["created", "top1", "drop", "wbits", "abits", "size MB", "seconds", "model", "method"]


def _row(rec: Any) -> dict[str, Any]:
    """One table row: the numbers and every setting that decides them."""
    m, spec = rec.metrics, rec.spec or {}
    method = spec.get("method", rec.config)
    quant = method.get("quant", {})
    top1, fp = m.get("top1"), m.get("fp_top1")
    observers = f"{quant['w_observer']}/{quant['a_observer']}" if "w_observer" in quant else None
    return {
        "run_id": rec.run_id, "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.created)),
        "status": rec.status, "model": rec.model, "method": rec.method, "wbits": rec.wbits, "abits": rec.abits,
        "bits": rec.bits_label, "w_bits_avg": m.get("w_bits_avg", rec.wbits if rec.wbits != 32 else None),
        "fp_top1": fp, "top1": top1, "drop": None if top1 is None or fp is None else round(fp - top1, 2),
        "top5": m.get("top5"), "test images": m.get("eval_samples") or spec.get("eval_limit"),
        "data": rec.extras.get("data", {}).get("name") or spec.get("data"), "observers": observers,
        "overrides": len(quant.get("overrides", {})), "preset": method.get("preset"), "iters": method.get("iters"),
        "calib": m.get("calib_samples") or method.get("calib"), "seed": method.get("seed"),
        "size MB": None if m.get("size_bits") is None else round(m["size_bits"] / 8e6, 4),
        "seconds": None if rec.seconds is None else round(rec.seconds, 1), "error": rec.error or "",
    }  # fmt: skip


def _filter_ui(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cols = st.columns(6)
    for col, field in zip(cols[:4], ("model", "method", "bits", "status"), strict=True):
        options = [ALL, *sorted({r[field] for r in rows})]
        value = keep(f"cr_{field}", col.selectbox(field.capitalize(), options, key=seeded(f"cr_{field}", options)))
        if value != ALL:
            rows = [r for r in rows if r[field] == value]
    by = keep("cr_sort", cols[4].selectbox("Sort by", SORT_KEYS, key=seeded("cr_sort", SORT_KEYS)))
    desc = keep("cr_desc", cols[5].toggle("Descending", key=seeded("cr_desc", default=True)))
    present = [r for r in rows if r[by] is not None]
    return sorted(present, key=lambda r: r[by], reverse=desc) + [r for r in rows if r[by] is None]


def _charts(rows: list[dict[str, Any]]) -> None:
    done = [r for r in rows if r["status"] == "done" and r["top1"] is not None]
    if not done:
        return
    left, right = st.columns(2)
    pts = [dict(r, x_bits=min(r["w_bits_avg"] or 16, 16)) for r in done]  # float drawn at 16
    fig = charts.accuracy_scatter(pts, "x_bits", "weight bits, parameter-weighted average (float at 16)",
                                  "Accuracy against weight bits")  # fmt: skip
    left.plotly_chart(fig, key="cr_bits", config={"displaylogo": False})
    fig = charts.accuracy_scatter(done, "seconds", "run time (s)", "Accuracy against run time")
    right.plotly_chart(fig, key="cr_time", config={"displaylogo": False})


def _sweep_ui(runs: list[Any]) -> list[Any]:
    """Pick a sweep: its grid as a table and a plot; returns the runs to list (the sweep's, or all)."""
    sweeps = bridge.list_sweeps()
    if not sweeps:
        return runs
    names = [NO_SWEEP, *(s["sweep"] for s in sweeps)]
    counts = {s["sweep"]: f"{s['sweep']} ({s['done']} done, {s['failed']} failed)" for s in sweeps}
    name = keep("cr_sweep", st.selectbox("Sweep", names, key=seeded("cr_sweep", names),
                                         format_func=lambda n: counts.get(n, n)))  # fmt: skip
    if name == NO_SWEEP:
        return runs
    with errors_shown():
        records, groups = bridge.sweep_view(name)
    st.subheader(f"Sweep {name}")
    table = [{"cells": g["group"], "model": g["model"], "method": g["method"], "bits": g["bits"],
              "seeds": ", ".join(map(str, g["seeds"])), "top1": g["top1_mean"], "std": g["top1_std"],
              "fp_top1": g["fp_top1"], "failed": g["failed"]} for g in groups]  # fmt: skip
    st.dataframe(table, hide_index=True,
                 column_config={"top1": st.column_config.NumberColumn("top-1 mean %", format="%.2f"),
                                "std": st.column_config.NumberColumn("± std", format="%.2f"),
                                "fp_top1": st.column_config.NumberColumn("float top-1 %", format="%.2f")})  # fmt: skip
    if any(g["top1_mean"] is not None for g in groups):
        st.plotly_chart(charts.sweep_lines(groups), key="cr_sweep_plot", config={"displaylogo": False})
    st.caption("One row per cell of the grid with the seeds pooled: the newest run of each cell. Resume or extend "
               f"it with `python -m ptq_core sweep GRID --name {name}`.")  # fmt: skip
    ids = {r.run_id for r in records}
    return [r for r in runs if r.run_id in ids]


def _delete(ids: list[str]) -> None:
    """Button callback: delete, then clear the selection (its options are about to change)."""
    n = bridge.delete_runs(ids)
    st.session_state["cr_selected"] = []
    st.session_state["w_cr_selected"] = []
    st.session_state["cr_deleted"] = n
    if st.session_state.get("last_run_id") in ids:
        st.session_state["last_run_id"] = None


def _actions(rows: list[dict[str, Any]]) -> None:
    ids = [r["run_id"] for r in rows]
    label = {r["run_id"]: f"{r['run_id']} · {r['model']} · {r['method']} {r['bits']} · {r['status']}" for r in rows}
    kept = [i for i in st.session_state.get("cr_selected") or [] if i in label]
    st.session_state["w_cr_selected"] = [i for i in st.session_state.get("w_cr_selected", kept) if i in label]
    chosen = keep("cr_selected", st.multiselect("Select runs (for delete / export)", ids, key="w_cr_selected",
                                                format_func=label.get))  # fmt: skip
    target = chosen or ids
    c = st.columns([1, 1, 1, 2])
    c[0].download_button("Export CSV", bridge.export_runs(target, "csv"), "ptq-runs.csv", "text/csv",
                         key="cr_csv", on_click="ignore")  # fmt: skip
    c[1].download_button("Export JSON", bridge.export_runs(target, "json"), "ptq-runs.json", "application/json",
                         key="cr_json", on_click="ignore")  # fmt: skip
    sure = c[3].checkbox("Yes, delete the selected runs", key="cr_sure", disabled=not chosen)
    c[2].button("Delete selected", key="cr_delete", disabled=not (chosen and sure), on_click=_delete,
                args=(chosen,))  # fmt: skip
    st.caption(f"Export covers {'the selected' if chosen else 'all listed'} runs ({len(target)}).")


def render() -> None:
    """Draw the page."""
    st.title("Compare runs")
    st.caption("Every run saved by this app or the `ptq` command line. Failed and cancelled runs are kept "
               "with their error.")  # fmt: skip
    deleted = st.session_state.pop("cr_deleted", None)
    if deleted is not None:
        st.success(f"Deleted {deleted} run(s).")
    with errors_shown():
        runs = bridge.list_runs()
    if not runs:
        st.info("No saved runs yet: run one on the Quantize page.")
        return
    runs = _sweep_ui(runs)
    records = {r.run_id: r for r in runs}
    rows = _filter_ui([_row(r) for r in runs])
    st.caption("Accuracies are on the first *test images* of the run's *data*; a float top-1 differs between runs "
               "evaluated on different subsets.")  # fmt: skip
    st.dataframe(rows, hide_index=True, column_order=["run_id", "created", "status", "model", "method", "bits",
                 "fp_top1", "top1", "drop", "top5", "test images", "data", "observers", "overrides", "preset",
                 "iters", "calib", "seed", "size MB", "seconds", "error"],
                 column_config={"top1": st.column_config.NumberColumn("top-1 %", format="%.2f"),
                                "fp_top1": st.column_config.NumberColumn("float top-1 %", format="%.2f"),
                                "top5": st.column_config.NumberColumn("top-5 %", format="%.2f"),
                                "drop": st.column_config.NumberColumn("drop (pts)", format="%.2f")})  # fmt: skip
    if not rows:
        st.info("No run matches the filters.")
        return
    _charts(rows)
    _detail(rows, records)
    _actions(rows)


def _detail(rows: list[dict[str, Any]], records: dict[str, Any]) -> None:
    """One run in full: what its numbers are, its error if it failed, its description to re-run."""
    ids = [r["run_id"] for r in rows]
    run_id = keep("cr_detail", st.selectbox("Run details", ids, key=seeded("cr_detail", ids),
                                            format_func=lambda i: f"{i} · {records[i].method} "
                                            f"{records[i].bits_label} · {records[i].status}"))  # fmt: skip
    rec = records[run_id]
    st.caption(literal(describe_run(rec)))
    if rec.error:
        st.error(literal(f"{rec.status}: {rec.error}"))
    with st.expander("Run description (re-run it with `python -m ptq_core quantize --config FILE`)"):
        st.json(rec.spec or {"method": rec.config, "note": "stored before runs kept their description"})


render()
