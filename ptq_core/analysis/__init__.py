"""Analyses behind the app's Diagnose pages: pure functions over (model, data, settings).

Each module is one analysis (channel ranges and outliers, activation clusters,
per-layer sensitivity, automatic diagnosis, mixed-precision allocation). None of
them changes the model it is given: quantized views are built on copies.
"""
