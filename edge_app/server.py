"""The edge app: answers inference requests from every device with the tail of their split.

One MQTT v5 client on a shared subscription (several edge processes share the load) and one
worker thread. Every tail is traced and run before the edge announces itself online, so no
device ever meets a cold edge. Requests for the same split that queued together run as one
batch. A request that cannot be served (another bundle, a split out of range, a wrong shape,
a malformed or oversized payload, a full queue) gets an error result, at a bounded rate per
device; a message on a topic that names no device is counted and dropped. Requests wait in one
queue per device, served in turn, so a device that floods the edge delays only itself. Nothing
a client sends can stop the server.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.bundle import Bundle
from common.detect import detections as decode_detections
from common.heap import settle
from common.logs import RateLimitedLog
from common.service import Heartbeat, Notifier
from mqtt.codec import split_ranges
from mqtt.connection import Outbox, SessionGuard, go_offline, make_client, parse_broker, start
from mqtt.discovery import announce
from mqtt.protocol import (LOAD_PERIOD_S, ComputeTable, LoadWindow, ProtocolError, Request, Result, Topics,
                           bundle_hash_bytes, decode_header, decode_request, encode_compute_table, encode_load,
                           encode_result)

from .intake import ErrorBudget, FairQueue, TopCounts
from .settings import EdgeSettings

log = logging.getLogger("ans.edge")
#: Refused requests per second from one device above which the log names it as a flood.
FLOOD_PER_S = 100
#: Weight of a new batch-of-one time in the compute table's entry for its split.
COMPUTE_EWMA = 0.1
#: The compute table is published again when an entry has moved this much (relative) since.
TABLE_CHANGE = 0.2
#: The interpreter's thread switch interval while serving (a request never waits for the GIL longer).
SWITCH_INTERVAL_S = 0.0005
#: Error replies a burst may send at once, in seconds of the steady rate (``error_replies_per_s``).
ERROR_BURST_S = 20
#: Outgoing messages paho holds while the broker is away (results, stats), beyond which they are counted.
QUEUED_MESSAGES = 1000
#: Waiting for the broker at start-up longer than this is said once.
NO_BROKER_SAY_S = 5.0


class TailRunner:
    """The edge's side of a bundle: each split's tail, built on first use and kept. TensorFlow
    places it on the GPU when one is visible."""

    def __init__(self, bundle: str | Path, xla: bool = False, max_batch: int = 8):
        from common.keras_model import load_keras_model

        _gpu_memory_growth()
        self.xla, self.max_batch = xla, max_batch
        self.folder = Path(bundle)
        opened = Bundle(self.folder, verify=False)  # the segments are the device's: the edge reads the tails
        self.manifest = opened.manifest
        self.hash16 = bundle_hash_bytes(self.manifest.model.content_hash)
        self.model = load_keras_model(self.folder / self.manifest.splits[0].tail.path)
        self._tails: dict[int, object] = {}
        # Per split, its tensors' calibrated channel ranges: what the low-bit codecs decode with.
        self.channel_ranges = split_ranges(opened)
        # Tail compute time of one request alone, per split: measured at warm-up, then followed
        # (EWMA) on every batch of one; published as the edge's compute table.
        self.compute_s: list[float | None] = [None] * len(self.manifest.splits)

    def check(self, request: Request) -> None:
        """What the header alone says about a request: this bundle, a split with a tail, its shape."""
        splits = self.manifest.splits
        if request.bundle_hash != self.hash16:
            raise ProtocolError(f"request is for bundle {request.bundle_hash.hex()[:12]}…, this edge serves "
                                f"{self.manifest.model.name} {self.hash16.hex()[:12]}…: convert and deploy the same "
                                "bundle on both sides", "bundle")
        if not 0 <= request.split < len(splits) or splits[request.split].tail is None:
            raise ProtocolError(f"split {request.split} has no tail to run (0..{len(splits) - 2} do)", "split")
        if [list(shape) for shape in request.shapes] != splits[request.split].shapes:
            raise ProtocolError(f"split {request.split} sends shapes {splits[request.split].shapes}, "
                                f"got {[list(shape) for shape in request.shapes]}", "shape")

    def run(self, split: int, batch: list[np.ndarray]) -> list[np.ndarray]:
        """Every model output for a batch of the split's cut tensors (one array per tensor, batch on
        axis 0). With XLA a batch is padded to the next power of two, so that a few compiled shapes
        (all made at warm-up) serve every size."""
        if split not in self._tails:
            self._tails[split] = self._compile(split)
        n = batch[0].shape[0]
        if self.xla and n & (n - 1):
            padded = 1 << n.bit_length()
            batch = [np.concatenate([b, np.zeros((padded - n, *b.shape[1:]), b.dtype)]) for b in batch]
        outputs = self._tails[split](*batch)
        return [np.asarray(o)[:n] for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]

    def warm_up(self, progress=lambda done, total: None) -> None:
        """Build, trace and run every tail twice before the edge says it is online, so that a
        device's first request for a split is served at steady speed: a cold tail answers 10-100 ms
        late, which a learner would take for the edge's speed."""
        todo = [(split, meta) for split, meta in enumerate(self.manifest.splits) if meta.tail is not None]
        for done, (split, meta) in enumerate(todo, 1):
            x = [np.zeros([1, *shape[1:]], np.float32) for shape in meta.shapes]
            for _ in range(2):
                self.run(split, x)
            size = 2
            while self.xla and size < 2 * self.max_batch:  # every padded shape compiled now, not on a request
                self.run(split, [np.zeros([size, *shape[1:]], np.float32) for shape in meta.shapes])
                size *= 2
            runs = []
            for _ in range(3):
                start = time.perf_counter()
                self.run(split, x)
                runs.append(time.perf_counter() - start)
            self.compute_s[split] = float(np.median(runs))
            progress(done, len(todo))

    def observed(self, split: int, compute_s: float) -> None:
        """A batch of one took ``compute_s``: the table follows the edge's real speed (load, clocks)."""
        old = self.compute_s[split]
        self.compute_s[split] = compute_s if old is None else old + COMPUTE_EWMA * (compute_s - old)

    def _compile(self, split: int):
        """The tail as one traced graph for any batch size: 3-5x faster than calling Keras eagerly.
        Each tail is traced once (its input signature leaves the batch open); TensorFlow's
        "retracing" warning counts first traces of distinct functions too, so it is filtered."""
        import tensorflow as tf

        tf.get_logger().addFilter(NOT_RETRACING)  # the same object each time: added once

        from common.keras_model import tail_model

        meta = self.manifest.splits[split]
        tail = tail_model(self.model, meta.names)
        specs = [tf.TensorSpec([None, *shape[1:]], tf.float32) for shape in meta.shapes]
        return tf.function(lambda *xs: tail(xs[0] if len(xs) == 1 else list(xs), training=False),
                           input_signature=specs, jit_compile=self.xla or None)

    def detections(self, outputs: list[np.ndarray]) -> list[list[float]]:
        return decode_detections(outputs, self.manifest.model.decoding, tuple(self.manifest.model.preprocessing.size))


