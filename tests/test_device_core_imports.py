"""The device core must run where only numpy (and later paho-mqtt and a TFLite interpreter) exist."""

import subprocess
import sys

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'tensorflow', 'keras', 'cv2', 'matplotlib', 'pydantic', 'torch'}:
            raise ImportError(f'{name} must not be imported on the device')
sys.meta_path.insert(0, Block())
import numpy as np
from device_app.keyframe import KeyFrameDetector
from device_app.learner.profile import load_profile
from device_app.learner.registry import make_policy
from device_app.learner.policy import Feedback
profile = load_profile('tiny-yolov2-tx2')
policy = make_policy('ans', profile)
detect = KeyFrameDetector()
frame = np.zeros((48, 64, 3), np.uint8)
for t in range(50):
    split = policy.choose(detect(frame))
    if split != profile.device_only:
        policy.update(Feedback(split, 0.05, 0.04, 0.01))
print('ok', split)
"""


def test_learner_and_key_frames_run_without_heavy_packages():
    proc = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")
