"""Widget groups that choose what to work on (model, weights, data, device) and the shared sidebar."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import streamlit as st

from ptq_core.serving import allowed_model_dirs

from ..services import runs, uploads
from ..state import clean_name, owner, selection, set_weights
from .errors import errors_shown, literal, one_line, show_error
from .persist import persistent

__all__ = ["model_ui", "weights_upload_ui", "data_ui", "device_ui", "sidebar_ui", "require_model"]

SOURCES = {"zoo": "Zoo (Fashion-MNIST)", "torchvision": "torchvision (ImageNet)", "custom": "Your own model"}
DATA_KINDS = {
    "fmnist-sample": "Embedded sample (no download)",
    "fmnist-full": "Full Fashion-MNIST",
    "imagefolder": "ImageFolder path",
}


def _entries(source: str) -> list[dict[str, Any]]:
    return [e for e in runs.model_entries() if e["source"] == source]


def _weights_status(name: str, entry: dict[str, Any]) -> None:
    """Where the weights of a named model stand, and how to fix it."""
    if selection().weights:
        st.info(f"{name} uses your uploaded weights (see below).")
    elif entry["status"] == "missing":
        st.warning(
            f"The checkpoint of {name} is not there yet: {entry['detail']}. "
            "Upload your own weights for this architecture below, or pick another model."
        )
    elif entry["status"] == "not cached":
        st.warning(
            f"Pretrained weights of {name} are not cached: it {entry['detail']}. Without network, "
            "download that file on another machine and copy it to that path (or upload a state_dict "
            "below). torchvision models expect ImageNet-style data: pick an ImageFolder below."
        )
        if st.button("Try to download the weights now (needs network)", key="tv_download"):
            st.session_state["allow_download"] = True


def _pick_named(source: str) -> None:
    """Zoo or torchvision picker with each model's weights status and an optional weights upload."""
    entries = {e["name"]: e for e in _entries(source)}
    names = list(entries)
    fmt = lambda n: f"{n} ({entries[n]['status']})"  # noqa: E731
    name = persistent(st.selectbox, "model", "Model", names, format_func=fmt, options=names)
    status = st.container()  # filled after the upload below has been handled
    with st.expander("Use your own weights for this architecture"):
        weights_upload_ui(name, required=False)
    with status:
        _weights_status(name, entries[name])
    if source == "torchvision":
        rows = [{"model": e["name"], "weights": e["status"], "where / how": e["detail"]} for e in entries.values()]
        with st.expander("Weights status of every torchvision model"):
            st.dataframe(rows, hide_index=True)


def weights_upload_ui(model: str, required: bool) -> None:
    """Upload a state_dict (.safetensors, or a .pt/.pth loaded without running code) for `model`.

    The file is kept in this session's folder and loaded into `model` before it is attached:
    a file that does not fit shows only its error.
    """
    label = "Weights (state_dict)" + ("" if required else " — optional, replaces the default weights")
    upload = st.file_uploader(
        label,
        type=["safetensors", "pt", "pth", "bin"],
        key=f"upload:{model}",
        max_upload_size=uploads.MAX_UPLOAD_MB,
        help=f"Up to {uploads.MAX_UPLOAD_MB} MB. Checked by content; pickles that need code to load are refused.",
    )
    if upload is not None:
        try:
            path = uploads.save_upload(upload.getvalue(), upload.name)
            uploads.check_weights(model, path, st.session_state["device"])
        except runs.PTQError as exc:
            set_weights(model, None)
            show_error(exc)
        except Exception as exc:  # noqa: BLE001 - the user's model code: show its message
            set_weights(model, None)
            st.error(literal(one_line(exc)))
        else:
            set_weights(model, path)
            st.success(literal(f"{upload.name}: a state_dict that fits {uploads.model_label(model)}, attached."))
    elif st.session_state.get("weights_for") == model and st.session_state.get("weights"):
        st.caption("Using your uploaded weights.")
        if st.button("Forget the uploaded weights", key=f"forget:{model}"):
            set_weights(model, None)
            st.rerun()


OWN_WAYS = {"upload": "Upload a .py file", "server": "A file on the server"}


def _own_model_name() -> str | None:
    """The `file.py:factory` name of the user's own model, or None (with the reason shown)."""
    ways = [w for w, on in (("upload", uploads.uploaded_code_allowed()), ("server", bool(allowed_model_dirs()))) if on]
    if not ways:
        st.info(
            "Your own model code is off on this server. Its operator can allow uploaded model files "
            "(PTQ_ALLOW_UPLOADED_CODE=1) or model files from named folders (PTQ_ALLOWED_MODEL_DIRS)."
        )
        return None
    st.caption(
        "A Python file with a no-argument function or class that builds the model, then its weights. "
        "The file's code runs in this app's server."
    )
    way = (
        ways[0]
        if len(ways) == 1
        else persistent(
            st.radio, "own_way", "Model file", ways, format_func=OWN_WAYS.get, horizontal=True, options=ways
        )
    )
    if way == "server":
        st.caption("Allowed folders: " + ", ".join(f"`{d}`" for d in allowed_model_dirs()))
        label = "Model factory (`path/to/file.py:factory`)"
        spec = persistent(st.text_input, "custom_factory", label, default="").strip()
        if not spec:
            st.info("Enter the model factory to continue.")
            return None
        if ".py:" not in spec:
            st.error("The factory must look like path/to/file.py:factory")
            return None
        return spec
    code = st.file_uploader("Model file (.py)", type=["py"], key="code_upload", help="Kept for this session only.")
    attr = persistent(st.text_input, "custom_attr", "Function or class that builds the model", default="build").strip()
    if code is not None:
        try:
            st.session_state["custom_code"] = uploads.save_code_upload(code.getvalue(), code.name)
        except runs.PTQError as exc:
            st.session_state["custom_code"] = None
            show_error(exc)
            return None
    path = st.session_state.get("custom_code")
    if not path or not Path(path).is_file():
        st.info("Upload the model's .py file to continue.")
        return None
    if not attr.isidentifier():
        st.error(literal(f"{attr!r} is not a Python name: give the function or class that builds the model"))
        return None
    return f"{path}:{attr}"


