"""Compare runs: the saved runs as a table, accuracy against bits and time, a sweep's grid, delete and export."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from ptq_ui import charts
from ptq_ui.services import runs, uploads
from ptq_ui.services.runs import describe_run
from ptq_ui.state import owner
from ptq_ui.widgets import errors_shown, finished_job, job_panel, literal, persistent

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
        "run_id": rec.run_id,
        "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.created)),
        "status": rec.status,
        "owner": _who(rec.owner),
        "mine": rec.owner == owner(),
        "model": uploads.model_label(rec.model),
        "method": rec.method,
        "wbits": rec.wbits,
        "abits": rec.abits,
        "bits": rec.bits_label,
        "w_bits_avg": m.get("w_bits_avg", rec.wbits if rec.wbits != 32 else None),
        "fp_top1": fp,
        "top1": top1,
        "drop": None if top1 is None or fp is None else round(fp - top1, 2),
        "top5": m.get("top5"),
        "test images": m.get("eval_samples") or spec.get("eval_limit"),
        "data": rec.extras.get("data", {}).get("name") or spec.get("data"),
        "observers": observers,
        "overrides": len(quant.get("overrides", {})),
        "preset": method.get("preset"),
        "iters": method.get("iters"),
        "calib": m.get("calib_samples") or method.get("calib"),
        "seed": method.get("seed"),
        "size MB": None if m.get("size_bits") is None else round(m["size_bits"] / 8e6, 4),
        "seconds": None if rec.seconds is None else round(rec.seconds, 1),
        "error": rec.error or "",
    }


def _who(run_owner: str) -> str:
    """An owner as shown: "you", a user's name, "a session", or "command line" (no session ids)."""
    if run_owner == owner():
        return "you"
    if run_owner.startswith("user:"):
        return run_owner.removeprefix("user:")
    return "a session" if run_owner.startswith("session:") else "command line"


def _filter_ui(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cols = st.columns(7)
    for col, field in zip(cols[:5], ("model", "method", "bits", "status", "owner"), strict=True):
        options = [ALL, *sorted({r[field] for r in rows})]
        value = persistent(col.selectbox, f"cr_{field}", field.capitalize(), options, options=options)
        if value != ALL:
            rows = [r for r in rows if r[field] == value]
    by = persistent(cols[5].selectbox, "cr_sort", "Sort by", SORT_KEYS, options=SORT_KEYS)
    desc = persistent(cols[6].toggle, "cr_desc", "Descending", default=True)
    present = [r for r in rows if r[by] is not None]
    return sorted(present, key=lambda r: r[by], reverse=desc) + [r for r in rows if r[by] is None]


def _charts(rows: list[dict[str, Any]]) -> None:
    done = [r for r in rows if r["status"] == "done" and r["top1"] is not None]
    if not done:
        return
    left, right = st.columns(2)
    pts = [dict(r, x_bits=min(r["w_bits_avg"] or 16, 16)) for r in done]  # float drawn at 16
    fig = charts.runs.accuracy_scatter(
        pts, "x_bits", "weight bits, parameter-weighted average (float at 16)", "Accuracy against weight bits"
    )
    left.plotly_chart(fig, key="cr_bits", config=charts.base.CONFIG)
    fig = charts.runs.accuracy_scatter(done, "seconds", "run time (s)", "Accuracy against run time")
    right.plotly_chart(fig, key="cr_time", config=charts.base.CONFIG)


def _sweep_ui(listed: list[Any]) -> list[Any]:
    """Pick a sweep: its grid as a table and a plot; returns the runs to list (the sweep's, or all)."""
    sweeps = runs.list_sweeps()
    if not sweeps:
        return listed
    names = [NO_SWEEP, *(s["sweep"] for s in sweeps)]
    counts = {s["sweep"]: f"{s['sweep']} ({s['done']} done, {s['failed']} failed)" for s in sweeps}
    name = persistent(st.selectbox, "cr_sweep", "Sweep", names, format_func=lambda n: counts.get(n, n), options=names)
    if name == NO_SWEEP:
        return listed
    with errors_shown():
        records, groups = runs.sweep_view(name)
    st.subheader(f"Sweep {name}")
    table = [
        {
            "cells": g["group"],
            "model": g["model"],
            "method": g["method"],
            "bits": g["bits"],
            "seeds": ", ".join(map(str, g["seeds"])),
            "top1": g["top1_mean"],
            "std": g["top1_std"],
            "fp_top1": g["fp_top1"],
            "failed": g["failed"],
        }
        for g in groups
    ]
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "top1": st.column_config.NumberColumn("top-1 mean %", format="%.2f"),
            "std": st.column_config.NumberColumn("± std", format="%.2f"),
            "fp_top1": st.column_config.NumberColumn("float top-1 %", format="%.2f"),
        },
    )
    if any(g["top1_mean"] is not None for g in groups):
        st.plotly_chart(charts.runs.sweep_lines(groups), key="cr_sweep_plot", config=charts.base.CONFIG)
    st.caption(
        "One row per cell of the grid with the seeds pooled: the newest run of each cell. Resume or extend "
        f"it with `python -m ptq_core sweep GRID --name {name}`."
    )
    ids = {r.run_id for r in records}
    return [r for r in listed if r.run_id in ids]