class _NotRetracing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


NOT_RETRACING = _NotRetracing()


@dataclass
class Pending:
    """A request whose header passed the checks, waiting in its device's queue; the tensors are
    decoded by the worker, not by the network thread."""

    device: str
    request: Request
    payload: bytes
    received: float
    tensors: list[np.ndarray] | None = None
    picked: float | None = None  # when the worker took it: received..picked is the queueing wait


class EdgeStats:
    """Counters and samples since the last stats message (counted from two threads)."""

    def __init__(self) -> None:
        self.totals = collections.Counter()
        self.refused_by = TopCounts()  # which devices were answered with errors or shed, the most first
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.since, self.cpu_since = time.monotonic(), sum(os.times()[:2])
        self.window = collections.Counter()
        self.kinds = collections.Counter()
        self.batches: list[int] = []
        self.compute: list[float] = []
        self.waits: list[float] = []

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.window[what] += n
            self.totals[what] += n

    def refused(self, device: str, kind: str) -> None:
        self.count("errors")
        self.refused_by.add(device)
        with self._lock:
            self.kinds[kind] += 1

    def batch(self, size: int, compute_s: float, waits: list[float]) -> None:
        self.count("served", size)
        with self._lock:
            self.batches.append(size)
            self.compute.append(compute_s)
            self.waits.extend(waits)

    def report(self, **extra) -> dict:
        now, cpu = time.monotonic(), sum(os.times()[:2])
        span = max(now - self.since, 1e-9)

        def mean_ms(values):
            return round(float(np.mean(values)) * 1e3, 2) if values else 0.0

        with self._lock:
            window, kinds, batches, compute, waits = self.window, self.kinds, self.batches, self.compute, self.waits
            cpu_s = cpu - self.cpu_since  # taken before the reset starts the next window
            totals = dict(self.totals)
            self._reset()
        return {
            "window_s": round(span, 3),
            "requests_per_s": round(window["served"] / span, 2),
            "served": window["served"],
            "errors": window["errors"],
            "errors_by_kind": dict(kinds),
            "errors_unanswered": window["errors_unanswered"],
            "rejected_queue_full": window["queue_full"],
            "refused_devices": self.refused_by.report(),
            "unanswerable": window["unanswerable"],
            "batches": len(batches),
            "batch_mean": round(float(np.mean(batches)), 2) if batches else 0.0,
            "batch_histogram": dict(sorted(collections.Counter(batches).items())),
            "compute_mean_ms": mean_ms(compute),
            "wait_mean_ms": mean_ms(waits),
            "cpu_percent": round(100.0 * cpu_s / span, 1),
            "totals": totals,
            **extra,
        }