def model_ui() -> bool:
    """Source (zoo / torchvision / own file), model and optional or required weights; False when incomplete."""
    source = persistent(
        st.radio,
        "model_source",
        "Model source",
        list(SOURCES),
        format_func=SOURCES.get,
        horizontal=True,
        options=list(SOURCES),
    )
    if source in ("zoo", "torchvision"):
        _pick_named(source)
        return True
    name = _own_model_name()
    if name is None:
        return False
    st.session_state["model"] = name
    weights_upload_ui(name, required=True)
    if selection().weights is None:
        st.info("Upload the model's weights to continue.")
        return False
    return True


def data_ui() -> bool:
    """Embedded sample, full Fashion-MNIST, or an ImageFolder path; False while the folder is missing.

    Only the data changes here: the model source and model stay as they are.
    """
    kinds = list(DATA_KINDS)
    kind = persistent(st.radio, "data_kind", "Data", kinds, format_func=DATA_KINDS.get, horizontal=True, options=kinds)
    if kind == "imagefolder":
        folder = persistent(
            st.text_input, "data_folder", "Folder with one sub-folder per class", placeholder="/data/imagenet/val"
        )
        if not folder.strip():
            st.info("Enter a folder to use ImageFolder data.")
            return False
        st.session_state["data"] = f"imagefolder:{folder.strip()}"
    else:
        st.session_state["data"] = kind
    return True


def device_ui() -> None:
    """auto / cpu / cuda (cuda only offered when a GPU is present)."""
    options = ["auto", "cpu"] + (["cuda"] if runs.cuda_available() else [])
    device = persistent(st.radio, "device", "Device", options, horizontal=True, options=options)
    if not runs.cuda_available():
        st.caption("cuda: not available (no GPU found on this machine).")
    st.caption(f"Runs on: {runs.device_label(device)}")


def _name_changed() -> None:
    st.session_state["user_name"] = clean_name(st.session_state["w_user_name"])


def identity_ui() -> None:
    """Who this session is: an optional name (runs started under it are theirs), else the session."""
    st.session_state.setdefault("w_user_name", st.session_state.get("user_name", ""))
    st.text_input(
        "Your name (optional)",
        key="w_user_name",
        on_change=_name_changed,
        help="Runs you start are yours: only you can delete them, and your last run is shown here. "
        "Without a name they belong to this browser tab until it is closed. A name is not a "
        "password: anyone who types it acts as you.",
    )
    st.caption(f"You are {literal(owner())}")


def sidebar_ui() -> None:
    """Who you are, current model, data, device, your job and your last saved run."""
    sel = selection()
    with st.container():
        identity_ui()
        st.markdown("**Working on**")
        weights = " (own weights)" if sel.weights else ""
        st.caption(
            f"Model: `{uploads.model_label(sel.model)}`{weights}  \nData: `{sel.data}`  \n"
            f"Device: {runs.device_label(sel.device)}"
        )
        job = st.session_state.get("job")
        if job is not None and job.running:
            snap = job.snapshot()
            where = f"queued, place {snap.position}" if snap.position else "running"
            st.caption(f"Your job ({where}): {literal(job.label)}")
        try:
            last = runs.list_runs(limit=1, owner=owner())
        except runs.PTQError as exc:
            st.caption(f"Run store unavailable: {exc}")
            return
        if last:
            r = last[0]
            when = time.strftime("%H:%M", time.localtime(r.created))
            top1 = r.metrics.get("top1")
            acc = f" · top-1 {top1:.2f}%" if isinstance(top1, (int, float)) else ""
            model = uploads.model_label(r.model)
            st.caption(
                literal(f"Your last run {r.run_id} ({when}): {r.method} {r.bits_label} on {model} — {r.status}{acc}")
            )


def require_model(allow_download: bool = False, explain: bool = True) -> dict[str, Any]:
    """Load the selected model and data, or explain why not and stop the page.

    A zoo checkpoint that is missing, or torchvision weights that are not cached, stop
    the page with the fix (unless `explain` is False: the caller has shown it); downloading
    is only tried when `allow_download` (a button).
    """
    sel = selection()
    entry = next((e for e in runs.model_entries() if e["name"] == sel.model), None)
    if entry is not None and sel.weights is None:
        problem = {
            "missing": f"{sel.model} has no checkpoint yet ({entry['detail']}).",
            "not cached": f"{sel.model}: pretrained weights are not cached; it {entry['detail']}.",
        }
        if entry["status"] in problem and not (allow_download and entry["status"] == "not cached"):
            if explain:
                st.warning(
                    problem[entry["status"]] + " Pick another model, or upload weights, on the Model & data page."
                )
            st.stop()
    with errors_shown():
        info = runs.loaded_info(sel)
    if entry is not None and entry["status"] == "not cached":
        runs.model_entries.clear()  # the download just happened
    return info