def _delete(ids: list[str]) -> None:
    """Button callback: delete (only this user's runs, unless the server lets anyone delete any), then clear
    the selection (its options are about to change)."""
    n = runs.delete_runs(ids, owner())
    st.session_state["cr_selected"] = []
    st.session_state["w_cr_selected"] = []
    st.session_state["cr_deleted"] = (n, len(ids) - n)
    if st.session_state.get("last_run_id") in ids:
        st.session_state["last_run_id"] = None


def _actions(rows: list[dict[str, Any]]) -> None:
    ids = [r["run_id"] for r in rows]
    label = {r["run_id"]: f"{r['run_id']} · {r['model']} · {r['method']} {r['bits']} · {r['status']}" for r in rows}
    chosen = persistent(
        st.multiselect,
        "cr_selected",
        "Select runs (for delete / export)",
        ids,
        options=ids,
        default=[],
        format_func=label.get,
    )
    target = chosen or ids
    c = st.columns([1, 1, 1, 2])
    c[0].download_button(
        "Export CSV", runs.export_runs(target, "csv"), "ptq-runs.csv", "text/csv", key="cr_csv", on_click="ignore"
    )
    c[1].download_button(
        "Export JSON",
        runs.export_runs(target, "json"),
        "ptq-runs.json",
        "application/json",
        key="cr_json",
        on_click="ignore",
    )
    mine = {r["run_id"] for r in rows if r["mine"] or runs.delete_any()}
    others = [i for i in chosen if i not in mine]
    sure = c[3].checkbox("Yes, delete the selected runs", key="cr_sure", disabled=not chosen or bool(others))
    why = "You can delete only your own runs" if others else None
    c[2].button(
        "Delete selected",
        key="cr_delete",
        disabled=not (chosen and sure) or bool(others),
        help=why,
        on_click=_delete,
        args=(chosen,),
    )
    if others:
        st.warning(f"{len(others)} of the selected runs are not yours: you can delete only your own runs.")
    st.caption(f"Export covers {'the selected' if chosen else 'all listed'} runs ({len(target)}).")


def render() -> None:
    """Draw the page."""
    st.title("Compare runs")
    st.caption(
        "Every run saved by this app or the `ptq` command line, by everyone using it; you can delete your "
        "own. Failed, cancelled and interrupted runs are kept with their error."
    )
    deleted = st.session_state.pop("cr_deleted", None)
    if deleted is not None:
        n, kept = deleted
        if kept:
            st.warning(f"Deleted {n} run(s); {kept} were not yours and were kept.")
        else:
            st.success(f"Deleted {n} run(s).")
    _rerun_outcome()
    with errors_shown():
        listed = runs.list_runs()
    if not listed:
        st.info("No saved runs yet: run one on the Quantize page.")
        return
    listed = _sweep_ui(listed)
    records = {r.run_id: r for r in listed}
    rows = _filter_ui([_row(r) for r in listed])
    st.caption(
        "Accuracies are on the first *test images* of the run's *data*; a float top-1 differs between runs "
        "evaluated on different subsets."
    )
    st.dataframe(
        rows,
        hide_index=True,
        column_order=[
            "run_id",
            "created",
            "status",
            "owner",
            "model",
            "method",
            "bits",
            "fp_top1",
            "top1",
            "drop",
            "top5",
            "test images",
            "data",
            "observers",
            "overrides",
            "preset",
            "iters",
            "calib",
            "seed",
            "size MB",
            "seconds",
            "error",
        ],
        column_config={
            "top1": st.column_config.NumberColumn("top-1 %", format="%.2f"),
            "fp_top1": st.column_config.NumberColumn("float top-1 %", format="%.2f"),
            "top5": st.column_config.NumberColumn("top-5 %", format="%.2f"),
            "drop": st.column_config.NumberColumn("drop (pts)", format="%.2f"),
        },
    )
    if not rows:
        st.info("No run matches the filters.")
        return
    _charts(rows)
    _detail(rows, records)
    _actions(rows)


