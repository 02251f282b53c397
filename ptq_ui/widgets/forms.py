"""The run form: the Quantize page's settings as one value in the session, and the `RunSpec` they make.

`st.session_state["run_form"]` holds every setting the user chose (method, bits, observers,
overrides text, each method's own fields, calibration, seed, batch, test images, CAT). A
widget changes its own entry through its `on_change` callback and nothing else writes
there, so a widget error, a page that stops early or a smaller data set never resets
another setting. Every draw seeds each widget from the form, and `draft()` turns the
form into the `RunSpec` that Run starts and "Config as JSON" shows: one value, so what
is shown is what runs.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from ptq_core.cat import CATOptions
from ptq_core.errors import PTQError
from ptq_core.methods import METHODS, MethodConfig
from ptq_core.observers import OBSERVERS
from ptq_core.overrides import parse_overrides, unmatched_patterns
from ptq_core.prepare import BIT_CHOICES, QuantSpec
from ptq_core.qscheme import FLOAT_BITS
from ptq_core.settings import Setting, settings
from ptq_core.spec import RunSpec, make_config

from ..services import runs
from ..state import Selection

__all__ = [
    "FORM",
    "FIRST_LAST",
    "EVAL_LIMITS",
    "Draft",
    "form",
    "draft",
    "current_spec",
    "set_overrides",
    "apply_fix",
    "run_form_ui",
    "bits_format",
]

FORM = "run_form"
FIRST_LAST = {"8-bit": 8, "same as the rest": None, "float (32)": FLOAT_BITS}
EVAL_LIMITS = [500, 2000, 5000, 0]  # 0 = the whole test split
SHARED = ("quant", "calib", "batch_size", "seed")  # drawn by the common widget groups
_QUANT_DRAWN = (
    "wbits",
    "abits",
    "w_observer",
    "a_observer",
    "w_per_channel",
    "w_symmetric",
    "a_symmetric",
    "first_last_bits",
    "fold_bn",
    "overrides",
)


def _defaults() -> dict[str, Any]:
    quant = QuantSpec().to_dict()
    quant.pop("overrides")
    return {
        "method": "rtn",
        "quant": quant,
        "overrides": "",
        "method_values": {},
        "calib": 256,
        "seed": 0,
        "batch_size": 128,
        "eval_limit": runs.default_eval_limit() or 2000,
        "cat_on": False,
        "cat": CATOptions().to_dict(),
    }


def _merge(into: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    for key, value in defaults.items():
        if key not in into:
            into[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(into[key], dict) and key != "method_values":
            _merge(into[key], value)
    return into


def form() -> dict[str, Any]:
    """The session's run form, completed with defaults (a partial form set by a test or a page is kept)."""
    return _merge(st.session_state.setdefault(FORM, {}), _defaults())


def _get(path: tuple[str, ...]) -> Any:
    node: Any = form()
    for key in path:
        node = node[key]
    return node


