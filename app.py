"""ptq-explorer: the Streamlit entry point. It only routes: page config, navigation, shared sidebar."""

from __future__ import annotations

import streamlit as st

from ptq_ui.state import init_state
from ptq_ui.widgets.pickers import sidebar_ui

# No page icons: Material icons (":material/...:") make the browser fetch an icon font from the internet,
# and this app must work offline without a request leaving the machine.
PAGES = {
    "Explore": [
        st.Page("pages/model_data.py", title="Model & data", default=True),
        st.Page("pages/quantize.py", title="Quantize"),
    ],
    "Diagnose": [
        st.Page("pages/layer_errors.py", title="Layer errors"),
        st.Page("pages/compare_runs.py", title="Compare runs"),
        st.Page("pages/sensitivity.py", title="Sensitivity & diagnosis"),
        st.Page("pages/outlier_channels.py", title="Outlier channels"),
        st.Page("pages/activation_clusters.py", title="Activation clusters"),
        st.Page("pages/cat_corrections.py", title="CAT corrections"),
    ],
    "Learn": [
        st.Page("pages/learn_quantizer.py", title="Learn: the quantizer"),
        st.Page("pages/learn_adaround.py", title="Learn: AdaRound"),
        st.Page("pages/learn_qdrop.py", title="Learn: QDrop"),
        st.Page("pages/learn_multipoint.py", title="Learn: multipoint"),
        st.Page("pages/learn_cat.py", title="Learn: CAT"),
    ],
}


def run() -> None:
    """Configure the page, draw the shared sidebar, run the selected page."""
    st.set_page_config(page_title="ptq-explorer", layout="wide")
    init_state()
    page = st.navigation(PAGES)
    slot = st.sidebar.container()
    try:
        page.run()
    finally:  # drawn last so it shows the choices the page just made (also after st.stop)
        with slot:
            sidebar_ui()


run()
