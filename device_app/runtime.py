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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from common.bundle import Bundle
from common.detect import counts, objects
from common.detect import detections as decode_detections
from common.disk import write_problem
from common.logs import RateLimitedLog
from common.service import Heartbeat, Notifier
from common.tflite import SegmentRunner, load_delegate
from mqtt.codec import encode
from mqtt.connection import parse_broker
from mqtt.discovery import announce
from mqtt.protocol import Request, Result, Topics, bundle_hash_bytes, encode_request, request_size

from .heads import calibrate
from .keyframe import KeyFrameDetector
from .learner.persist import StateError, load_state, save_state
from .learner.policy import Feedback
from .learner.profile import load_profile
from .learner.registry import make_policy
from .link import Connected, EdgeLoad, EdgeStatus, EdgeTable, Link, Lost, OwnStats, ResultIn, table_array
from .settings import DeviceSettings
from .sources import preprocess
from .telemetry import DeviceStats

log = logging.getLogger("ans.device")

#: What a restored learner state learnt under another broker or edge counts, relative to one
#: restored from the same (``resume_weight``).
FOREIGN_WEIGHT = 0.2


@dataclass(frozen=True)
class Answer:
    """The edge's answer to an offloaded frame, and the offloading delay (from before encoding)."""

    result: Result
    offload_s: float


