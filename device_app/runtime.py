"""The device app: frames in, detections out, the split chosen by the learner frame by frame.

source -> key-frame test -> learner picks p -> head 1..p (TFLite) -> codec -> broker -> edge
-> result + timing acknowledgement -> learner. When no edge is online, the broker is away,
or a result misses its deadline, the frame is finished on the device with the whole model:
every frame gets a result, and a miss is reported to the learner as a delay of at least the
deadline. Numpy, paho-mqtt and a TFLite interpreter only.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np
from paho.mqtt.enums import MQTTErrorCode

from common.bundle import Bundle
from common.detect import counts, objects
from common.detect import detections as decode_detections
from common.disk import write_problem
from common.logs import RateLimitedLog
from common.service import Heartbeat, Notifier
from common.tflite import SegmentRunner, load_delegate
from mqtt.codec import encode
from mqtt.connection import SessionGuard, go_offline, make_client, max_packet_size, parse_broker, start
from mqtt.discovery import announce
from mqtt.protocol import (Address, ProtocolError, Request, Topics, bundle_hash_bytes, decode_compute_table,
                           decode_load, decode_result, encode_request, request_size)

from .heads import calibrate
from .keyframe import KeyFrameDetector
from .learner.persist import StateError, load_state, save_state
from .learner.policy import Feedback
from .learner.profile import load_profile
from .learner.registry import make_policy
from .settings import DeviceSettings
from .sources import preprocess
from .telemetry import DeviceStats

log = logging.getLogger("ans.device")

#: What a restored learner state learnt under another broker or edge counts, relative to one
#: restored from the same (``resume_weight``).
FOREIGN_WEIGHT = 0.2


class Device:
    """One device. ``interpreter``: a TFLite interpreter class the host app supplies (default LiteRT)."""

    def __init__(self, settings: DeviceSettings, interpreter=None, notifier: Notifier | None = None):
        self.settings = s = settings
        self.notifier = notifier or Notifier()
        self.bundle = Bundle(s.bundle)
        delegate = load_delegate(s.delegate, s.delegate_options, log=log.warning) if s.delegate else None
        self.runner = SegmentRunner(self.bundle, interpreter, s.threads, delegate, log=log.warning,
                                     fused_heads=s.fused_heads)
        self.state_dir = Path(s.state_dir) if s.state_dir else None
        # Calibrated on this device at first start, cached against the bundle hash.
        self.measured = calibrate(self.runner, cache=self.state_dir / "calibration.json" if self.state_dir else None,
                                  log=log.info, progress=lambda done, of: self.notifier.extend(
                                      120, f"{s.id}: timing the heads on this device, {done}/{of}"))
        self.calibrated = s.emulate_slowdown * self.measured
        # The learner prices each split's transfer with the codec actually used on the wire.
        profile = load_profile(s.bundle, codec=s.codec)
        self.policy = make_policy(s.policy, replace(profile, front_delay_s=self.calibrated.copy()))
        self.host, self.port = parse_broker(s.mqtt.broker)
        self.seen_edges: set[str] = set()  # edges that came online this run: saved with the learner state
        self._saved_edges: set[str] = set()  # the edges the restored state was learnt with
        self._load_learner()
        self.topics = Topics(s.mqtt.prefix)
        self.hash16 = bundle_hash_bytes(self.bundle.content_hash)
        model = self.bundle.manifest.model
        self.size = tuple(model.preprocessing.size)
        self.scale = float(model.preprocessing.scale)
        self.decoding = model.decoding
        self.labels = list(model.decoding.labels) or [str(k) for k in range(model.decoding.classes)]
        self._last_counts: dict | None = None  # objects per label last published (None: publish again)
        self.device_only = self.bundle.device_only
        topic_len = len(self.topics.request(s.id).encode())
        self.request_bytes = np.array([request_size(sp.cut_shape, s.codec) + topic_len + 16 if sp.cut_shape
                                       else 0 for sp in self.bundle.splits])
        self.too_big = np.zeros(len(self.bundle.splits), dtype=bool)
        self.keyframes = KeyFrameDetector()
        self.stats = DeviceStats(len(self.bundle.splits))
        self.edges: set[str] = set()
        # Bumped whenever an edge leaves (or the broker does): a request in flight then is not a
        # measure of offloading, and must not be taught to the learner as a slow answer.
        self.edge_epoch = 0
        self.edge_back = threading.Event()  # set by paho's thread when an edge comes online with none before
        self.results: queue.Queue = queue.Queue()
        self.sent_ids: deque[int] = deque(maxlen=256)  # recent requests: a result for any other frame is bogus
        self.client = make_client(s.id, self.topics.device_status(s.id), s.mqtt)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.session = SessionGuard(self.client, s.mqtt, s.id, log, on_lost=self._on_lost)
        self.logs = RateLimitedLog(log)
        self._dropping = False
        self.table: np.ndarray | None = None  # an edge's compute table not yet given to the learner
        self.loads: dict = {}  # edge -> its latest load report, not yet given to the learner
        self.instance = uuid.uuid4().hex[:8]  # this process, in its stats: another one with the same id is a twin
        self.twin: str | None = None
        self._started: deque[float] = deque(maxlen=20)  # when the last frames started: this device's frame rate

    # -- learner state: resume after a restart --

    def _learner_path(self) -> Path | None:
        return self.state_dir / "learner.json" if self.state_dir and self.policy.stateful else None

    def _broker_name(self) -> str:
        return f"{self.host}:{self.port}"

    def _load_learner(self) -> None:
        """Resume from the saved state as a prior (it counts ``resume_weight`` of fresh observations);
        learnt through another broker it counts ``FOREIGN_WEIGHT`` of that again, and so it does if
        the edge that comes online is none of those it was learnt with, or if it is another
        device's (``initial_state``, used while this device has no state of its own)."""
        path = self._learner_path()
        borrowed = path is None or not path.is_file()
        if borrowed:  # nothing of its own yet: another device's state, if the user gave one
            path = Path(self.settings.initial_state) if self.settings.initial_state else None
            if path is None or not self.policy.stateful:
                return
        try:
            state = load_state(path)
            context = state.pop("context", None)
            self.policy.load_state(state, weight=self.settings.resume_weight)
            log.info("resumed the learner from %s", path)
        except StateError as exc:
            log.warning("starting the learner afresh: %s", exc)
            return
        if borrowed:
            self._weaken_prior(f"by another device ({path})")
            return
        if not isinstance(context, dict):
            return
        edges = context.get("edges")
        self._saved_edges = {e for e in edges if isinstance(e, str)} if isinstance(edges, list) else set()
        if context.get("broker") != self._broker_name():
            self._saved_edges = set()
            self._weaken_prior(f"through another broker ({str(context.get('broker'))[:64]})")

    def _weaken_prior(self, why: str) -> None:
        if self.policy.weaken(FOREIGN_WEIGHT):
            log.info("the restored learner state was learnt %s: kept as a weak prior", why)

    def save_learner(self) -> None:
        path = self._learner_path()
        if path is not None:
            context = {"broker": self._broker_name(), "edges": sorted(self.seen_edges or self._saved_edges)}
            self.write_or_say(path, save_state, path, {**self.policy.state(), "context": context})

    def write_or_say(self, path: Path, write, *args) -> None:
        """``write(*args)``; a failed write (a full disk) is counted (``totals.write_errors``) and said
        at most once a minute, naming the file and the space left, and detection goes on."""
        try:
            write(*args)
        except OSError as exc:
            self.stats.totals["write_errors"] += 1
            self.logs.warning("write", "%s; detection goes on, this file is written again once it can be",
                              write_problem(path, exc))

    # -- broker --

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self.session.accepted(client, reason_code):
            return
        self._limit_packets(max_packet_size(properties))
        self.session.subscribe([(self.topics.result(self.settings.id), 1), (self.topics.every_edge_status(), 1),
                                (self.topics.every_edge_compute(), 1), (self.topics.every_edge_load(), 0),
                                # a twin with this id shows up there
                                (self.topics.device_stats(self.settings.id), 0)])
        client.publish(self.topics.device_status(self.settings.id), b"online", qos=1, retain=True)
        if self.settings.home_assistant:
            announce(client, "device", self.settings.id, self.topics, self.settings.stats_interval_s,
                     self.settings.discovery_prefix, self.labels, snapshot=self.settings.snapshot_interval_s > 0)
        self._last_counts = None  # the broker may have lost the retained counts: say them again
        self.connected.set()

    def _on_lost(self, reason_code) -> None:
        # Until the broker is back no edge can answer: finish frames here instead of waiting out deadlines.
        self.connected.clear()
        self.edges.clear()
        self.edge_epoch += 1

    def _limit_packets(self, limit: int | None) -> None:
        """Splits whose request the broker would refuse are never chosen (their front delay is infinite)."""
        too_big = self.request_bytes > limit if limit else np.zeros_like(self.too_big)
        for split in np.flatnonzero(too_big & ~self.too_big):
            log.warning("split %d sends %d bytes, over the broker's maximum packet size %d: never offloaded",
                        split, self.request_bytes[split], limit)
        self.policy.set_front_delay(too_big, np.inf)
        back = self.too_big & ~too_big  # a bigger limit after a reconnect
        self.policy.set_front_delay(back, self.calibrated[back])
        self.too_big = too_big

    def _on_message(self, client, userdata, message) -> None:
        """Never raises: an exception here would end paho's network thread."""
        try:
            address = self.topics.parse(message.topic)
            if address is None:
                return
            if address.kind == "edge" and address.what == "status":
                edge = address.name
                if message.payload == b"online":
                    if not self.edges:
                        self.edge_back.set()
                    self.edges.add(edge)
                    if len(self.seen_edges) < 64:
                        self.seen_edges.add(edge)
                elif edge in self.edges:
                    self.edges.discard(edge)
                    self.edge_epoch += 1
                return
            if address.kind == "edge" and address.what == "compute":
                self._compute_table(message.payload)
            elif address.kind == "edge" and address.what == "load":
                if address.name in self.edges:  # the latest per online edge; the main thread hands it to the learner
                    self.loads[address.name] = decode_load(message.payload)
            elif address == Address("device", self.settings.id, "stats"):
                self._check_twin(message.payload)
            elif address == Address("device", self.settings.id, "result"):
                self.results.put((decode_result(message.payload), time.monotonic()))
        except ProtocolError as exc:
            self.logs.warning("malformed", "ignoring a malformed message on %s: %s", message.topic[:120], exc)
        except Exception:
            self.logs.error("internal", "could not handle a message", exc_info=True)

    def _compute_table(self, payload: bytes) -> None:
        """An edge's compute table (paho's thread): kept for the learner if it is for this bundle."""
        if not payload:  # a retained table cleared
            return
        table = decode_compute_table(payload, len(self.bundle.splits))
        if table.bundle != self.bundle.content_hash:
            self.logs.warning("compute-table", "ignoring the compute table of edge %r: it is for bundle %s, this "
                              "device runs %s", table.edge[:64], table.bundle[:12], self.bundle.content_hash[:12])
            return
        self.table = np.array([np.nan if v is None else v for v in table.compute_s])

    def _check_twin(self, payload: bytes) -> None:
        """Stats on this device's own topic from another instance: two devices share one id. They would
        mix up each other's results and status (a silent tug of war): said loudly, counted, and shown
        in the stats (``duplicate_id``) until it stops."""
        try:
            instance = json.loads(payload).get("instance")
        except (ValueError, UnicodeDecodeError, AttributeError):
            instance = None
        if instance == self.instance:
            return
        self.twin = str(instance)[:16]
        self.stats.totals["duplicate_id"] += 1
        self.logs.error("duplicate-id", "another device is running with id %r on this broker (instance %s, this one is "
                        "%s): results and status are mixed up between them; give each device its own id",
                        self.settings.id, self.twin, self.instance)

    def _hear_loads(self) -> None:
        """The edges' load reports, to a learner that prices the wait it would add."""
        edges = max(len(self.edges), 1)
        span = self._started[-1] - self._started[0]
        rate = (len(self._started) - 1) / span if span > 0 else 0.0
        for edge in list(self.loads):
            report = self.loads.pop(edge, None)
            if report is not None and rate > 0:
                self.policy.edge_load(report.utilisation, report.wait_s, report.service_s, rate, edges)

    def _start_from_table(self) -> None:
        """A learner that knows nothing of the edge yet starts from what the edge says of itself."""
        table, self.table = self.table, None
        if table is not None and self.policy.prime_edge(table):
            log.info("learner started from the edge's compute table (%d splits)", int(np.isfinite(table).sum()))

    # -- one frame --

    def _timed(self, measured_s: float, run, *args) -> tuple[list[np.ndarray], float]:
        """Run segments; the outputs and the time taken. On an emulated slow board (lab) the run is
        followed by a sleep of (slowdown - 1) x its calibrated time ``measured_s``: a fixed extra, so
        that the host's own hiccups during the run count once, as they would on the board, instead
        of being multiplied by the slowdown."""
        start = time.perf_counter()
        outputs = run(*args)
        if self.settings.emulate_slowdown > 1:
            time.sleep(measured_s * (self.settings.emulate_slowdown - 1))
        return outputs, time.perf_counter() - start

    def _head(self, split: int, image: np.ndarray) -> list[np.ndarray]:
        """Run split p's head (the whole model for device-only), learning its front-end delay as it goes."""
        outputs, took = self._timed(float(self.measured[split]), self.runner.run, split, image)
        if split:
            self.policy.observe_front_delay(split, took)
        return outputs

    def _offload(self, frame_id: int, split: int, cut: np.ndarray):
        """Send the cut tensor; the edge's result and the offloading delay, or None past the deadline.
        The delay counts from before encoding: framing and copying a tensor cost in proportion to its
        bytes (a few ms for the input split), which the learner prices with the bits, not as nothing."""
        sent = time.monotonic()
        payload, quant = encode(cut, self.settings.codec)
        request = Request(frame_id, split, self.hash16, cut.shape, self.settings.codec, quant,
                          sent_ns=time.time_ns())
        info = self.client.publish(self.topics.request(self.settings.id), encode_request(request, payload), qos=1)
        if info.rc != 0:  # not connected (queued for later) or queue full: no answer in time, finish here
            return None
        self.sent_ids.append(frame_id)
        deadline = sent + self.settings.deadline_ms / 1e3
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                result, received = self.results.get(timeout=left)
            except queue.Empty:
                return None
            if result.frame_id == frame_id:
                return result, received - sent
            if result.frame_id not in self.sent_ids:
                self.logs.warning("never-sent", "ignoring a result for frame %d, which this device never sent "
                                  "(from edge %r)", result.frame_id, result.edge[:64])

    def process(self, frame_id: int, frame: np.ndarray) -> dict:
        """One frame, start to finish; always returns its detections."""
        start = time.monotonic()
        image = preprocess(frame, self.size, self.scale)
        self._started.append(start)
        if self.table is not None:
            self._start_from_table()
        if self.loads:
            self._hear_loads()
        estimate = self.policy.estimate()
        best = int(np.argmin(estimate)) if estimate is not None else None
        if self.edge_back.is_set():  # an edge is there again: the learner re-checks offloading now
            self.edge_back.clear()
            if self._saved_edges and not self._saved_edges & self.edges:
                self._weaken_prior(f"with another edge ({', '.join(sorted(self._saved_edges))[:100]})")
            self._saved_edges = set()  # checked once, against the first edge seen
            self.policy.edge_online()
        split = self.policy.choose(self.keyframes(frame))
        if self.too_big[split]:
            split = self.device_only
        attempted = split != self.device_only and bool(self.edges)
        epoch = self.edge_epoch
        cut = self._head(split, image)[0] if attempted else None
        offloaded = self._offload(frame_id, split, cut) if attempted else None
        if offloaded is not None and offloaded[0].status == "ok":
            result, offload_s = offloaded
            # The timing ack splits the delay: edge compute, and the rest (network both ways + queueing).
            if result.compute_s + result.wait_s <= offload_s * 1.05 + 2e-3:
                edge_s = min(result.compute_s, offload_s)
                self.policy.update(Feedback(split, offload_s, offload_s - edge_s, edge_s,
                                            wait_s=min(result.wait_s, offload_s - edge_s),
                                            batch_size=result.batch_size))
            else:  # the edge claims more time than the whole round trip took: its timing is not taught
                self.logs.warning("timing", "edge %r reports compute %.3f s + wait %.3f s within a %.3f s round trip: "
                                  "its detections are used, its timing is not learnt from", result.edge[:64],
                                  result.compute_s, result.wait_s, offload_s)
            detections, fallback, answered_by = result.detections, False, result.edge
            timing = {"offload_s": offload_s, "edge_compute_s": result.compute_s, "edge_wait_s": result.wait_s,
                      "batch_size": result.batch_size}
        else:  # device-only by choice, no edge online, late or refused: finish here
            if attempted and epoch == self.edge_epoch:  # the learner is told: this took at least the deadline
                self.policy.update(Feedback(split, self.settings.deadline_ms / 1e3, censored=True))
                if offloaded is not None:
                    self.logs.error("refused", "the edge refused frame %d: %s", frame_id, offloaded[0].error[:300])
                    if offloaded[0].error_kind == "bundle":  # it serves another model: no split will do
                        self.edges.discard(offloaded[0].edge)  # until it comes online again (redeployed)
            if attempted:  # finished from the cut tensor it already has, not from the input again
                # (device-only and a head may run fused, or not: the difference is an estimate, at least 0)
                rest_s = max(float(self.measured[-1] - self.measured[split]), 0.0)
                outputs, _ = self._timed(rest_s, self.runner.finish, split, cut)
            else:
                outputs = self._head(self.device_only, image)
            detections = decode_detections(outputs, self.decoding, self.size)
            fallback, answered_by, timing = split != self.device_only, None, {}
        record = {"frame": frame_id, "split": split, "fallback": fallback, "delay_s": time.monotonic() - start,
                  "detections": detections, "objects": objects(detections, self.labels, frame.shape[1], frame.shape[0]),
                  "edge": answered_by, "edge_online": bool(self.edges),
                  "finished_from": split if attempted and answered_by is None else None, "timing": timing}
        self.stats.record(record, explored=best is not None and split != best)
        return record

    # -- the loop --

    def connect(self, stop: threading.Event | None = None) -> None:
        """Connect (in the background; paho reconnects with back-off) and wait up to the connect
        timeout: without a broker the device still runs, device-only, until it appears (at once when
        nothing answers at the broker's address)."""
        answered = start(self.client, self.settings.mqtt)
        waited = time.monotonic() + (self.settings.connect_timeout_s if answered else 0.0)
        while not self.connected.is_set() and self.session.reason is None and time.monotonic() < waited:
            if stop is not None and stop.is_set():
                break
            self.notifier.watchdog()
            self.connected.wait(0.1)
        self.session.check()
        if self.connected.is_set():
            time.sleep(0.2)  # retained edge status arrives right after subscribing
        else:
            log.warning("no broker at %s:%d yet; running device-only until it answers", self.host, self.port)

    def run(self, frames, stop: threading.Event | None = None, sinks=()) -> int:
        """Process ``frames`` until they end or ``stop`` is set; returns the number of frames done.
        Each record goes to every sink (callable); stats and the learner state are saved as it goes."""
        stop = stop or threading.Event()
        done = 0
        try:
            self.connect(stop)
            self.notifier.ready(f"{self.settings.id}: {len(self.edges)} edge(s) online")
            heartbeat = Heartbeat(self.notifier, self.settings.stats_interval_s, self.publish_stats, self.session)
            for frame_id, frame in enumerate(frames):
                record = self.process(frame_id, frame)
                done += 1
                self._publish(self.topics.detections(self.settings.id), json.dumps(record))
                tally = counts(record["objects"], self.labels)
                if tally != self._last_counts:  # retained, on change: what Home Assistant's sensors read
                    self._last_counts = tally
                    self._publish(self.topics.objects(self.settings.id), json.dumps(tally), retain=True)
                for sink in sinks:
                    sink(frame, record)
                heartbeat()
                if stop.is_set():
                    break
        finally:
            self.notifier.stopping()
            if self.client.is_connected():  # the last window's stats, so monitors do not show a stale one
                self.publish_stats()
            else:
                self.save_learner()
            go_offline(self.client, self.topics.device_status(self.settings.id))
        return done

    def publish_snapshot(self, jpeg: bytes) -> None:
        self._publish(self.topics.snapshot(self.settings.id), jpeg, retain=True)

    def _publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        """QoS 1: paho keeps up to 100 messages through an outage (and sends them on reconnect);
        beyond that they are counted (``totals.unpublished`` in the stats) and said once per
        outage, not dropped in silence."""
        if self.client.publish(topic, payload, qos=1, retain=retain).rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self._dropping = False
            return
        self.stats.totals["unpublished"] += 1
        if not self._dropping:
            self._dropping = True
            log.warning("broker unreachable and the outgoing queue is full: detections and stats are not "
                        "published until it is back (the frames themselves are all answered)")

    def publish_stats(self) -> dict:
        edges = sorted(self.edges.copy())  # a copy: paho's thread changes the set
        message = self.stats.report(self.policy, device=self.settings.id, edges_online=edges, instance=self.instance,
                                    duplicate_id=self.twin, fused_heads=self.runner.fused())
        self.twin = None  # said again if the twin is still there in the next window
        self._publish(self.topics.device_stats(self.settings.id), json.dumps(message))
        self.save_learner()
        self.notifier.status(f"{message['fps']} fps, split {message['split']}, "
                             f"p95 {message['delay_p95_ms']} ms, {message['fallbacks']} fallbacks")
        return message
