"""The device core must run where only numpy, paho-mqtt and a TFLite interpreter exist."""

import subprocess
import sys

import numpy as np

from mqtt.protocol import FrameRecord

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


LOOP = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'tensorflow', 'keras', 'cv2', 'matplotlib', 'pydantic', 'torch', 'converter',
                                  'edge_app'}:
            raise ImportError(f'{name} must not be imported on the device')
sys.meta_path.insert(0, Block())
import numpy as np
from device_app.runtime import make_device
from device_app.settings import DeviceSettings
from mqtt.connection import MqttSettings
bundle, port, frames = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
device = make_device(DeviceSettings(bundle=bundle, id='cam-core', policy=sys.argv[4], deadline_ms=2000,
                                    mqtt=MqttSettings(broker=f'mqtt://127.0.0.1:{port}')))
device.run(iter(frames), sinks=[lambda frame, record: print(record.to_json().decode())])
"""


def test_a_full_device_loop_runs_without_tensorflow_opencv_or_pydantic(demo_bundle, tmp_path):
    """Numpy, paho-mqtt and a TFLite interpreter only: the frames come from the host (here a .npy of
    320x240 frames, resized without OpenCV), the edge answers through a real broker."""
    import cv2

    from .broker import started
    from .running import ENV, dev_config, start_edge

    cap = cv2.VideoCapture(str(demo_bundle / "clip.avi"))
    frames = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(12)]
    cap.release()
    np.save(tmp_path / "frames.npy", np.stack(frames))
    with started(dev_config(), tmp_path) as broker:
        edge = start_edge(demo_bundle, broker.port)
        try:
            runs = {}
            for policy in ("edge-only", "device-only"):
                proc = subprocess.run([sys.executable, "-c", LOOP, str(demo_bundle / "bundle"), str(broker.port),
                                       str(tmp_path / "frames.npy"), policy],
                                      capture_output=True, text=True, timeout=300, env=ENV)
                assert proc.returncode == 0, proc.stderr[-3000:]
                runs[policy] = [FrameRecord.from_json(line) for line in proc.stdout.splitlines()
                                  if line.startswith("{")]
        finally:
            edge.terminate()
            edge.wait(30)
    assert all(r.edge == "edge-1" for r in runs["edge-only"]) and len(runs["edge-only"]) == 12
    assert all(r.edge is None for r in runs["device-only"])
    assert [len(r.detections) for r in runs["edge-only"]] == [len(r.detections) for r in runs["device-only"]]
    assert sum(len(r.detections) for r in runs["device-only"]) > 0


def test_the_device_extra_is_numpy_paho_and_a_tflite_interpreter():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = {dep.split(">")[0].split("<")[0].split("[")[0] for dep in extras["device"] + extras["litert"]}
    assert project["dependencies"] == ["numpy>=1.24"]
    assert names - {"ans"} == {"paho-mqtt", "sdnotify", "ai-edge-litert"}  # sdnotify: pure Python, a few kB
