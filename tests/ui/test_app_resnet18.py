"""The app on the zoo's real-size network: its data are resized for it (3x64x64), not refused."""

from __future__ import annotations

from tests.support.app_support import assert_clean, metric, new_app


def test_the_pages_feed_resnet18_its_resized_images(app_env):
    at = new_app(None, "pages/model_data.py", timeout=600, model="fmnist-resnet18", model_source="zoo")
    assert_clean(at)
    assert metric(at, "Parameters") == "11,181,642" and metric(at, "Quantized layers") == "21"
    at.switch_page("pages/outlier_channels.py").run()
    assert_clean(at)
    assert len(at.selectbox(key="w_oc_layer").options) == 21
