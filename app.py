"""ptq-explorer: the Streamlit entry point. It only routes: page config, navigation, shared sidebar."""

from __future__ import annotations

import streamlit as st

from ptq_ui.pickers import sidebar_ui
from ptq_ui.state import init_state

PAGES = {
    "Explore": [
        st.Page("pages/model_data.py", title="Model & data", icon=":material/memory:", default=True),
        st.Page("pages/quantize.py", title="Quantize", icon=":material/tune:"),
    ],
    "Diagnose": [
        st.Page("pages/layer_errors.py", title="Layer errors", icon=":material/stacked_line_chart:"),
        st.Page("pages/compare_runs.py", title="Compare runs", icon=":material/compare_arrows:"),
        st.Page("pages/sensitivity.py", title="Sensitivity & diagnosis", icon=":material/troubleshoot:"),
        st.Page("pages/outlier_channels.py", title="Outlier channels", icon=":material/scatter_plot:"),
        st.Page("pages/activation_clusters.py", title="Activation clusters", icon=":material/bubble_chart:"),
        st.Page("pages/cat_corrections.py", title="CAT corrections", icon=":material/scatter_plot:"),
    ],
    "Learn": [
        st.Page("pages/learn_quantizer.py", title="Learn: the quantizer", icon=":material/school:"),
        st.Page("pages/learn_adaround.py", title="Learn: AdaRound", icon=":material/swap_vert:"),
        st.Page("pages/learn_qdrop.py", title="Learn: QDrop", icon=":material/shuffle:"),
        st.Page("pages/learn_multipoint.py", title="Learn: multipoint", icon=":material/stacks:"),
        st.Page("pages/learn_cat.py", title="Learn: CAT", icon=":material/hub:"),
    ],
}


def run() -> None:
    """Configure the page, draw the shared sidebar, run the selected page."""
    st.set_page_config(page_title="ptq-explorer", page_icon=":material/straighten:", layout="wide")
    init_state()
    page = st.navigation(PAGES)
    slot = st.sidebar.container()
    try:
        page.run()
    finally:  # drawn last so it shows the choices the page just made (also after st.stop)
        with slot:
            sidebar_ui()


run()