class Device:
    """One device. ``interpreter``: a TFLite interpreter class the host app supplies (default LiteRT)."""

    def __init__(self, settings: DeviceSettings, interpreter=None, notifier: Notifier | None = None,
                 link: Link | None = None):
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
        # What the link's events told the frame thread (no other thread reads or writes these):
        self.online = False  # the broker session is up
        self.edges: set[str] = set()
        # Bumped whenever an edge leaves (or the broker does): a request in flight then is not a
        # measure of offloading, and must not be taught to the learner as a slow answer.
        self.edge_epoch = 0
        self.edge_back = False  # an edge came online with none before: the learner re-checks offloading
        self.sent_ids: deque[int] = deque(maxlen=256)  # recent requests: a result for any other frame is bogus
        self.logs = RateLimitedLog(log)
        self.table: np.ndarray | None = None  # an edge's compute table not yet given to the learner
        self.loads: dict = {}  # edge -> its latest load report, not yet given to the learner
        self.instance = uuid.uuid4().hex[:8]  # this process, in its stats: another one with the same id is a twin
        self.twin: str | None = None
        self._started: deque[float] = deque(maxlen=20)  # when the last frames started: this device's frame rate
        self.link = link or Link(s.mqtt, s.id, self.topics, len(self.bundle.splits), self._birth, self.stats.count)

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
            self.stats.count("write_errors")
            self.logs.warning("write", "%s; detection goes on, this file is written again once it can be",
                              write_problem(path, exc))

    # -- the link's events (the frame thread) --

    def _birth(self, client) -> None:
        """On every connect (paho's thread; reads settings only): ``online``, and the device's
        Home Assistant config."""
        client.publish(self.topics.device_status(self.settings.id), b"online", qos=1, retain=True)
        if self.settings.home_assistant:
            announce(client, "device", self.settings.id, self.topics, self.settings.stats_interval_s,
                     self.settings.discovery_prefix, self.labels, snapshot=self.settings.snapshot_interval_s > 0)

    def _take_events(self, wait_s: float = 0.0, frame_id: int | None = None) -> ResultIn | None:
        """Take in what the link heard; with ``wait_s``, wait that long for more (and, with
        ``frame_id``, return as soon as that frame's result is in)."""
        until = time.monotonic() + wait_s
        while True:
            try:
                left = until - time.monotonic()
                event = self.link.events.get(timeout=left) if left > 0 else self.link.events.get_nowait()
            except queue.Empty:
                return None
            if isinstance(event, ResultIn):
                if frame_id is not None and event.result.frame_id == frame_id:
                    return event
                if event.result.frame_id not in self.sent_ids:
                    self.logs.warning("never-sent", "ignoring a result for frame %d, which this device never sent "
                                      "(from edge %r)", event.result.frame_id, event.result.edge[:64])
            else:
                self._take(event)

    def _take(self, event) -> None:
        if isinstance(event, EdgeStatus):
            if event.online:
                self.edge_back = self.edge_back or not self.edges
                self.edges.add(event.edge)
                if len(self.seen_edges) < 64:
                    self.seen_edges.add(event.edge)
            elif event.edge in self.edges:
                self.edges.discard(event.edge)
                self.edge_epoch += 1
        elif isinstance(event, EdgeLoad):
            if event.edge in self.edges:  # the latest per online edge, for the learner
                self.loads[event.edge] = event.report
        elif isinstance(event, EdgeTable):
            self._compute_table(event.table)
        elif isinstance(event, OwnStats):
            self._check_twin(event.instance)
        elif isinstance(event, Connected):
            self.online = True
            self._limit_packets(event.max_packet)
            self._last_counts = None  # the broker may have lost the retained counts: say them again
        elif isinstance(event, Lost):
            # Until the broker is back no edge can answer: finish frames here instead of waiting out deadlines.
            self.online = False
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

    def _compute_table(self, table) -> None:
        """An edge's compute table: kept for the learner if it is for this bundle."""
        if table.bundle != self.bundle.content_hash:
            self.logs.warning("compute-table", "ignoring the compute table of edge %r: it is for bundle %s, this "
                              "device runs %s", table.edge[:64], table.bundle[:12], self.bundle.content_hash[:12])
            return
        self.table = table_array(table)

    def _check_twin(self, instance: str | None) -> None:
        """Stats on this device's own topic from another instance: two devices share one id. They would
        mix up each other's results and status (a silent tug of war): said loudly, counted, and shown
        in the stats (``duplicate_id``) until it stops."""
        if instance == self.instance:
            return
        self.twin = str(instance)
        self.stats.count("duplicate_id")
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

    def _offload(self, frame_id: int, split: int, cut: np.ndarray) -> Answer | None:
        """Send the cut tensor; the edge's result and the offloading delay, or None past the deadline.
        The delay counts from before encoding: framing and copying a tensor cost in proportion to its
        bytes (a few ms for the input split), which the learner prices with the bits, not as nothing."""
        sent = time.monotonic()
        payload, quant = encode(cut, self.settings.codec)
        request = Request(frame_id, split, self.hash16, cut.shape, self.settings.codec, quant,
                          sent_ns=time.time_ns())
        if not self.link.send(self.topics.request(self.settings.id), encode_request(request, payload)):
            return None  # not connected (queued for later) or queue full: no answer in time, finish here
        self.sent_ids.append(frame_id)
        arrived = self._take_events(sent + self.settings.deadline_ms / 1e3 - time.monotonic(), frame_id)
        return Answer(arrived.result, arrived.received - sent) if arrived is not None else None

    def process(self, frame_id: int, frame: np.ndarray) -> dict:
        """One frame, start to finish; always returns its detections."""
        start = time.monotonic()
        self._take_events()  # what the link heard since the last frame
        image = preprocess(frame, self.size, self.scale)
        self._started.append(start)
        if self.table is not None:
            self._start_from_table()
        if self.loads:
            self._hear_loads()
        estimate = self.policy.estimate()
        best = int(np.argmin(estimate)) if estimate is not None else None
        if self.edge_back:  # an edge is there again: the learner re-checks offloading now
            self.edge_back = False
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
        answer = self._offload(frame_id, split, cut) if attempted else None
        if answer is not None and answer.result.status == "ok":
            result, offload_s = answer.result, answer.offload_s
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
                if answer is not None:
                    self.logs.error("refused", "the edge refused frame %d: %s", frame_id, answer.result.error[:300])
                    if answer.result.error_kind == "bundle":  # it serves another model: no split will do
                        self.edges.discard(answer.result.edge)  # until it comes online again (redeployed)
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
        answered = self.link.start()
        waited = time.monotonic() + (self.settings.connect_timeout_s if answered else 0.0)
        while not self.online and self.link.session.reason is None and time.monotonic() < waited:
            if stop is not None and stop.is_set():
                break
            self.notifier.watchdog()
            self._take_events(0.1)
        self.link.check()
        if self.online:
            self._take_events(0.2)  # retained edge status arrives right after subscribing
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
            heartbeat = Heartbeat(self.notifier, self.settings.stats_interval_s, self.publish_stats, self.link)
            for frame_id, frame in enumerate(frames):
                record = self.process(frame_id, frame)
                done += 1
                self.link.publish(self.topics.detections(self.settings.id), json.dumps(record))
                tally = counts(record["objects"], self.labels)
                if tally != self._last_counts:  # retained, on change: what Home Assistant's sensors read
                    self._last_counts = tally
                    self.link.publish(self.topics.objects(self.settings.id), json.dumps(tally), retain=True)
                for sink in sinks:
                    sink(frame, record)
                heartbeat()
                if stop.is_set():
                    break
        finally:
            self.notifier.stopping()
            if self.online:  # the last window's stats, so monitors do not show a stale one
                self.publish_stats()
            else:
                self.save_learner()
            self.link.close()
        return done

    def publish_snapshot(self, jpeg: bytes) -> None:
        self.link.publish(self.topics.snapshot(self.settings.id), jpeg, retain=True)

    def publish_stats(self) -> dict:
        edges = sorted(self.edges)
        message = self.stats.report(self.policy, device=self.settings.id, edges_online=edges, instance=self.instance,
                                    duplicate_id=self.twin, fused_heads=self.runner.fused())
        self.twin = None  # said again if the twin is still there in the next window
        self.link.publish(self.topics.device_stats(self.settings.id), json.dumps(message))
        self.save_learner()
        self.notifier.status(f"{message['fps']} fps, split {message['split']}, "
                             f"p95 {message['delay_p95_ms']} ms, {message['fallbacks']} fallbacks")
        return message
