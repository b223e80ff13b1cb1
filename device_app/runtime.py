"""The device app: frames in, detections out, the split chosen by the learner frame by frame.

source -> key-frame test -> learner picks p -> head 1..p (TFLite) -> codec -> broker -> edge
-> result + timing acknowledgement -> learner. When no edge is online, or a result misses
its deadline, the frame is finished on the device with the whole model: every frame gets
a result. Numpy, paho-mqtt and a TFLite interpreter only.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mqtt.codec import encode
from mqtt.connection import go_offline, make_client, parse_broker
from mqtt.protocol import ProtocolError, Request, Topics, bundle_hash_bytes, decode_result, encode_request

from .detect import detections as decode_detections
from .heads import DeviceBundle, HeadRunner, calibrate
from .keyframe import KeyFrameDetector
from .learner.policy import Feedback
from .learner.profile import load_profile
from .learner.registry import make_policy

log = logging.getLogger("ans.device")


def video_frames(source: str, limit: int | None = None):
    """RGB frames from a video file or ``camera:N`` (OpenCV)."""
    import cv2

    cap = cv2.VideoCapture(int(source.split(":", 1)[1]) if source.startswith("camera:") else source)
    if not cap.isOpened():
        raise ValueError(f"{source}: cannot open the video source")
    count = 0
    try:
        while limit is None or count < limit:
            ok, frame = cap.read()
            if not ok:
                return
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def preprocess(frame: np.ndarray, size: tuple[int, int], scale: float) -> np.ndarray:
    import cv2

    return (cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA).astype(np.float32) * scale)[None]


class Device:
    def __init__(self, bundle: str | Path, broker: str, device_id: str, policy: str = "ans",
                 deadline_s: float = 0.5, state_dir: str | Path | None = None, codec: str = "float32",
                 topics: Topics = Topics()):
        self.bundle = DeviceBundle(bundle)
        self.runner = HeadRunner(self.bundle)
        cache = Path(state_dir) / "calibration.json" if state_dir else None
        front = calibrate(self.runner, cache=cache, log=log.info)
        # The learner prices each split's transfer with the codec actually used on the wire.
        self.policy = make_policy(policy, replace(load_profile(bundle, codec=codec), front_delay_s=front))
        self.codec = codec
        self.device_id, self.topics, self.deadline_s = device_id, topics, deadline_s
        self.hash16 = bundle_hash_bytes(self.bundle.content_hash)
        model = self.bundle.manifest["model"]
        self.size = tuple(model["preprocessing"]["size"])
        self.scale = float(model["preprocessing"]["scale"])
        self.decoding = model["decoding"]
        self.keyframes = KeyFrameDetector()
        self.edges: set[str] = set()
        self.results: queue.Queue = queue.Queue()
        self.host, self.port = parse_broker(broker)
        self.client = make_client(device_id, topics.device_status(device_id))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.connected = threading.Event()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        client.subscribe(self.topics.result(self.device_id), qos=1)
        client.subscribe(self.topics.every_edge_status(), qos=1)
        client.publish(self.topics.device_status(self.device_id), b"online", qos=1, retain=True)
        self.connected.set()

    def _on_message(self, client, userdata, message) -> None:
        if message.topic.endswith("/status"):
            edge = message.topic.split("/")[-2]
            (self.edges.add if message.payload == b"online" else self.edges.discard)(edge)
            return
        try:
            self.results.put((decode_result(message.payload), time.monotonic()))
        except ProtocolError as exc:
            log.warning("ignoring a malformed result: %s", exc)

    def _offload(self, frame_id: int, split: int, image: np.ndarray):
        """Send the cut tensor; the edge's result and the offloading delay, or None past the deadline."""
        cut = self.runner.run(split, image)[0]
        payload, quant = encode(cut, self.codec)
        sent = time.monotonic()
        request = Request(frame_id, split, self.hash16, cut.shape, self.codec, quant, sent_ns=time.time_ns())
        self.client.publish(self.topics.request(self.device_id), encode_request(request, payload), qos=1)
        while True:
            left = sent + self.deadline_s - time.monotonic()
            if left <= 0:
                return None
            try:
                result, received = self.results.get(timeout=left)
            except queue.Empty:
                return None
            if result.frame_id == frame_id:
                return result, received - sent

    def process(self, frame_id: int, frame: np.ndarray) -> dict:
        start = time.monotonic()
        image = preprocess(frame, self.size, self.scale)
        split = self.policy.choose(self.keyframes(frame))
        offloaded = None
        if split != self.bundle.device_only and self.edges:
            offloaded = self._offload(frame_id, split, image)
        if offloaded is not None and offloaded[0].status == "ok":
            result, offload_s = offloaded
            # The timing ack splits the delay: edge compute, and the rest (network both ways + queueing).
            edge_s = min(result.compute_s, offload_s)
            self.policy.update(Feedback(split, offload_s, offload_s - edge_s, edge_s))
            detections, fallback = result.detections, False
        else:  # device-only by choice, no edge online, late or failed result: finish here
            detections = decode_detections(self.runner.run(self.bundle.device_only, image), self.decoding)
            fallback = split != self.bundle.device_only
        return {"frame": frame_id, "split": split, "fallback": fallback, "delay_s": time.monotonic() - start,
                "detections": detections}

    def run(self, frames, out=None) -> list[dict]:
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        self.connected.wait(5)
        time.sleep(0.2)  # retained edge status arrives right after subscribing
        records = []
        try:
            for frame_id, frame in enumerate(frames):
                record = self.process(frame_id, frame)
                records.append(record)
                if out is not None:
                    out.write(json.dumps(record) + "\n")
                    out.flush()
        finally:
            go_offline(self.client, self.topics.device_status(self.device_id))
        return records
