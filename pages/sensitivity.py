"""Sensitivity & diagnosis: one-layer-at-a-time sweep, weight/activation split, diagnosis, mixed precision."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ptq_ui import charts
from ptq_ui.charts.runs import bits_label
from ptq_ui.services import diagnose, explore, runs
from ptq_ui.state import Selection, selection
from ptq_ui.widgets import errors_shown, finished_job, persistent
from ptq_ui.widgets.findings import finding_rows, fix_text, fmt_db, open_evidence
from ptq_ui.widgets.forms import apply_fix, current_spec, set_overrides
from ptq_ui.widgets.pickers import require_model

INTRO = """
Which layers hurt, by how much, and why? Everything here quantizes a **copy** of the model with round-to-nearest
using the observers and granularity chosen on the Quantize page. *One layer at a time* means only that layer is
quantized (weights and its input) and the rest stays float, so each number is that layer's own damage.
"""
SWEEP_LIMITS = [500, 2000, 0]  # test images of the full sweep (0 = all)


VIEW_HELP = {
    "only": "only this layer quantized (its own damage)",
    "all but": "every layer quantized except this one (what leaving it out gives back)",
}


def _bits_ui() -> tuple[list[int], list[tuple[int, int]], str]:
    c1, c2, c3 = st.columns([2, 2, 2])
    chosen = persistent(
        c1.multiselect,
        "sens_bits",
        "Bit-widths to sweep (W = A)",
        list(range(2, 9)),
        default=[2, 4, 8],
        help="Each setting costs one calibration and one forward pass per layer.",
    )
    text = persistent(
        c2.text_input,
        "sens_settings",
        "Other settings",
        placeholder="W4A8, W2A4, A4",
        help="Weight and activation bits apart: W4A8; A4 sweeps the "
        "activation quantizers alone (weights float), W2 the weights "
        "alone.",
        default="",
    )
    view = persistent(
        c3.radio,
        "sens_view",
        "View",
        list(VIEW_HELP),
        format_func=VIEW_HELP.get,
        horizontal=False,
        options=list(VIEW_HELP),
    )
    settings: list[tuple[int, int]] = []
    with errors_shown():
        settings = diagnose.parse_settings(text)
    return sorted(chosen), settings, view


def _proxy_tab(
    sel: Selection, spec: Any, bits: list[int], settings: list[tuple[int, int]], view: str
) -> list[dict[str, Any]] | None:
    st.caption(
        "**Cheap proxy**: the SQNR of the logits on 32 test images with " + VIEW_HELP[view] + ". Dark red "
        "cells are the sensitive layer/setting pairs; every 6 dB is about one bit."
    )
    if not bits and not settings:
        st.error("Choose at least one bit-width.")
        return None
    with errors_shown():
        rows = diagnose.sensitivity_proxy(sel, spec, bits, settings=settings, view=view)
        kept = set(diagnose.policy_kept(sel, spec))
    title = "Logit SQNR, " + VIEW_HELP[view]
    st.plotly_chart(
        charts.diagnose.sensitivity_heatmap(rows, "sqnr_db", title, "SQNR (dB)"),
        key="sens_proxy",
        config=charts.base.CONFIG,
    )
    worst = sorted((r for r in rows if r["layer"] not in kept), key=lambda r: r["sqnr_db"], reverse=view != "only")
    st.caption(
        ("Most sensitive: " if view == "only" else "Leaving out helps most: ")
        + ", ".join(f"{r['layer']} at {r['setting']} ({fmt_db(r['sqnr_db'])})" for r in worst[:5])
        + (
            f". Not counted: {', '.join(sorted(kept))}, kept at 8 bits by the first/last policy of the Quantize page."
            if kept
            else "."
        )
    )
    _sweep_panel(sel, spec, bits, settings, view)
    return [r for r in rows if r["bits"] is not None] if view == "only" else None


def _sweep_panel(sel: Selection, spec: Any, bits: list[int], settings: list[tuple[int, int]], view: str) -> None:
    st.markdown(
        "**Full accuracy sweep** (top-1 drop per layer and bit-width; one evaluation each, runs in the background)"
    )
    env = runs.default_eval_limit()
    limits = SWEEP_LIMITS if env is None else sorted({env, *SWEEP_LIMITS[:-1]}) + [0]
    c1, c2 = st.columns([2, 1])
    limit = persistent(
        c1.selectbox,
        "sens_limit",
        "Test images per evaluation",
        limits,
        format_func=lambda n: "all" if n == 0 else f"first {n}",
        options=limits,
        default=env or 500,
    )
    ray_workers = _ray_ui()
    job = st.session_state.get("sens_job")
    running = job is not None and job.running
    if c2.button("Run the accuracy sweep", key="sens_run", disabled=running or not (bits or settings)):
        with errors_shown():
            job = diagnose.start_sensitivity_sweep(
                sel, spec, bits, limit or None, settings=settings, view=view, ray_workers=ray_workers
            )
        if job.running:
            st.rerun()
    snap = finished_job(job, "sens", "The sweep")
    if snap is not None and snap.result and snap.result["model"] == sel.model:
        rows = snap.result["rows"]
        images = snap.result["eval_limit"] or "all"
        st.caption(
            f"{job.label}: {images} test images per evaluation, float top-1 {rows[0]['fp_top1']:.2f}%, "
            f"{snap.elapsed:.0f} s."
        )
        title = "Top-1 drop (points), " + VIEW_HELP[snap.result.get("view", "only")]
        st.plotly_chart(
            charts.diagnose.sensitivity_heatmap(rows, "drop", title, "drop (pts)", reverse=True),
            key="sens_sweep",
            config=charts.base.CONFIG,
        )
        with st.expander("Sweep table"):
            st.dataframe([{k: r[k] for k in ("layer", "setting", "top1", "drop")} for r in rows], hide_index=True)


def _ray_ui() -> int | None:
    """The option to run the sweep on Ray; the number of tasks at once, or None (in this process)."""
    where = diagnose.ray_address() or "this machine"
    on = persistent(
        st.toggle,
        "sens_ray",
        "Run on Ray",
        help=f"Split the evaluations into Ray tasks on {where} (set PTQ_RAY_ADDRESS "
        "to use a cluster). Same numbers; faster with more CPUs or nodes.",
        default=False,
    )
    if not on:
        return None
    return int(persistent(st.number_input, "sens_ray_workers", "Ray tasks at once", 1, 64, default=2))


def _split_tab(sel: Selection, spec: Any) -> None:
    extra = f" + {len(spec.overrides)} override pattern(s)" if spec.overrides else ""
    st.caption(
        f"The Quantize page's settings ({bits_label(spec.wbits, spec.abits)}{extra}, RTN) evaluated four ways. "
        "If *weights only* is close to float and *activations only* is not, spend effort on the "
        "activations (observer, bits), and vice versa."
    )
    limit = runs.default_eval_limit() or 2000
    if st.button(f"Evaluate the split on {limit} test images", key="sens_split_go"):
        st.session_state["sens_split_on"] = True
    if not st.session_state.get("sens_split_on"):
        return
    with errors_shown():
        split = diagnose.weight_act_split(sel, spec, limit)
    st.caption(f"Top-1 on the first {limit:,} test images of {sel.data}.")
    c = st.columns(4)
    for col, name in zip(c, split, strict=True):
        col.metric(
            name.capitalize(),
            f"{split[name]['top1']:.2f}%",
            None if name == "float" else f"{split[name]['top1'] - split['float']['top1']:+.2f} pts",
        )
    st.plotly_chart(charts.diagnose.split_bars(split), key="sens_split", config=charts.base.CONFIG)


def _diagnosis_tab(sel: Selection, spec: Any) -> None:
    st.caption(
        "A layer is **flagged** when its output SQNR with only it quantized stands out below the model's own "
        "median (by the spread below), or below the absolute threshold when that is lower. Each layer is checked "
        "for known causes, one statistic each; a cause at a layer that is fine is listed as *watch*. Every fix "
        "shown is one the current settings do not already apply."
    )
    c = st.columns(4)
    thr = persistent(
        c[0].slider,
        "dg_sqnr",
        "Floor below (dB)",
        0.0,
        40.0,
        step=0.5,
        help="A median layer below this means every layer is near its bit-width's floor.",
        default=20.0,
    )
    z = persistent(c[1].slider, "dg_z", "Outlier z-score", 1.0, 20.0, step=0.5, default=3.5)
    ratio = persistent(c[2].slider, "dg_ratio", "Residual range ratio", 2.0, 50.0, step=1.0, default=8.0)
    neg = persistent(c[3].slider, "dg_neg", "Negative share (%)", 0.0, 20.0, step=0.5, default=1.0)
    with errors_shown():
        result = diagnose.diagnose(sel, spec, thr, z, ratio, neg / 100)
    if result["verdict"]["floor"]:
        st.warning(result["verdict"]["text"].capitalize())
    flagged = [r for r in result["layers"] if r["flagged"]]
    m = st.columns(4)
    m[0].metric("Flagged layers", len(flagged), help=", ".join(r["layer"] for r in flagged) or None)
    m[1].metric("Findings", len(result["findings"]))
    m[2].metric("Flag threshold", fmt_db(result["threshold_db"]), help="min(absolute, median - spread)")
    m[3].metric("Residual adds checked", "yes" if result["residual_checked"] else "no (not traceable)")
    if result["kept"]:
        st.caption(f"Kept at 8 bits by the first/last policy (never culprits): {', '.join(result['kept'])}.")
    if result["findings"]:
        st.dataframe(finding_rows(result["findings"]), hide_index=True, key="dg_table")
        _finding_actions(result["findings"])
    else:
        st.success("No layer stands out and no known cause was found.")
    with st.expander("Causes and fixes"):
        st.table([{"cause": k, "fix to try": v} for k, v in diagnose.FIXES.items()])


def _finding_actions(findings: list[dict[str, Any]], limit: int = 8) -> None:
    """One line per finding: open the page that shows its statistic, or apply its fix on the Quantize page."""
    st.markdown("**From finding to evidence**")
    for i, f in enumerate(findings[:limit]):
        c1, c2, c3 = st.columns([4, 2, 2])
        c1.markdown(f"`{f['layer']}` · {f['cause']} · {f['severity']}")
        page, title, state = diagnose.evidence_page(f["cause"], f["layer"], f["statistic"].get("source"))
        if c2.button(f"Show in {title}", key=f"dg_show_{i}"):
            open_evidence(page, state)
        action = f["action"]
        if c3.button(
            "Apply this fix",
            key=f"dg_fix_{i}",
            disabled=action is None,
            help=None if action is None else fix_text(action),
        ):
            st.success(f"The Quantize page now has: {apply_fix(action)}.")


def _culprits_tab(sel: Selection, spec: Any) -> None:
    st.caption(
        "**Measured culprits**: each layer (on the side the weights-vs-activations split blames first) is "
        "raised to 8 bits on its own and the model is evaluated; the recovered points rank the layers. Then "
        "the best are raised together, each step measured, until the set recovers the target share of the "
        "loss. Layers the first/last policy keeps at 8 bits are not candidates."
    )
    c1, c2, c3 = st.columns([2, 2, 1])
    env = runs.default_eval_limit()
    limits = sorted({200, 500, 2000} | ({env} if env else set()))
    limit = persistent(
        c1.selectbox, "cu_limit", "Test images per evaluation", limits, options=limits, default=env or 500
    )
    share = persistent(c2.slider, "cu_share", "Target share of the loss", 0.1, 1.0, step=0.05, default=0.5)
    job = st.session_state.get("culprit_job")
    running = job is not None and job.running
    if c3.button("Measure", key="cu_run", disabled=running):
        with errors_shown():
            job = diagnose.start_culprits(sel, spec, limit, share)
        if job.running:
            st.rerun()
    snap = finished_job(job, "cu", "The measurement")
    if snap is None:
        return
    res = snap.result
    if res["model"] != sel.model or res["spec"] != diagnose.spec_json(spec):
        st.info("These culprits were measured for other settings; measure again.")
    _culprit_results(res)


def _culprit_results(res: dict[str, Any]) -> None:
    c = st.columns(4)
    c[0].metric("Float top-1", f"{res['fp_top1']:.2f}%")
    c[1].metric("Quantized top-1", f"{res['top1']:.2f}%", f"{-res['loss']:+.2f} pts")
    c[2].metric(
        "Weights only / activations only", f"-{res['split']['weights']:.1f} / -{res['split']['activations']:.1f} pts"
    )
    last = res["chosen"][-1]["cumulative_top1"] if res["chosen"] else res["top1"]
    c[3].metric("With the chosen set", f"{last:.2f}%", f"{res['recovered']:+.2f} pts")
    st.caption(
        f"Measured on {res['samples']} test images, {res['evaluations']} evaluations; searched: "
        f"{' then '.join(res['sides'])}."
    )
    st.plotly_chart(charts.diagnose.culprit_bars(res["candidates"][:15]), key="cu_bars", config=charts.base.CONFIG)
    st.dataframe(
        [
            {
                "layer": c["layer"],
                "side": c["side"],
                "bits": c["bits"],
                "recovered (pts)": round(c["recovered"], 2),
                "top-1 with it at 8 bits": round(c["top1"], 2),
            }
            for c in res["candidates"]
        ],
        hide_index=True,
        key="cu_table",
    )
    if res["chosen"]:
        st.markdown("**Greedy set** (" + ("reaches" if res["reached"] else "does not reach") + " the target)")
        st.dataframe(
            [
                {
                    "layer": c["layer"],
                    "side": c["side"],
                    "cumulative top-1": round(c["cumulative_top1"], 2),
                    "recovered so far": round(c["cumulative_recovered"], 2),
                }
                for c in res["chosen"]
            ],
            hide_index=True,
        )
        st.code(res["overrides"], language=None)
        b1, b2 = st.columns(2)
        if b1.button("Apply this set on the Quantize page", key="cu_apply"):
            set_overrides(res["overrides"])
            st.success("Copied into the per-layer overrides of the Quantize page.")
        top = res["chosen"][0]
        if b2.button(f"Show {top['layer']} in Outlier channels", key="cu_show"):
            page, _, state = diagnose.evidence_page("outlier channels (activations)", top["layer"])
            open_evidence(page, state)
    if res["kept"]:
        st.caption("Kept at 8 bits by the policy: " + ", ".join(k["layer"] for k in res["kept"]) + ".")


def _mixed_tab(sel: Selection, spec: Any, rows: list[dict[str, Any]] | None, bits: list[int]) -> None:
    st.caption(
        "Bits per layer under a size budget (average bits per weight), chosen to minimise the predicted "
        "logit noise: the proxy's per-layer error energies are added up, and a knapsack picks the "
        "cheapest mix. Each layer's weights and input get the same bits."
    )
    if not rows or len(bits) < 2:
        st.info("Sweep at least two bit-widths on the Sensitivity tab first (view: only this layer quantized).")
        return
    budget = persistent(
        st.slider,
        "mp_budget",
        "Budget (average bits per weight)",
        float(min(bits)),
        float(max(bits)),
        step=0.25,
        default=float(min(4, max(bits))),
    )
    with errors_shown():
        alloc = diagnose.allocate(rows, budget)
    c = st.columns(3)
    c[0].metric(
        "Size of the swept layers",
        f"{alloc['size_bits'] / 8e3:.1f} kB",
        help=f"budget {alloc['budget_bits'] / 8e3:.1f} kB",
    )
    c[1].metric("Predicted logit SQNR", fmt_db(alloc["predicted_sqnr_db"]))
    fits = [u for u in alloc["uniform"] if u["fits"]]
    best_uniform = max(fits, key=lambda u: u["predicted_sqnr_db"]) if fits else None
    c[2].metric(
        "Best uniform that fits",
        f"{best_uniform['bits']}-bit" if best_uniform else "none",
        f"{fmt_db(best_uniform['predicted_sqnr_db'])}" if best_uniform else None,
        delta_color="off",
    )
    order = list(dict.fromkeys(r["layer"] for r in sorted(rows, key=lambda r: r["index"])))
    st.plotly_chart(charts.diagnose.allocation_figure(alloc, order), key="mp_bits", config=charts.base.CONFIG)
    text = diagnose.overrides_text(alloc["bits"])
    with st.expander("As overrides for the Quantize page"):
        st.code(text, language=None)
    b1, b2 = st.columns(2)
    if b1.button("Use these bits on the Quantize page", key="mp_use"):
        set_overrides(text)
        st.success("Copied into the per-layer overrides of the Quantize page.")
    if b2.button("Measure the accuracy", key="mp_measure"):
        st.session_state["mp_measure_on"] = True
    if st.session_state.get("mp_measure_on"):
        with errors_shown():
            res = diagnose.measure_allocation(sel, spec, alloc["bits"], runs.default_eval_limit() or 2000)
        q, f = res["quantized"], res["float"]
        st.metric(
            "Measured top-1 (RTN with these bits)",
            f"{q['top1']:.2f}%",
            f"{q['top1'] - f['top1']:+.2f} pts vs float",
            help=f"{int(q['samples'])} test images",
        )


def render() -> None:
    """Draw the page."""
    st.title("Sensitivity & diagnosis")
    st.markdown(INTRO)
    require_model()
    sel = selection()
    with errors_shown():
        layers = explore.quantizable_layers(sel)
    spec = current_spec(layers)
    bits, settings, view = _bits_ui()
    tabs = st.tabs(["Sensitivity", "Weights vs activations", "Culprits (measured)", "Diagnosis", "Mixed precision"])
    with tabs[0]:
        rows = _proxy_tab(sel, spec, bits, settings, view)
    with tabs[1]:
        _split_tab(sel, spec)
    with tabs[2]:
        _culprits_tab(sel, spec)
    with tabs[3]:
        _diagnosis_tab(sel, spec)
    with tabs[4]:
        _mixed_tab(sel, spec, rows, bits)


render()
