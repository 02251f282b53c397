"""The Streamlit side of ptq-explorer, laid out by role. No module here imports torch.

- `state` (the session's selections), `jobs` (background work and its queue),
  `resources` (the only `st.cache_resource`: shared models, data, RTN models, run store);
- `services/` (`st.cache_data` doors, one public `ptq_core` call each, returning plain
  data): `runs`, `uploads`, `explore`, `diagnose`, `cat`, `learn`;
- `widgets/`: `persist` (widget values that outlive a page), `errors`, `job_panel`,
  `forms` (the run form), `pickers`, `findings`;
- `charts/`: `base` (palette, layout, Plotly `CONFIG`) and one module per area.

The torch computation behind the views lives in `ptq_core.explain`; `ptq_core` never
imports this package.

How to add a page:

1. Write `pages/<name>.py` (widgets from `ptq_ui.widgets`, drawing only) and add its
   `st.Page("pages/<name>.py", title=...)` entry to `PAGES` in `app.py`.
2. Add a service function to the area's module in `ptq_ui/services/`: an `st.cache_data`
   door that takes plain values and makes one public `ptq_core` call (new torch code goes
   into `ptq_core/explain/`, with its core test).
3. Add a figure builder to the area's module in `ptq_ui/charts/` (plain data in, a Plotly
   figure out, laid out with `charts.base.layout`); the page draws it with
   `config=charts.base.CONFIG`.
4. Add an AppTest in `tests/` that opens the page on the tiny model and checks what it drew.
"""
