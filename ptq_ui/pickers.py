"""Widget groups that choose what to work on (model, weights, data, device) and the shared sidebar."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from . import bridge
from .state import selection, set_weights
from .widgets import errors_shown, keep, seeded, show_error

__all__ = ["model_ui", "weights_upload_ui", "data_ui", "device_ui", "sidebar_ui", "require_model"]

SOURCES = {"zoo": "Zoo (Fashion-MNIST)", "torchvision": "torchvision (ImageNet)", "custom": "Your own model"}
DATA_KINDS = {"fmnist-sample": "Embedded sample (no download)", "fmnist-full": "Full Fashion-MNIST",
              "imagefolder": "ImageFolder path"}  # fmt: skip


def _entries(source: str) -> list[dict[str, Any]]:
    return [e for e in bridge.model_entries() if e["source"] == source]


def _weights_status(name: str, entry: dict[str, Any]) -> None:
    """Where the weights of a named model stand, and how to fix it."""
    if selection().weights:
        st.info(f"{name} uses your uploaded weights (see below).")
    elif entry["status"] == "missing":
        st.warning(f"The checkpoint of {name} is not there yet: {entry['detail']}. "
                   "Upload your own weights for this architecture below, or pick another model.")  # fmt: skip
    elif entry["status"] == "not cached":
        st.warning(f"Pretrained weights of {name} are not cached: it {entry['detail']}. Without network, "
                   "download that file on another machine and copy it to that path (or upload a state_dict "
                   "below). torchvision models expect ImageNet-style data: pick an ImageFolder below.")  # fmt: skip
        if st.button("Try to download the weights now (needs network)", key="tv_download"):
            st.session_state["allow_download"] = True


def _pick_named(source: str) -> None:
    """Zoo or torchvision picker with each model's weights status and an optional weights upload."""
    entries = {e["name"]: e for e in _entries(source)}
    names = list(entries)
    fmt = lambda n: f"{n} ({entries[n]['status']})"  # noqa: E731
    name = keep("model", st.selectbox("Model", names, key=seeded("model", names), format_func=fmt))
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
    """Upload a state_dict (.safetensors, or a .pt/.pth loaded without running code) for `model`."""
    label = "Weights (state_dict)" + ("" if required else " — optional, replaces the default weights")
    upload = st.file_uploader(label, type=["safetensors", "pt", "pth", "bin"], key=f"upload:{model}",
                              max_upload_size=bridge.MAX_UPLOAD_MB,
                              help=f"Up to {bridge.MAX_UPLOAD_MB} MB. Checked by content; pickles that "
                                   "need code to load are refused.")  # fmt: skip
    if upload is not None:
        try:
            set_weights(model, bridge.save_upload(upload.getvalue(), upload.name))
            st.success(f"{upload.name}: a valid state_dict, attached to {model}.")
        except bridge.PTQError as exc:
            set_weights(model, None)
            show_error(exc)
    elif st.session_state.get("weights_for") == model and st.session_state.get("weights"):
        st.caption(f"Using uploaded weights {st.session_state['weights']}")
        if st.button("Forget the uploaded weights", key=f"forget:{model}"):
            set_weights(model, None)
            st.rerun()


def model_ui() -> None:
    """Source (zoo / torchvision / own file), model and optional or required weights."""
    source = keep("model_source", st.radio("Model source", list(SOURCES), key=seeded("model_source", list(SOURCES)),
                                           format_func=SOURCES.get, horizontal=True))  # fmt: skip
    if source in ("zoo", "torchvision"):
        _pick_named(source)
        return
    st.caption("Give a Python file and a no-argument function or class in it that builds the model, then upload "
               "its weights. The file's code runs in this app: only use your own files.")  # fmt: skip
    spec = st.text_input("Model factory (`path/to/file.py:factory`)", key=seeded("custom_factory", default=""))
    keep("custom_factory", spec)
    if spec.strip():
        if ".py:" not in spec:
            st.error("The factory must look like path/to/file.py:factory")
            st.stop()
        keep("model", spec.strip())
        weights_upload_ui(spec.strip(), required=True)
        if selection().weights is None:
            st.info("Upload the model's weights to continue.")
            st.stop()
    else:
        st.info("Enter the model factory to continue.")
        st.stop()


def data_ui() -> None:
    """Embedded sample, full Fashion-MNIST, or an ImageFolder path."""
    kinds = list(DATA_KINDS)
    kind = keep("data_kind", st.radio("Data", kinds, key=seeded("data_kind", kinds), format_func=DATA_KINDS.get,
                                      horizontal=True))  # fmt: skip
    if kind == "imagefolder":
        folder = keep("data_folder", st.text_input("Folder with one sub-folder per class",
                                                   key=seeded("data_folder"), placeholder="/data/imagenet/val"))
        if not folder.strip():
            st.info("Enter a folder to use ImageFolder data.")
            st.stop()
        keep("data", f"imagefolder:{folder.strip()}")
    else:
        keep("data", kind)


def device_ui() -> None:
    """auto / cpu / cuda (cuda only offered when a GPU is present)."""
    options = ["auto", "cpu"] + (["cuda"] if bridge.cuda_available() else [])
    device = keep("device", st.radio("Device", options, key=seeded("device", options), horizontal=True))
    if not bridge.cuda_available():
        st.caption("cuda: not available (no GPU found on this machine).")
    st.caption(f"Runs on: {bridge.device_label(device)}")


def sidebar_ui() -> None:
    """Current model, data, device, a running job and the last saved run."""
    sel = selection()
    with st.container():
        st.markdown("**Working on**")
        weights = " (own weights)" if sel.weights else ""
        st.caption(f"Model: `{sel.model}`{weights}  \nData: `{sel.data}`  \nDevice: {bridge.device_label(sel.device)}")
        job = st.session_state.get("job")
        if job is not None and job.running:
            st.caption(f":material/hourglass_top: Running: {job.label}")
        try:
            last = bridge.list_runs(limit=1)
        except bridge.PTQError as exc:
            st.caption(f"Run store unavailable: {exc}")
            return
        if last:
            r = last[0]
            when = time.strftime("%H:%M", time.localtime(r.created))
            top1 = r.metrics.get("top1")
            acc = f" · top-1 {top1:.2f}%" if isinstance(top1, (int, float)) else ""
            st.caption(f"Last run ({when}): {r.method} {r.bits_label} on {r.model} — {r.status}{acc}")


def require_model(allow_download: bool = False, explain: bool = True) -> dict[str, Any]:
    """Load the selected model and data, or explain why not and stop the page.

    A zoo checkpoint that is missing, or torchvision weights that are not cached, stop
    the page with the fix (unless `explain` is False: the caller has shown it); downloading
    is only tried when `allow_download` (a button).
    """
    sel = selection()
    entry = next((e for e in bridge.model_entries() if e["name"] == sel.model), None)
    if entry is not None and sel.weights is None:
        problem = {"missing": f"{sel.model} has no checkpoint yet ({entry['detail']}).",
                   "not cached": f"{sel.model}: pretrained weights are not cached; it {entry['detail']}."}  # fmt: skip
        if entry["status"] in problem and not (allow_download and entry["status"] == "not cached"):
            if explain:
                st.warning(problem[entry["status"]] + " Pick another model, or upload weights, on the "
                           "Model & data page.")  # fmt: skip
            st.stop()
    with errors_shown():
        info = bridge.loaded_info(sel)
    if entry is not None and entry["status"] == "not cached":
        bridge.model_entries.clear()  # the download just happened
    return info
