"""The Streamlit side of ptq-explorer: bridge (caching + core calls), jobs, charts, widgets.

Pages import only this package (never torch or ptq_core directly); `ptq_core`
never imports it.
"""
