"""The edge app: answers inference requests from every device with the tail of their split.

One MQTT v5 client on a shared subscription (several edge processes share the load), one
worker thread running tails in arrival order. A request that cannot be served (another
bundle, a split out of range, a wrong shape, a malformed or oversized payload) gets an
error result; nothing a device sends can stop the server.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

import numpy as np

from device_app.detect import detections as decode_detections
from mqtt.connection import go_offline, make_client, parse_broker
from mqtt.protocol import ProtocolError, Result, Topics, bundle_hash_bytes, decode_request, encode_result

log = logging.getLogger("ans.edge")
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # as the shipped broker's max_packet_size


class TailRunner:
    """The edge's side of a bundle: each split's tail, built on first use and kept."""

    def __init__(self, bundle: str | Path):
        from converter.bundle import load_keras_model, read_manifest

        self.folder = Path(bundle)
        self.manifest = read_manifest(self.folder)
        self.hash16 = bundle_hash_bytes(self.manifest.model.content_hash)
        self.model = load_keras_model(self.folder / self.manifest.splits[0].tail.path)
        self._tails: dict[int, object] = {}

    def check(self, request) -> None:
        splits = self.manifest.splits
        if request.bundle_hash != self.hash16:
            raise ProtocolError("request is for another bundle than this edge serves")
        if not 0 <= request.split < len(splits) or splits[request.split].tail is None:
            raise ProtocolError(f"split {request.split} has no tail to run (0..{len(splits) - 2} do)")
        if list(request.shape) != splits[request.split].cut_shape:
            raise ProtocolError(f"split {request.split} sends shape {splits[request.split].cut_shape}, "
                                f"got {list(request.shape)}")

    def run(self, split: int, tensor: np.ndarray) -> list[np.ndarray]:
        from converter.graph import tail_model

        if split not in self._tails:
            self._tails[split] = tail_model(self.model, self.manifest.splits[split].cut)
        outputs = self._tails[split](tensor, training=False)
        return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]

    def detections(self, outputs: list[np.ndarray]) -> list[list[float]]:
        return decode_detections(outputs, self.manifest.model.decoding.model_dump())


class EdgeServer:
    def __init__(self, bundle: str | Path, broker: str, edge_id: str = "edge-1", topics: Topics = Topics()):
        self.tails = TailRunner(bundle)
        self.host, self.port = parse_broker(broker)
        self.edge_id, self.topics = edge_id, topics
        self.requests: queue.Queue = queue.Queue(maxsize=256)
        self.served = self.errors = 0
        self.client = make_client(edge_id, topics.edge_status(edge_id))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        client.subscribe(self.topics.shared_requests(), qos=1)  # here, so a reconnect restores it
        client.publish(self.topics.edge_status(self.edge_id), b"online", qos=1, retain=True)
        log.info("connected to %s:%d, serving %s", self.host, self.port, self.tails.manifest.model.name)

    def _on_message(self, client, userdata, message) -> None:
        try:
            self.requests.put_nowait((message.topic, message.payload, time.monotonic()))
        except queue.Full:
            log.warning("request queue full: dropping a request on %s", message.topic)

    def handle(self, topic: str, payload: bytes, received: float) -> tuple[str, bytes] | None:
        """The reply to one request: (result topic, result bytes), or None if no device can be named."""
        parts = topic.split("/")
        if len(parts) < 2:
            return None
        device = parts[-2]
        frame_id, split = -1, -1
        try:
            request, tensor = decode_request(payload, MAX_REQUEST_BYTES)
            frame_id, split = request.frame_id, request.split
            self.tails.check(request)
            start = time.monotonic()
            outputs = self.tails.run(request.split, tensor)
            compute = time.monotonic() - start
            result = Result(frame_id, split, "ok", self.tails.detections(outputs), wait_s=start - received,
                            compute_s=compute, edge=self.edge_id)
            self.served += 1
        except ProtocolError as exc:
            self.errors += 1
            result = Result(max(frame_id, 0), max(split, 0), "error", error=str(exc), edge=self.edge_id)
        except Exception as exc:  # a bug here must not take the edge down: answer, log, go on
            self.errors += 1
            log.exception("failed on a request from %s", device)
            result = Result(max(frame_id, 0), max(split, 0), "error", error=f"edge failure: {exc}", edge=self.edge_id)
        return self.topics.result(device), encode_result(result)

    def serve(self, stop: threading.Event) -> None:
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        try:
            while not stop.is_set():
                try:
                    topic, payload, received = self.requests.get(timeout=0.2)
                except queue.Empty:
                    continue
                reply = self.handle(topic, payload, received)
                if reply is not None:
                    self.client.publish(reply[0], reply[1], qos=1)
        finally:
            go_offline(self.client, self.topics.edge_status(self.edge_id))
