"""The device app: frames in, detections out, the split chosen by the learner frame by frame.

source -> key-frame test -> learner picks p and codec -> head 1..p (TFLite) -> codec -> broker -> edge
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

from common.detect import counts, objects
from common.detect import detections as decode_detections
from common.disk import write_problem
from common.heap import settle
from common.logs import RateLimitedLog
from common.service import Heartbeat, Notifier
from mqtt.codec import encode
from mqtt.connection import parse_broker
from mqtt.discovery import announce
from mqtt.protocol import FrameRecord, Request, Result, Timing, Topics, encode_request, request_size

from .edge_view import EdgeView
from .keyframe import KeyFrameDetector
from .learner.policy import Feedback
from .learner.profile import load_profile
from .learner.registry import make_policy
from .learner_store import LearnerStore
from .link import Connected, Link, ResultIn
from .local_model import LocalModel, load_model
from .settings import DeviceSettings
from .sources import preprocess
from .telemetry import DeviceStats

log = logging.getLogger("ans.device")

#: Requests remembered: a result for a frame not among them is bogus (a stray or a forgery).
SENT_IDS_KEPT = 256
#: Frames over which this device's frame rate is measured (the learner prices the load it adds with it).
RATE_FRAMES = 20
#: An edge's timing acknowledgement may exceed the round trip the device measured by this factor and
#: slack (clock granularity, the reply's own serialisation) and still be learnt from.
ACK_FACTOR, ACK_SLACK_S = 1.05, 2e-3
#: Bytes an MQTT PUBLISH adds to its topic and payload at most (fixed header, lengths, packet id, properties).
PUBLISH_OVERHEAD = 16
#: After the broker accepts the session: how long to take in the retained edge statuses before the first frame.
RETAINED_S = 0.2
#: While connecting, how often the stop flag and the service watchdog are looked at.
CONNECT_POLL_S = 0.1


@dataclass(frozen=True)
class Answer:
    """The edge's answer to an offloaded frame, and the offloading delay (from the encoded request's send)."""

    result: Result
    offload_s: float


class PacketLimit:
    """Arms whose request the broker would refuse (over the Maximum Packet Size of its CONNACK)
    are never chosen: their front delay is infinite until a bigger limit comes."""

    def __init__(self, request_bytes: np.ndarray):
        self.request_bytes = request_bytes
        self.too_big = np.zeros(len(request_bytes), dtype=bool)

    def apply(self, limit: int | None, policy, calibrated: np.ndarray) -> None:
        too_big = self.request_bytes > limit if limit else np.zeros_like(self.too_big)
        for arm in np.flatnonzero(too_big & ~self.too_big):
            log.warning("arm %d sends %d bytes, over the broker's maximum packet size %d: never offloaded",
                        arm, self.request_bytes[arm], limit)
        policy.set_front_delay(too_big, np.inf)
        back = self.too_big & ~too_big  # a bigger limit after a reconnect
        policy.set_front_delay(back, calibrated[back])
        self.too_big = too_big


def make_device(settings: DeviceSettings, interpreter=None, notifier: Notifier | None = None,
                link: Link | None = None) -> Device:
    """A device with its model loaded and checked and its heads timed (``local_model.load_model``:
    the heavy part); ``interpreter``: a TFLite interpreter class the host app supplies."""
    device = Device(settings, load_model(settings, interpreter, notifier), notifier, link)
    settle()  # the frames' own garbage only: no collection through the set-up's objects mid-frame
    return device


class Device:
    """One device: the frame loop (the only thread that reads or writes its state) around the
    model, the learner and the link."""

    def __init__(self, settings: DeviceSettings, model: LocalModel, notifier: Notifier | None = None,
                 link: Link | None = None):
        self.settings = s = settings
        self.notifier = notifier or Notifier()
        self.model = model
        # The learner's arms: each split with each codec it may travel with, priced by that codec's bytes.
        arms = model.arms
        profile = load_profile(s.bundle, arms=arms.pairs())
        self.policy = make_policy(s.policy, replace(profile, front_delay_s=model.calibrated.copy()))
        self.stats = DeviceStats(len(model.bundle.splits), [arms.label(a) for a in range(len(arms))])
        self.logs = RateLimitedLog(log)
        host, port = parse_broker(s.mqtt.broker)
        self.store = LearnerStore(self.policy, s.state_dir, f"{host}:{port}", s.initial_state, s.resume_weight,
                                  self.write_or_say)
        self.view = EdgeView(s.id, model.bundle.content_hash, uuid.uuid4().hex[:8], self.logs, self.stats.count,
                             self.store.edge_online)
        self.topics = Topics(s.mqtt.prefix)
        topic_len = len(self.topics.request(s.id).encode())
        shapes = [sp.shapes if sp.tensors else None for sp in model.bundle.splits]
        self.packets = PacketLimit(np.array([
            request_size(shapes[k], codec) + topic_len + PUBLISH_OVERHEAD if shapes[k] else 0
            for k, codec in arms.pairs()]))
        self.keyframes = KeyFrameDetector()
        self.sent_ids: deque[int] = deque(maxlen=SENT_IDS_KEPT)
        self._last_counts: dict | None = None  # objects per label last published (None: publish again)
        self._started: deque[float] = deque(maxlen=RATE_FRAMES)  # when the last frames started
        self.link = link or Link(s.mqtt, s.id, self.topics, len(model.bundle.splits), self._birth, self.stats.count)

    def save_learner(self) -> None:
        self.store.save()

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
                     self.settings.discovery_prefix, self.model.labels, snapshot=self.settings.snapshot_interval_s > 0)

    def _take_events(self, wait_s: float = 0.0, frame_id: int | None = None) -> ResultIn | None:
        """Take in what the link heard; with ``wait_s``, wait that long for more (and, with
        ``frame_id``, return as soon as that frame's result is in, or no edge is left to send it)."""
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
                if frame_id is not None and not self.view.edges:
                    return None  # every edge left (or the broker did): no answer will come, finish here now

    def _take(self, event) -> None:
        if isinstance(event, Connected):
            self.packets.apply(event.max_packet, self.policy, self.model.calibrated)
            self._last_counts = None  # the broker may have lost the retained counts: say them again
        self.view.take(event)

    def _hear_loads(self) -> None:
        """The edges' load reports, to a learner that prices the wait it would add."""
        edges = max(len(self.view.edges), 1)
        span = self._started[-1] - self._started[0]
        rate = (len(self._started) - 1) / span if span > 0 else 0.0
        for edge in list(self.view.loads):
            report = self.view.loads.pop(edge, None)
            if report is not None and rate > 0:
                self.policy.edge_load(report.utilisation, report.wait_s, report.service_s, rate, edges)

    def _start_from_table(self) -> None:
        """A learner that knows nothing of the edge yet starts from what the edge says of itself."""
        table, self.view.table = self.view.table, None
        if table is None:
            return
        per_arm = table[self.model.arms.split] if len(table) == len(self.model.bundle.splits) else table
        if self.policy.prime_edge(per_arm):  # (each arm: the tail of its split; a table of another length is refused)
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

    def _head(self, split: int, image: np.ndarray) -> tuple[list[np.ndarray], float]:
        """Run split p's head (the whole model for device-only): its outputs and the time it took."""
        return self._timed(float(self.model.measured[split]), self.model.runner.run, split, image)

    def _encode(self, arm: int, cut: list[np.ndarray], head_s: float) -> list[tuple]:
        """The cut tensors encoded with the arm's codec: (payload, quantisation) per tensor. The
        learner learns the front-end delay of every arm of this split as it goes: this head's time,
        and each arm's own encoding (this one's as just measured, the others' as calibrated)."""
        codec, split = self.model.arms.codec[arm], int(self.model.arms.split[arm])
        ranges = self.model.channel_ranges[split] or [None] * len(cut)
        encoded, took = self._timed(float(self.model.encoding[arm]), lambda: [
            encode(t, codec, self.model.input_scale, r) for t, r in zip(cut, ranges)])
        for sibling in self.model.arms.of_split(split):
            encoding = took if sibling == arm else self.model.slowdown * float(self.model.encoding[sibling])
            self.policy.observe_front_delay(sibling, head_s + encoding)
        return encoded

    def _offload(self, frame_id: int, arm: int, cut: list[np.ndarray],
                 encoded: list[tuple]) -> tuple[bool, Answer | None]:
        """Send the encoded cut tensors: whether they went, and the edge's result and the offloading
        delay (None past the deadline). The delay counts from after encoding (the encoding is the
        arm's front-end delay): framing and copying a request cost in proportion to its bytes, which
        the learner prices with the bits."""
        sent = time.monotonic()
        payloads, quants = zip(*encoded)
        split, codec = int(self.model.arms.split[arm]), self.model.arms.codec[arm]
        request = Request(frame_id, split, self.model.hash16, tuple(t.shape for t in cut), codec, quants)
        went = self.link.send(self.topics.request(self.settings.id), encode_request(request, list(payloads)))
        # Even one that could not go now may: paho keeps it for when the broker is back, and the
        # answer, come so late, is then ignored as any late answer is (not as one never asked for).
        self.sent_ids.append(frame_id)
        if not went:
            return False, None  # the session just went (the link has yet to say so) or the queue is full
        arrived = self._take_events(sent + self.settings.deadline_ms / 1e3 - time.monotonic(), frame_id)
        return True, Answer(arrived.result, arrived.received - sent) if arrived is not None else None

    def process(self, frame_id: int, frame: np.ndarray) -> FrameRecord:
        """One frame, start to finish; always returns its detections."""
        start = time.monotonic()
        self._take_events()  # what the link heard since the last frame
        image = preprocess(frame, self.model.input_size, self.model.input_scale)
        self._started.append(start)
        if self.view.table is not None:
            self._start_from_table()
        if self.view.loads:
            self._hear_loads()
        estimate = self.policy.estimate()
        best = int(np.argmin(estimate)) if estimate is not None else None
        if self.view.edge_back:  # an edge is there again: the learner re-checks offloading now
            self.view.edge_back = False
            self.store.first_edges(self.view.edges)
            self.policy.edge_online()
        arm = self.policy.choose(self.keyframes(frame))
        device_only, last_arm = self.model.device_only, len(self.model.arms) - 1
        if self.packets.too_big[arm]:
            arm = last_arm
        split = int(self.model.arms.split[arm])
        attempted = split != device_only and bool(self.view.edges)
        epoch = self.view.epoch
        sent, answer = False, None
        if attempted:
            cut, head_s = self._head(split, image)
            sent, answer = self._offload(frame_id, arm, cut, self._encode(arm, cut, head_s))
        if answer is not None and answer.result.status == "ok":
            result, offload_s = answer.result, answer.offload_s
            # The timing ack splits the delay: edge compute, and the rest (network both ways + queueing).
            if result.compute_s + result.wait_s <= offload_s * ACK_FACTOR + ACK_SLACK_S:
                edge_s = min(result.compute_s, offload_s)
                self.policy.update(Feedback(arm, offload_s, offload_s - edge_s, edge_s,
                                            wait_s=min(result.wait_s, offload_s - edge_s),
                                            batch_size=result.batch_size))
            else:  # the edge claims more time than the whole round trip took: its timing is not taught
                self.logs.warning("timing", "edge %r reports compute %.3f s + wait %.3f s within a %.3f s round trip: "
                                  "its detections are used, its timing is not learnt from", result.edge[:64],
                                  result.compute_s, result.wait_s, offload_s)
            detections, fallback, answered_by = result.detections, False, result.edge
            timing = Timing(offload_s, result.compute_s, result.wait_s, result.batch_size)
        else:  # device-only by choice, no edge online, late or refused: finish here
            # Sent, and no answer in time while the edges stayed: the learner is told that this took at
            # least the deadline. A request that could not go says nothing of the arm: told, it held
            # the best arm at the deadline for 128 frames after a broker restart.
            if sent and epoch == self.view.epoch:
                self.policy.update(Feedback(arm, self.settings.deadline_ms / 1e3, censored=True))
                if answer is not None:
                    self.logs.error("refused", "the edge refused frame %d: %s", frame_id, answer.result.error[:300])
                    if answer.result.error_kind == "bundle":  # it serves another model: no split will do
                        self.view.refused(answer.result.edge)
            if attempted:  # finished from the cut tensor it already has, not from the input again
                # (device-only and a head may run fused, or not: the difference is an estimate, at least 0)
                rest_s = max(float(self.model.measured[-1] - self.model.measured[split]), 0.0)
                outputs, _ = self._timed(rest_s, self.model.runner.finish, split, cut)
            else:
                outputs, took = self._head(device_only, image)
                self.policy.observe_front_delay(last_arm, took)
            detections = decode_detections(outputs, self.model.decoding, self.model.input_size)
            fallback, answered_by, timing = split != device_only, None, None
        record = FrameRecord(frame_id, split, fallback, time.monotonic() - start, detections,
                             objects(detections, self.model.labels, frame.shape[1], frame.shape[0]),
                             answered_by, bool(self.view.edges),
                             split if attempted and answered_by is None else None, timing,
                             self.model.arms.codec[arm] if attempted else None)
        self.stats.record(record, explored=best is not None and arm != best)
        return record

    # -- the loop --

    def connect(self, stop: threading.Event | None = None) -> None:
        """Connect (in the background; paho reconnects with back-off) and wait up to the connect
        timeout: without a broker the device still runs, device-only, until it appears (at once when
        nothing answers at the broker's address)."""
        answered = self.link.start()
        waited = time.monotonic() + (self.settings.connect_timeout_s if answered else 0.0)
        while not self.view.online and self.link.session.reason is None and time.monotonic() < waited:
            if stop is not None and stop.is_set():
                break
            self.notifier.watchdog()
            self._take_events(CONNECT_POLL_S)
        self.link.check()
        if self.view.online:
            self._take_events(RETAINED_S)  # retained edge statuses arrive right after subscribing
        else:
            log.warning("no broker at %s yet; running device-only until it answers", self.store.broker)

    def run(self, frames, stop: threading.Event | None = None, sinks=()) -> int:
        """Process ``frames`` until they end or ``stop`` is set; returns the number of frames done.
        Each record goes to every sink (callable); stats and the learner state are saved as it goes."""
        stop = stop or threading.Event()
        done = 0
        try:
            self.connect(stop)
            self.notifier.ready(f"{self.settings.id}: {len(self.view.edges)} edge(s) online")
            heartbeat = Heartbeat(self.notifier, self.settings.stats_interval_s, self.publish_stats, self.link)
            for frame_id, frame in enumerate(frames):
                record = self.process(frame_id, frame)
                done += 1
                self.link.publish(self.topics.detections(self.settings.id), record.to_json())
                tally = counts(record.objects, self.model.labels)
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
            if self.view.online:  # the last window's stats, so monitors do not show a stale one
                self.publish_stats()
            else:
                self.save_learner()
            self.link.close()
        return done

    def publish_snapshot(self, jpeg: bytes) -> None:
        self.link.publish(self.topics.snapshot(self.settings.id), jpeg, retain=True)

    def publish_stats(self) -> dict:
        message = self.stats.report(self.policy, device=self.settings.id, edges_online=sorted(self.view.edges),
                                    instance=self.view.instance, duplicate_id=self.view.twin,
                                    fused_heads=self.model.runner.fused())
        self.view.twin = None  # said again if the twin is still there in the next window
        self.link.publish(self.topics.device_stats(self.settings.id), json.dumps(message))
        self.save_learner()
        self.notifier.status(f"{message['fps']} fps, split {message['split']}, "
                             f"p95 {message['delay_p95_ms']} ms, {message['fallbacks']} fallbacks")
        return message