def _detail(rows: list[dict[str, Any]], records: dict[str, Any]) -> None:
    """One run in full: what its numbers are, its error if it failed, its description to re-run."""
    ids = [r["run_id"] for r in rows]
    run_id = persistent(
        st.selectbox,
        "cr_detail",
        "Run details",
        ids,
        format_func=lambda i: f"{i} · {records[i].method} {records[i].bits_label} · {records[i].status}",
        options=ids,
    )
    rec = records[run_id]
    st.caption(literal(uploads.redact(describe_run(rec))))
    if rec.error:
        st.error(literal(uploads.redact(f"{rec.status}: {rec.error}")))
    if rec.status in ("interrupted", "failed", "cancelled") and rec.spec:
        job = st.session_state.get("job")
        busy = job is not None and job.running
        st.button(
            "Re-run this description",
            key="cr_rerun",
            disabled=busy,
            on_click=_rerun,
            args=(rec.spec,),
            help="Your job is still going"
            if busy
            else "Queues the same run again, as yours; follow it on the Quantize page.",
        )
    with st.expander("Run description (re-run it with `python -m ptq_core quantize --config FILE`)"):
        st.json(
            uploads.redact_json(rec.spec or {"method": rec.config, "note": "stored before runs kept their description"})
        )
    if rec.status == "done" and rec.spec:
        _export(rec.run_id)
        _report_ui(run_id)


def _export(run_id: str) -> None:
    """Rebuild the run and offer its ONNX file, integer checkpoint and encodings, each checked."""
    st.markdown("**Export**")
    job = st.session_state.get("export_job")
    ready = job is not None and not job.running and job.result and job.result["run_id"] == run_id
    if job is not None and job.running:
        job_panel(job, "cr_export")
        return
    if not ready:
        if job is not None and job.snapshot().status == "failed":
            st.error(literal(f"Export failed: {job.snapshot().error}"))
        st.caption(
            "The run is quantized again from its description (same seed, same images); its top-1 must "
            "equal the stored one, then each file is checked: the ONNX model in onnxruntime on the run's "
            "test images, the integer checkpoint by reloading it."
        )
        if st.button("Prepare the export files", key="cr_export_go"):
            runs.start_export(run_id)
            st.rerun()
        return
    result = job.result
    for report in result["reports"]:
        checks = ", ".join(f"{k} {v}" for k, v in report["checks"].items())
        verdict = "checked" if report["passed"] else "CHECK FAILED"
        text = f"{report['format']}: {verdict}" + (f" ({checks})" if checks else "")
        (st.caption if report["passed"] else st.error)(literal(text))
    binary = "application/octet-stream"
    names = {
        "onnx": ("ONNX (QDQ)", binary),
        "int": ("Integer checkpoint", binary),
        "encodings": ("Encodings (JSON)", "application/json"),
    }
    cols = st.columns(len(result["files"]))
    for col, (fmt, path) in zip(cols, result["files"].items(), strict=True):
        label, mime = names[fmt]
        col.download_button(
            label, runs.read_file(path), path.rsplit("/", 1)[-1], mime, key=f"cr_dl_{fmt}", on_click="ignore"
        )
    st.dataframe(result["encodings"], hide_index=True, height=300)


def _rerun(spec: dict[str, Any]) -> None:
    """Button callback: queue the stored description again; the outcome is shown on the next draw."""
    try:
        runs.rerun(spec, owner())
        st.session_state["cr_rerun_msg"] = ("ok", "Queued again as your run: follow it on the Quantize page.")
    except runs.PTQError as exc:
        st.session_state["cr_rerun_msg"] = ("error", f"Cannot re-run it: {exc}")


def _rerun_outcome() -> None:
    msg = st.session_state.pop("cr_rerun_msg", None)
    if msg is not None and msg[0] == "ok":
        st.success(literal(msg[1]))
    elif msg is not None:
        st.error(literal(msg[1]))


def _report_ui(run_id: str) -> None:
    """Build the run's shareable HTML report (the run is rebuilt from its description), then download it."""
    job = st.session_state.get("report_job")
    running = job is not None and job.running
    if st.button(
        "Build a shareable report (HTML)",
        key="cr_report",
        disabled=running,
        help="Re-runs the stored description (same seed, same model), checks the top-1, and writes one "
        "self-contained file: spec, accuracy, per-layer errors, diagnosis, scales, histograms.",
    ):
        with errors_shown():
            job = runs.start_report(run_id)
        if job.running:
            st.rerun()
    snap = finished_job(job, "cr_report", "The report")
    if snap is None:
        return
    res = snap.result
    same = "equals" if res["reproduced"] else "differs from"
    st.caption(
        f"Run {res['run_id']} rebuilt: top-1 {res['rebuilt_top1']:.2f}% {same} the stored {res['stored_top1']:.2f}%."
    )
    st.download_button(
        "Download the report", res["html"], f"report-{res['run_id']}.html", "text/html", key="cr_report_download"
    )


render()
