"""The committed demo detector really detects: mAP@0.5 on freshly generated scenes."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

pytest.importorskip("keras")
pytest.importorskip("cv2")

from converter.train_demo import evaluate  # noqa: E402
from converter.zoo import DEMO_WEIGHTS, demo_model  # noqa: E402


def test_demo_weights_are_small_and_reach_the_target_map():
    assert DEMO_WEIGHTS.stat().st_size < 10e6
    result = evaluate(demo_model(), images=150, seed=2026)  # a seed neither training nor the docs used
    assert result["map50"] >= 0.7, result
