"""The edge app: answers inference requests from every device with the tail of their split.

One MQTT v5 client on a shared subscription (several edge processes share the load) and one
worker thread. Requests for the same split that arrive together run as one batch (bounded
wait). A request that cannot be served (another bundle, a split out of range, a wrong shape,
a malformed or oversized payload, a full queue) gets an error result; nothing a device sends
can stop the server.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from paho.mqtt.enums import MQTTErrorCode

from device_app.detect import detections as decode_detections
from device_app.service import Heartbeat, Notifier
from mqtt.connection import Refusal, go_offline, make_client, parse_broker
from mqtt.discovery import announce
from mqtt.protocol import (ProtocolError, Request, Result, Topics, bundle_hash_bytes, decode_header, decode_request,
                           encode_result)

from .settings import EdgeSettings

log = logging.getLogger("ans.edge")
QUEUE_FULL = MQTTErrorCode.MQTT_ERR_QUEUE_SIZE


class TailRunner:
    """The edge's side of a bundle: each split's tail, built on first use and kept. TensorFlow
    places it on the GPU when one is visible."""

    def __init__(self, bundle: str | Path):
        from converter.bundle import load_keras_model, read_manifest

        self.folder = Path(bundle)
        self.manifest = read_manifest(self.folder)
        self.hash16 = bundle_hash_bytes(self.manifest.model.content_hash)
        self.model = load_keras_model(self.folder / self.manifest.splits[0].tail.path)
        self._tails: dict[int, object] = {}

    def check(self, request: Request, tensor: np.ndarray) -> None:
        splits = self.manifest.splits
        if request.bundle_hash != self.hash16:
            raise ProtocolError(f"request is for bundle {request.bundle_hash.hex()[:12]}…, this edge serves "
                                f"{self.manifest.model.name} {self.hash16.hex()[:12]}…: convert and deploy the same "
                                "bundle on both sides")
        if not 0 <= request.split < len(splits) or splits[request.split].tail is None:
            raise ProtocolError(f"split {request.split} has no tail to run (0..{len(splits) - 2} do)")
        if list(request.shape) != splits[request.split].cut_shape:
            raise ProtocolError(f"split {request.split} sends shape {splits[request.split].cut_shape}, "
                                f"got {list(request.shape)}")
        if not np.isfinite(tensor).all():
            raise ProtocolError(f"frame {request.frame_id}: the tensor holds NaN or infinite values")

    def run(self, split: int, batch: np.ndarray) -> list[np.ndarray]:
        """Every model output for a batch of cut tensors (batch on axis 0)."""
        if split not in self._tails:
            self._tails[split] = self._compile(split)
        outputs = self._tails[split](batch)
        return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]

    def warm_next(self) -> bool:
        """Build and trace one tail not used yet (the worker calls this when idle, so a device's
        first request for a split does not pay the ~0.5 s trace); False once all are ready."""
        for split, meta in enumerate(self.manifest.splits):
            if meta.tail is not None and split not in self._tails:
                self.run(split, np.zeros([1, *meta.cut_shape[1:]], np.float32))
                return True
        return False

    def _compile(self, split: int):
        """The tail as one traced graph for any batch size: 3-5x faster than calling Keras eagerly."""
        import tensorflow as tf

        from converter.graph import tail_model

        tail = tail_model(self.model, self.manifest.splits[split].cut)
        spec = tf.TensorSpec([None, *self.manifest.splits[split].cut_shape[1:]], tf.float32)
        return tf.function(lambda x: tail(x, training=False), input_signature=[spec])

    def detections(self, outputs: list[np.ndarray]) -> list[list[float]]:
        return decode_detections(outputs, self.manifest.model.decoding.model_dump())


@dataclass
class Pending:
    """A decoded request waiting for its batch."""

    device: str
    request: Request
    tensor: np.ndarray
    received: float


class EdgeStats:
    """Counters and samples since the last stats message."""

    def __init__(self) -> None:
        self.totals = collections.Counter()
        self._reset()

    def _reset(self) -> None:
        self.since, self.cpu_since = time.monotonic(), sum(os.times()[:2])
        self.window = collections.Counter()
        self.batches: list[int] = []
        self.compute: list[float] = []
        self.waits: list[float] = []

    def count(self, what: str, n: int = 1) -> None:
        self.window[what] += n
        self.totals[what] += n

    def batch(self, size: int, compute_s: float, waits: list[float]) -> None:
        self.count("served", size)
        self.batches.append(size)
        self.compute.append(compute_s)
        self.waits.extend(waits)

    def report(self, **extra) -> dict:
        now, cpu = time.monotonic(), sum(os.times()[:2])
        span = max(now - self.since, 1e-9)

        def mean_ms(values):
            return round(float(np.mean(values)) * 1e3, 2) if values else 0.0

        message = {
            "window_s": round(span, 3),
            "requests_per_s": round(self.window["served"] / span, 2),
            "served": self.window["served"],
            "errors": self.window["errors"],
            "rejected_queue_full": self.window["queue_full"],
            "batches": len(self.batches),
            "batch_mean": round(float(np.mean(self.batches)), 2) if self.batches else 0.0,
            "batch_histogram": dict(sorted(collections.Counter(self.batches).items())),
            "compute_mean_ms": mean_ms(self.compute),
            "wait_mean_ms": mean_ms(self.waits),
            "cpu_percent": round(100.0 * (cpu - self.cpu_since) / span, 1),
            "totals": dict(self.totals),
            **extra,
        }
        self._reset()
        return message


class EdgeServer:
    def __init__(self, settings: EdgeSettings, notifier: Notifier | None = None):
        self.settings = s = settings
        self.notifier = notifier or Notifier()
        self.tails = TailRunner(s.bundle)
        self.host, self.port = parse_broker(s.mqtt.broker)
        self.topics = Topics(s.mqtt.prefix)
        self.requests: queue.Queue = queue.Queue(maxsize=s.queue_size)
        self.pending: collections.deque[Pending] = collections.deque()  # decoded, waiting for their split's turn
        self.stats = EdgeStats()
        self.accelerator = _accelerator()
        self.client = make_client(s.id, self.topics.edge_status(s.id), s.mqtt)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.refusal = Refusal(self.host, self.port, s.id, log)
        self._reported: set[str] = set()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self.refusal.accepted(client, reason_code):
            return
        client.subscribe(self.topics.shared_requests(self.settings.group), qos=1)  # here: a reconnect restores it
        client.publish(self.topics.edge_status(self.settings.id), b"online", qos=1, retain=True)
        if self.settings.home_assistant:
            announce(client, "edge", self.settings.id, self.topics, self.settings.stats_interval_s)
        self.connected.set()
        log.info("connected to %s:%d, serving %s on %s", self.host, self.port, self.tails.manifest.model.name,
                 self.accelerator)

    def _on_message(self, client, userdata, message) -> None:
        try:
            self.requests.put_nowait((message.topic, message.payload, time.monotonic()))
        except queue.Full:  # answer at once, so the device finishes the frame itself instead of waiting
            self.stats.count("queue_full")
            self._reply_error(message.topic, message.payload, "edge overloaded: request queue full")

    # -- requests --

    def _device(self, topic: str) -> str | None:
        parts = topic.split("/")
        return parts[-2] if len(parts) >= 2 and parts[-1] == "request" else None

    def _reply_error(self, topic: str, payload: bytes, error: str, request: Request | None = None) -> None:
        device = self._device(topic)
        if device is None:
            return
        if request is None:  # what can be read of the header, for the device to match the answer
            try:
                request = decode_header(payload)
            except ProtocolError:
                pass
        self.stats.count("errors")
        if error not in self._reported:  # one log line per kind of problem, not one per frame
            self._reported.add(error)
            log.warning("answering %s with an error: %s", device, error)
        result = Result(request.frame_id if request else 0, request.split if request else 0, "error", error=error,
                        edge=self.settings.id)
        self.client.publish(self.topics.result(device), encode_result(result), qos=1)

    def _decode(self, topic: str, payload: bytes, received: float) -> Pending | None:
        """The request ready to run, or None after answering it with an error."""
        device = self._device(topic)
        if device is None:
            return None
        request = None
        try:
            request, tensor = decode_request(payload, int(self.settings.max_request_mb * 2**20))
            self.tails.check(request, tensor)
        except ProtocolError as exc:
            self._reply_error(topic, payload, str(exc), request)
            return None
        return Pending(device, request, tensor, received)

    def next_batch(self, timeout: float = 0.2) -> list[Pending]:
        """The oldest request and those for the same split that arrive within the batch wait."""
        first = self.pending.popleft() if self.pending else None
        if first is None:
            try:
                first = self._decode(*self.requests.get(timeout=timeout))
            except queue.Empty:
                return []
            if first is None:
                return []
        batch = [first]
        deadline = first.received + self.settings.batch_wait_ms / 1e3
        for item in list(self.pending):  # earlier arrivals for this split first
            if len(batch) < self.settings.max_batch and item.request.split == first.request.split:
                self.pending.remove(item)
                batch.append(item)
        while len(batch) < self.settings.max_batch:
            left = deadline - time.monotonic()
            try:
                raw = self.requests.get(timeout=left) if left > 0 else self.requests.get_nowait()
            except queue.Empty:
                break
            item = self._decode(*raw)
            if item is None:
                continue
            (batch if item.request.split == first.request.split else self.pending).append(item)
        return batch

    def run_batch(self, batch: list[Pending]) -> list[tuple[str, bytes]]:
        """One tail run for the whole batch; an encoded result per request."""
        split = batch[0].request.split
        start = time.monotonic()
        try:
            tensors = batch[0].tensor if len(batch) == 1 else np.concatenate([p.tensor for p in batch])
            outputs = self.tails.run(split, tensors)
            compute = time.monotonic() - start
            results = [Result(p.request.frame_id, split, "ok", self.tails.detections([o[i:i + 1] for o in outputs]),
                              wait_s=start - p.received, compute_s=compute, batch_size=len(batch),
                              edge=self.settings.id) for i, p in enumerate(batch)]
            encoded = [encode_result(r) for r in results]
        except Exception as exc:  # a bug here must not take the edge down: answer, log, go on
            log.exception("tail of split %d failed", split)
            self.stats.count("errors", len(batch))
            return [(p.device, encode_result(Result(p.request.frame_id, split, "error", error=f"edge failure: {exc}",
                                                    edge=self.settings.id))) for p in batch]
        self.stats.batch(len(batch), compute, [r.wait_s for r in results])
        return [(p.device, e) for p, e in zip(batch, encoded)]

    # -- the loop --

    def serve(self, stop: threading.Event) -> None:
        self.client.connect_async(self.host, self.port, keepalive=self.settings.mqtt.keepalive_s)
        self.client.loop_start()
        try:
            while not self.connected.is_set() and not stop.is_set():
                self.refusal.check()
                self.connected.wait(0.1)
            self.notifier.ready(f"serving {self.tails.manifest.model.name} on {self.accelerator}")
            heartbeat = Heartbeat(self.notifier, self.settings.stats_interval_s, self.publish_stats, self.refusal)
            warming = True
            while not stop.is_set():
                batch = self.next_batch()
                for device, result in self.run_batch(batch) if batch else ():
                    if self.client.publish(self.topics.result(device), result, qos=1).rc == QUEUE_FULL:
                        self.stats.count("unsent")  # broker away too long: the device has finished the frame itself
                if not batch and warming:
                    warming = self.tails.warm_next()
                heartbeat()
        finally:
            self.notifier.stopping()
            go_offline(self.client, self.topics.edge_status(self.settings.id))

    def publish_stats(self) -> dict:
        message = self.stats.report(edge=self.settings.id, queue_depth=self.requests.qsize() + len(self.pending),
                                    accelerator=self.accelerator, **_gpu_memory())
        self.client.publish(self.topics.edge_stats(self.settings.id), json.dumps(message), qos=1)
        self.notifier.status(f"{message['requests_per_s']} req/s, batch {message['batch_mean']}, "
                             f"queue {message['queue_depth']}")
        return message


def _accelerator() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({len(gpus)}: {', '.join(g.name for g in gpus)})" if gpus else "CPU"


def _gpu_memory() -> dict:
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return {}
    try:
        return {"gpu_memory_mb": round(tf.config.experimental.get_memory_info("GPU:0")["current"] / 2**20, 1)}
    except (ValueError, RuntimeError):
        return {}