def _set(path: tuple[str, ...], value: Any) -> None:
    node: Any = form()
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def _bind(
    wkey: str,
    path: tuple[str, ...],
    show: Callable[[Any], Any] = lambda v: v,
    read: Callable[[Any], Any] = lambda v: v,
    after: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Widget kwargs that draw form entry `path` and write the user's change back (and only that).

    `show` maps the stored value to the widget's (e.g. clamped to what the data allows),
    `read` the widget's value back; `after` runs after a change (e.g. a preset loads its values).
    """
    st.session_state[wkey] = show(_get(path))

    def changed() -> None:
        _set(path, read(st.session_state[wkey]))
        if after is not None:
            after()

    return {"key": wkey, "on_change": changed}


def _method_values(cls: type[MethodConfig]) -> dict[str, Any]:
    """The form's values of a method's own fields, filled from its default preset the first time."""
    values = form()["method_values"]
    if cls.method not in values:
        values[cls.method] = _preset_values(cls, "fast" if _has_preset(cls) else None)
    return values[cls.method]


def _has_preset(cls: type[MethodConfig]) -> bool:
    return hasattr(cls, "from_preset") and any(s.name == "preset" for s in settings(cls))


def _preset_values(cls: type[MethodConfig], preset: str | None) -> dict[str, Any]:
    base = cls.from_preset(preset) if preset else cls()
    return {s.name: getattr(base, s.name) for s in settings(cls) if s.name not in SHARED}


def _load_preset(cls: type[MethodConfig]) -> None:
    """A preset (or a method) was chosen: its values and calibration size replace the form's."""
    if not _has_preset(cls):
        return
    preset = _method_values(cls).get("preset", "fast")
    form()["method_values"][cls.method] = _preset_values(cls, preset)
    form()["calib"] = cls.from_preset(preset).calib


def _method_chosen(cls: type[MethodConfig]) -> None:
    """A method was chosen: its values are kept (or made from its default preset) and its preset's
    calibration size becomes the form's."""
    values = _method_values(cls)
    if _has_preset(cls):
        form()["calib"] = cls.from_preset(values["preset"]).calib


# -- the spec the form makes ----------------------------------------------------------------------


@dataclass
class Draft:
    """What Run would start: the spec, or the reasons it cannot be made; notes on what was adapted."""

    spec: RunSpec | None
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _quant(layer_names: Sequence[str] | None, errors: list[str], with_overrides: bool = True) -> QuantSpec:
    f = form()
    overrides: dict[str, dict[str, int]] = {}
    if with_overrides:
        try:
            overrides = parse_overrides(f["overrides"], layer_names)
        except PTQError as exc:
            errors.append(f"Per-layer overrides: {exc}")
    known = {s.name for s in settings(QuantSpec)}
    return QuantSpec(**{k: v for k, v in f["quant"].items() if k in known}, overrides=overrides)


def draft(sel: Selection, layer_names: Sequence[str] | None, max_calib: int) -> Draft:
    """The `RunSpec` of the form for `sel` (whose data holds `max_calib` calibration images)."""
    f = form()
    errors: list[str] = []
    notes: list[str] = []
    quant = _quant(layer_names, errors)
    calib = int(f["calib"])
    if calib > max_calib:
        notes.append(
            f"The data has {max_calib:,} calibration images: this run uses {max_calib:,} of the {calib:,} "
            "asked for (your choice is kept for other data)."
        )
        calib = max_calib
    if errors:
        return Draft(None, errors, notes)
    cls = METHODS[f["method"]][0]
    own = dict(_method_values(cls))
    try:
        config = make_config(
            cls.method, quant=quant, calib=calib, seed=int(f["seed"]), batch_size=int(f["batch_size"]), **own
        )
        cat = CATOptions.from_dict(f["cat"]) if f["cat_on"] else None
        spec = RunSpec(
            model=sel.model,
            weights=sel.weights,
            data=sel.data,
            device=sel.device,
            method=config,
            cat=cat,
            eval_limit=int(f["eval_limit"]) or None,
        )
    except PTQError as exc:
        return Draft(None, [str(exc)], notes)
    return Draft(spec, errors, notes)


def current_spec(layer_names: Sequence[str] | None = None, overrides: bool = True) -> QuantSpec:
    """The Quantize page's quantization settings for the other pages (defaults when they are invalid).

    Override patterns that match none of `layer_names` are dropped (they belong to another model);
    `overrides=False` leaves them out altogether.
    """
    errors: list[str] = []
    spec = _quant(None, errors, overrides)
    if errors:
        spec = _quant(None, [], False)
    if layer_names is not None and spec.overrides:
        drop = set(unmatched_patterns(spec.overrides, layer_names))
        spec.overrides = {p: b for p, b in spec.overrides.items() if p not in drop}
    return spec


def set_overrides(text: str) -> None:
    """Put per-layer overrides into the form (e.g. a mixed-precision allocation from another page)."""
    form()["overrides"] = text


def apply_fix(action: dict[str, Any]) -> str:
    """Fill the form with a diagnosis fix: settings changed, or its override line added (replacing the
    line of the same pattern). Returns what changed, in words."""
    if action["kind"] == "settings":
        for name, value in action["changes"].items():
            _set(("quant", name), value)
        return ", ".join(f"{k} = {v}" for k, v in action["changes"].items())
    pattern = action["text"].rpartition("=")[0]
    lines = [ln for ln in form()["overrides"].splitlines() if ln.split("#")[0].rpartition("=")[0].strip() != pattern]
    set_overrides("\n".join([*[ln for ln in lines if ln.strip()], action["text"]]))
    return f"override {action['text']}"


# -- widgets ---------------------------------------------------------------------------------------


def bits_format(bits: int) -> str:
    """A bit-width as a choice reads it: 32 is "32 (float)"."""
    return "32 (float)" if bits == FLOAT_BITS else str(bits)


def _method_ui() -> type[MethodConfig]:
    names = list(METHODS)
    if form()["method"] not in names:
        form()["method"] = "rtn"
    cls_of = lambda: METHODS[form()["method"]][0]  # noqa: E731
    st.selectbox(
        "Method",
        names,
        help="Every method registered in ptq_core.methods.",
        **_bind("w_q_method", ("method",), after=lambda: _method_chosen(cls_of())),
    )
    cls = cls_of()
    doc = (cls.__doc__ or "").strip().splitlines()
    if doc:
        st.caption(doc[0])
    return cls


def _quant_ui() -> None:
    q = ("quant",)
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Weight bits", BIT_CHOICES, format_func=bits_format, **_bind("w_q_wbits", (*q, "wbits")))
    c1.selectbox("Activation bits", BIT_CHOICES, format_func=bits_format, **_bind("w_q_abits", (*q, "abits")))
    c2.selectbox(
        "Weight observer",
        list(OBSERVERS),
        help="How the range is chosen: min-max, a percentile, or the range that minimises the Lp error (mse).",
        **_bind("w_q_w_observer", (*q, "w_observer")),
    )
    c2.selectbox("Activation observer", list(OBSERVERS), **_bind("w_q_a_observer", (*q, "a_observer")))
    grains = ["per-channel", "per-tensor"]
    c3.radio(
        "Weight granularity",
        grains,
        **_bind(
            "w_q_granularity",
            (*q, "w_per_channel"),
            show=lambda v: grains[0] if v else grains[1],
            read=lambda v: v == grains[0],
        ),
    )
    labels = {v: k for k, v in FIRST_LAST.items()}
    c3.selectbox(
        "First/last layer",
        list(FIRST_LAST),
        help="The first and last layers are the most sensitive; 8-bit is the usual policy.",
        **_bind("w_q_first_last", (*q, "first_last_bits"), show=lambda v: labels.get(v, "8-bit"), read=FIRST_LAST.get),
    )
    c4, c5, c6 = st.columns(3)
    c4.checkbox("Symmetric weights", **_bind("w_q_w_symmetric", (*q, "w_symmetric")))
    c5.checkbox("Symmetric activations", **_bind("w_q_a_symmetric", (*q, "a_symmetric")))
    c6.checkbox("Fold BatchNorm", **_bind("w_q_fold_bn", (*q, "fold_bn")))
    for s in settings(QuantSpec):  # a field added to QuantSpec later is drawn here with no other edit
        if s.name not in _QUANT_DRAWN:
            _field_widget(s, f"w_q_{s.name}", (*q, s.name))
    st.text_area(
        "Per-layer overrides (one `pattern=W/A` per line)",
        placeholder="layer3.*=8/8\nfc=8/32",
        help="fnmatch patterns over layer names; 32 keeps that side float.",
        **_bind("w_q_overrides", ("overrides",)),
    )


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _field_widget(s: Setting, wkey: str, path: tuple[str, ...], after: Callable[[], None] | None = None) -> None:
    """One widget for one described field, chosen by its type; an optional one gets a switch first."""
    if s.optional:
        on_key = f"{wkey}__on"
        fallback = s.default if s.default is not None else (s.min if s.min is not None else s.kind())

        def toggled() -> None:
            _set(path, (fallback if _get(path) is None else _get(path)) if st.session_state[on_key] else None)

        st.session_state[on_key] = _get(path) is not None
        st.checkbox(f"Set {s.name.replace('_', ' ')}", key=on_key, on_change=toggled, help=s.help)
        if _get(path) is None:
            return
    if typing.get_origin(s.kind) is list:  # e.g. name patterns: one per line
        st.text_area(
            _label(s.name) + " (one per line)",
            help=s.help,
            **_bind(
                wkey,
                path,
                show="\n".join,
                read=lambda text: [line.strip() for line in text.splitlines() if line.strip()],
                after=after,
            ),
        )
        return
    kw = {"help": s.help, **_bind(wkey, path, after=after)}
    if s.choices:
        st.selectbox(_label(s.name), list(s.choices), **kw)
    elif s.kind is bool:
        st.checkbox(_label(s.name), **kw)
    elif s.kind in (int, float):
        bounds = {k: s.kind(getattr(s, k)) for k in ("min", "max") if getattr(s, k) is not None}
        st.number_input(
            _label(s.name),
            min_value=bounds.get("min"),
            max_value=bounds.get("max"),
            step=1 if s.kind is int else None,
            format=None if s.kind is int else "%g",
            **kw,
        )
    else:
        st.text_input(_label(s.name), **kw)


def _method_fields_ui(cls: type[MethodConfig]) -> None:
    own = [s for s in settings(cls) if s.name not in SHARED]
    if not own:
        st.caption("This method has no settings beyond the shared ones.")
        return
    _method_values(cls)
    st.markdown(f"**{cls.method} settings**")
    path = ("method_values", cls.method)
    for s in own:
        if s.name == "preset":
            _field_widget(s, f"w_qm_{cls.method}_preset", (*path, "preset"), after=lambda: _load_preset(cls))
            own.remove(s)
            break
    cols = st.columns(min(3, len(own)))
    for i, s in enumerate(own):
        with cols[i % len(cols)]:
            _field_widget(s, f"w_qm_{cls.method}_{s.name}", (*path, s.name))


def _run_settings_ui(max_calib: int) -> None:
    c1, c2, c3, c4 = st.columns(4)
    top = max(1, max_calib)
    c1.number_input(
        "Calibration images",
        1,
        top,
        step=64,
        help=f"At most {max_calib:,} with this data.",
        **_bind("w_q_calib", ("calib",), show=lambda v: min(int(v), top)),
    )
    c2.number_input("Seed", 0, 2**31 - 1, step=1, **_bind("w_q_seed", ("seed",)))
    c3.number_input("Batch size", 1, 4096, step=32, **_bind("w_q_batch_size", ("batch_size",)))
    env = runs.default_eval_limit()
    limits = EVAL_LIMITS if env is None else sorted({env, *EVAL_LIMITS[:-1]}) + [0]
    fmt = lambda n: "all" if n == 0 else f"first {n:,}"  # noqa: E731
    c4.selectbox(
        "Test images",
        limits,
        format_func=fmt,
        help="Fewer is faster; every accuracy says how many.",
        **_bind("w_q_eval_limit", ("eval_limit",), show=lambda v: v if v in limits else limits[0]),
    )


def _cat_ui() -> None:
    st.toggle(
        "Add CAT after the method",
        help="Cluster the quantized logits and correct each cluster with a "
        "closed-form scale and shift per class, fitted on calibration-split images the method did not use.",
        **_bind("w_q_cat", ("cat_on",)),
    )
    if not form()["cat_on"]:
        return
    shown = ("k", "alpha", "pca")
    cols = st.columns(len(shown))
    rest = []
    for s in settings(CATOptions):
        if s.name in shown:
            with cols[shown.index(s.name)]:
                _field_widget(s, f"w_q_cat_{s.name}", ("cat", s.name))
        else:
            rest.append(s)
    with st.expander("More CAT settings"):
        for s in rest:
            _field_widget(s, f"w_q_cat_{s.name}", ("cat", s.name))


def run_form_ui(sel: Selection, layer_names: Sequence[str] | None, max_calib: int) -> Draft:
    """Draw the whole form (never stopping half way) and return its draft."""
    form()
    cls = _method_ui()
    _quant_ui()
    _method_fields_ui(cls)
    _run_settings_ui(max_calib)
    _cat_ui()
    return draft(sel, layer_names, max_calib)
