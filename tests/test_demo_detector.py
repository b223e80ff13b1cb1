"""The committed demo detector really detects: mAP@0.5 on freshly generated scenes, and on the demo
clip itself, as the device sees it (the video decoded and stretched to the model's input)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

pytest.importorskip("keras")
pytest.importorskip("cv2")

from converter.train_demo import evaluate, evaluate_clip  # noqa: E402
from converter.zoo import DEMO_WEIGHTS, demo_model  # noqa: E402


def test_demo_weights_are_small_and_reach_the_target_map():
    assert DEMO_WEIGHTS.stat().st_size < 10e6
    result = evaluate(demo_model(), images=150, seed=2026)  # a seed neither training nor the docs used
    assert result["map50"] >= 0.9, result


def test_the_demo_detector_is_right_on_the_clip_users_see():
    result = evaluate_clip(demo_model())
    assert result["images"] == 300 and result["map50"] >= 0.9, result
    assert min(result["ap50"].values()) >= 0.8, result  # no class left behind (squares were at 0.43)
