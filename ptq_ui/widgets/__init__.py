"""Streamlit widget helpers shared by the pages.

`persist` (a widget whose value outlives its page), `errors` (one-line messages),
`job_panel` (the panel of every background job), `forms` (the run form), `pickers`
(model, data, device, identity and the shared sidebar), `findings` (diagnosis tables).
The helpers every page uses are importable from here.
"""

from __future__ import annotations

from .errors import errors_shown, literal, one_line, show_error
from .job_panel import finished_job, job_panel
from .persist import persistent

__all__ = ["errors_shown", "finished_job", "job_panel", "literal", "one_line", "persistent", "show_error"]
