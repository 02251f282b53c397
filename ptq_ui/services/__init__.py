"""The `st.cache_data` doors into `ptq_core`, one module per area: each public function takes plain values
(a `Selection`, numbers, strings), makes one public core call under a plain cache key, and returns plain
data (numbers, lists, dicts, numpy arrays, records).

`runs` (model list, run store, run/export/report jobs), `uploads`, `explore` (Model & data and the
quantizer), `diagnose`, `cat` (CAT corrections), `learn` (the Learn pages).
"""