class EdgeServer:
    #: Consecutive failing turns of the serving loop after which the edge exits (1) for systemd to restart it.
    MAX_FAILURES = 100

    def __init__(self, settings: EdgeSettings, notifier: Notifier | None = None):
        self.settings = s = settings
        self.notifier = notifier or Notifier()
        self.tails = TailRunner(s.bundle, xla=s.xla, max_batch=s.max_batch)
        self.host, self.port = parse_broker(s.mqtt.broker)
        self.topics = Topics(s.mqtt.prefix)
        self.queue: FairQueue[Pending] = FairQueue(s.per_device_queue, s.queue_size)
        self.budget = ErrorBudget(s.error_replies_per_s, ERROR_BURST_S * s.error_replies_per_s)
        self.stats = EdgeStats()
        self.load = LoadWindow(time.monotonic())  # worker thread only
        self.logs = RateLimitedLog(log)
        self.max_bytes = int(s.max_request_mb * 2**20)
        self.accelerator = _accelerator()
        self.client = make_client(s.id, self.topics.edge_status(s.id), s.mqtt, queued=QUEUED_MESSAGES)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.session = SessionGuard(self.client, s.mqtt, s.id, log)
        self.outbox = Outbox(self.client, self.stats.count, log)
        self._published_table: list[float | None] = list(self.tails.compute_s)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self.session.accepted(client, reason_code):
            return
        self.session.subscribe([(self.topics.shared_requests(self.settings.group), 1)])  # a reconnect restores it
        client.publish(self.topics.edge_status(self.settings.id), b"online", qos=1, retain=True)
        self.publish_compute_table()
        if self.settings.home_assistant:
            announce(client, "edge", self.settings.id, self.topics, self.settings.stats_interval_s,
                     self.settings.discovery_prefix)
        self.connected.set()
        log.info("connected to %s:%d, serving %s on %s", self.host, self.port, self.tails.manifest.model.name,
                 self.accelerator)

    # -- requests in (paho's network thread) --

    def _on_message(self, client, userdata, message) -> None:
        """Never raises: an exception here would end paho's network thread, and the edge would go deaf."""
        try:
            self._admit(message.topic, message.payload, time.monotonic())
        except Exception:  # a bug, not bad input: counted and logged, the edge goes on
            self.stats.count("internal_errors")
            self.logs.error("internal", "could not handle a message", exc_info=True)

    def _admit(self, topic: str, payload: bytes, received: float) -> None:
        """Queue a request whose header passes the checks; refuse anything else."""
        try:
            device = self.topics.requesting_device(topic)
        except ProtocolError as exc:  # nobody to answer: count and drop
            self.stats.count("unanswerable")
            self.logs.warning("topic", "dropping a message that names no device to answer: %s", exc)
            return
        try:
            request = decode_header(payload, self.max_bytes)
            self.tails.check(request)
        except ProtocolError as exc:
            self._refuse(device, payload, exc.kind, str(exc))
            return
        if not self.queue.put(device, Pending(device, request, payload, received)):
            self.stats.count("queue_full")
            busy = self.queue.depth(device) >= self.settings.per_device_queue
            self._refuse(device, payload, "queue-full",
                         f"edge overloaded: request queue full ({device} has {self.settings.per_device_queue} "
                         "requests waiting, its share)" if busy else "edge overloaded: request queue full", request)

    def _refuse(self, device: str, payload: bytes, kind: str, error: str, request: Request | None = None) -> None:
        """An error reply, within the device's error budget; past it, counted only."""
        self.stats.refused(device, kind)
        self.logs.warning(kind, "answering %s with an error: %s", device, error)
        if not self.budget.allow(device):
            self.stats.count("errors_unanswered")
            return
        if request is None:  # what can be read of the header, for the device to match the answer
            try:
                request = decode_header(payload)
            except ProtocolError:
                pass
        result = Result(request.frame_id if request else 0, request.split if request else 0, "error", error=error,
                        error_kind=kind, edge=self.settings.id)
        self._send(device, encode_result(result))

    def _send(self, device: str, result: bytes) -> None:
        """Every reply's publish is checked: one the outgoing queue cannot hold is counted and logged."""
        self.outbox.publish(self.topics.result(device), result)  # unsent: the device finished the frame itself

    # -- batches (the worker thread) --

    def _decode(self, pending: Pending) -> Pending | None:
        """The request with its tensors, or None after answering it with an error."""
        try:
            _, pending.tensors = decode_request(pending.payload, self.max_bytes,
                                                self.tails.channel_ranges[pending.request.split])
            if not all(np.isfinite(t).all() for t in pending.tensors):
                raise ProtocolError(f"frame {pending.request.frame_id}: a tensor holds NaN or infinite values",
                                    "non-finite")
        except ProtocolError as exc:
            self._refuse(pending.device, pending.payload, exc.kind, str(exc), pending.request)
            return None
        return pending

    def next_batch(self, timeout: float = 0.2) -> list[Pending]:
        """The next device's oldest request, and the queued requests for the same split from every
        device in turn (up to ``max_batch``; one per device while others wait with other splits).
        A batch forms from what queued while the last one ran; it waits for more only if
        ``batch_wait_ms`` says so."""
        got = self.queue.get(timeout)
        if got:
            got[1].picked = time.monotonic()
        first = self._decode(got[1]) if got else None
        if first is None:
            return []
        split = first.request.split
        until = first.received + self.settings.batch_wait_ms / 1e3 if self.settings.batch_wait_ms else None
        more = self.queue.take_matching(lambda p: p.request.split == split, self.settings.max_batch - 1, until,
                                        had_turn=first.device)
        picked = time.monotonic()
        for _, item in more:
            item.picked = picked
        return [first] + [p for _, item in more if (p := self._decode(item)) is not None]

    def run_batch(self, batch: list[Pending]) -> list[tuple[str, bytes]]:
        """One tail run for the whole batch; an encoded result per request."""
        split = batch[0].request.split
        start = time.monotonic()
        try:
            tensors = batch[0].tensors if len(batch) == 1 else \
                [np.concatenate([p.tensors[j] for p in batch]) for j in range(len(batch[0].tensors))]
            outputs = self.tails.run(split, tensors)
            compute = time.monotonic() - start
            results = [Result(p.request.frame_id, split, "ok", self.tails.detections([o[i:i + 1] for o in outputs]),
                              wait_s=(p.picked or start) - p.received, compute_s=compute, batch_size=len(batch),
                              edge=self.settings.id) for i, p in enumerate(batch)]
            encoded = [encode_result(r) for r in results]
        except Exception as exc:  # a bug here must not take the edge down: answer, log, go on
            self.logs.error("tail", "tail of split %d failed", split, exc_info=True)
            self.stats.count("errors", len(batch))
            return [(p.device, encode_result(Result(p.request.frame_id, split, "error", error=f"edge failure: {exc}",
                                                    edge=self.settings.id))) for p in batch]
        self.stats.batch(len(batch), compute, [r.wait_s for r in results])
        self.load.batch(compute, [r.wait_s for r in results])
        if len(batch) == 1:
            self.tails.observed(split, compute)
        return [(p.device, e) for p, e in zip(batch, encoded)]

    # -- the loop --

    def serve(self, stop: threading.Event) -> None:
        started = time.monotonic()
        # paho's network thread hands each request to the worker thread: with CPython's default
        # 5 ms switch interval the worker can wait that long for the GIL before it starts.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))

        def warming(done: int, total: int) -> None:
            self.notifier.watchdog()
            self.notifier.status(f"warming tails {done}/{total}")

        self.tails.warm_up(warming)
        settle()  # no full garbage collection through TensorFlow's objects in the middle of a frame
        log.info("%d tails warm in %.1f s", len(self.tails._tails), time.monotonic() - started)
        start(self.client, self.settings.mqtt)
        try:
            waiting_since = time.monotonic()
            while not self.connected.is_set() and not stop.is_set():
                self.session.check()
                self.connected.wait(0.1)
                if waiting_since and time.monotonic() - waiting_since > NO_BROKER_SAY_S:
                    log.warning("no broker at %s:%d yet; still trying (every %g s at most)", self.host, self.port,
                                self.settings.mqtt.reconnect_max_s)
                    waiting_since = 0.0
            self.notifier.ready(f"serving {self.tails.manifest.model.name} on {self.accelerator}")
            heartbeat = Heartbeat(self.notifier, self.settings.stats_interval_s, self.publish_stats, self.session)
            failures = 0
            while not stop.is_set():
                try:
                    batch = self.next_batch()
                    for device, result in self.run_batch(batch) if batch else ():
                        self._send(device, result)
                    if time.monotonic() - self.load.since >= LOAD_PERIOD_S:
                        self.publish_load()
                    failures = 0
                except Exception:  # a bug, not a request: the next turn may well work
                    failures += 1
                    self.stats.count("internal_errors")
                    self.logs.error("internal", "the serving loop failed", exc_info=True)
                    if failures >= self.MAX_FAILURES:
                        raise
                heartbeat()
        finally:
            self.notifier.stopping()
            if self.client.is_connected():  # the last window's stats, so monitors do not show a stale one
                self.publish_stats()
            go_offline(self.client, self.topics.edge_status(self.settings.id))

    def publish_load(self) -> None:
        """QoS 0, not retained: a figure for the next second, worthless later, and lost ones do no harm."""
        report = self.load.report(len(self.queue), time.monotonic())
        self.outbox.publish(self.topics.edge_load(self.settings.id), encode_load(report), qos=0)

    def publish_compute_table(self) -> None:
        """Retained, so a device joining later reads it at once; again when the speed has moved."""
        table = ComputeTable(self.tails.manifest.model.content_hash, self.settings.id,
                             [None if v is None else round(v, 6) for v in self.tails.compute_s], self.accelerator)
        if not self.outbox.publish(self.topics.edge_compute(self.settings.id), encode_compute_table(table),
                                   retain=True):
            return
        self._published_table = list(self.tails.compute_s)

    def _table_moved(self) -> bool:
        return any(new is not None and (old is None or abs(new - old) > TABLE_CHANGE * old)
                   for old, new in zip(self._published_table, self.tails.compute_s))

    def publish_stats(self) -> dict:
        if self._table_moved():
            self.publish_compute_table()
        message = self.stats.report(edge=self.settings.id, queue_depth=len(self.queue),
                                    accelerator=self.accelerator, **_gpu_memory())
        for device, refused in message["refused_devices"].items():
            if refused / message["window_s"] >= FLOOD_PER_S and device != "(others)":
                self.logs.warning("flood", "%s sent %d requests that were refused in %.0f s: if it floods the "
                                  "broker, `ans broker disable device %s` stops it", device, refused,
                                  message["window_s"], device)
        self.outbox.publish(self.topics.edge_stats(self.settings.id), json.dumps(message))
        self.notifier.status(f"{message['requests_per_s']} req/s, batch {message['batch_mean']}, "
                             f"queue {message['queue_depth']}")
        return message


def _accelerator() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({len(gpus)}: {', '.join(g.name for g in gpus)})" if gpus else "CPU"


def _gpu_memory_growth() -> None:
    """Take GPU memory as the tails need it, not all of it at start (TensorFlow's default), so
    that several edge processes, or an edge and other work, share one GPU."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised (a second TailRunner in one process): as it was set
            pass


def _gpu_memory() -> dict:
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return {}
    try:
        return {"gpu_memory_mb": round(tf.config.experimental.get_memory_info("GPU:0")["current"] / 2**20, 1)}
    except (ValueError, RuntimeError):
        return {}
