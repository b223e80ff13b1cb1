"""The device's MQTT session. paho's network thread turns every message it receives into a typed
event on one queue, which the frame thread alone consumes: nothing else passes between the two
threads. Publishing (from the frame thread) goes through here, with one accounting of what the
outgoing queue could not take.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from dataclasses import dataclass

from paho.mqtt.enums import MQTTErrorCode

from common.logs import RateLimitedLog
from mqtt.connection import MqttSettings, Outbox, SessionGuard, go_offline, make_client, max_packet_size, start
from mqtt.protocol import (Address, ComputeTable, LoadReport, ProtocolError, Result, Topics, decode_compute_table,
                           decode_load, decode_result)

log = logging.getLogger("ans.device")

#: Events waiting for the frame thread at most; past it (a flood of junk) new ones are dropped, said at
#: most once a minute (the stats are the frame thread's: paho's thread does not touch them).
MAX_EVENTS = 10_000


@dataclass(frozen=True)
class Connected:
    """The broker accepted the session (again); ``max_packet``: its Maximum Packet Size, if any."""

    max_packet: int | None


@dataclass(frozen=True)
class Lost:
    """The session is gone: no edge can answer until it is back."""


@dataclass(frozen=True)
class EdgeStatus:
    edge: str
    online: bool


@dataclass(frozen=True)
class EdgeTable:
    """An edge's compute table (a cleared retained table is no event)."""

    table: ComputeTable


@dataclass(frozen=True)
class EdgeLoad:
    edge: str
    report: LoadReport


@dataclass(frozen=True)
class OwnStats:
    """Stats on this device's own topic: ``instance`` names the process that sent them."""

    instance: str | None


@dataclass(frozen=True)
class ResultIn:
    result: Result
    received: float  # time.monotonic() when it arrived


Event = Connected | Lost | EdgeStatus | EdgeTable | EdgeLoad | OwnStats | ResultIn


class Link:
    """One device's session with the broker. ``birth(client)`` runs on every connect, in paho's
    thread, after the subscriptions: it says ``online`` and announces the device (it reads only
    settings). ``count(name)``: counts what went wrong in the stats (``unsent``: publishes the outgoing
    queue could not take)."""

    def __init__(self, mqtt: MqttSettings, device_id: str, topics: Topics, n_splits: int, birth, count):
        self.mqtt, self.device_id, self.topics, self.n_splits = mqtt, device_id, topics, n_splits
        self.birth = birth
        self.events: queue.Queue[Event] = queue.Queue(MAX_EVENTS)
        self.client = make_client(device_id, topics.device_status(device_id), mqtt)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.session = SessionGuard(self.client, mqtt, device_id, log, on_lost=lambda reason: self._put(Lost()))
        self.logs = RateLimitedLog(log)
        self._own = {Address("device", device_id, "stats"): "stats", Address("device", device_id, "result"): "result"}
        self.outbox = Outbox(self.client, count, log)

    # -- paho's thread --

    def _put(self, event: Event) -> None:
        try:
            self.events.put_nowait(event)
        except queue.Full:
            self.logs.warning("events", "more than %d messages wait for the frame thread: dropping new ones (a flood "
                              "on this device's topics?)", MAX_EVENTS)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self.session.accepted(client, reason_code):
            return
        t, me = self.topics, self.device_id
        self.session.subscribe([(t.result(me), 1), (t.every_edge_status(), 1), (t.every_edge_compute(), 1),
                                (t.every_edge_load(), 0), (t.device_stats(me), 0)])  # a twin shows up on the last
        self.birth(client)
        self._put(Connected(max_packet_size(properties)))

    def _on_message(self, client, userdata, message) -> None:
        """Never raises: an exception here would end paho's network thread."""
        try:
            event = self._event(message.topic, message.payload)
            if event is not None:
                self._put(event)
        except ProtocolError as exc:
            self.logs.warning("malformed", "ignoring a malformed message on %s: %s", message.topic[:120], exc)
        except Exception:
            self.logs.error("internal", "could not handle a message", exc_info=True)

    def _event(self, topic: str, payload: bytes) -> Event | None:
        address = self.topics.parse(topic)
        if address is None:
            return None
        if address.kind == "edge":
            if address.what == "status":
                return EdgeStatus(address.name, payload == b"online")
            if address.what == "compute":
                return EdgeTable(decode_compute_table(payload, self.n_splits)) if payload else None
            if address.what == "load":
                return EdgeLoad(address.name, decode_load(payload))
            return None
        own = self._own.get(address)
        if own == "result":
            return ResultIn(decode_result(payload), time.monotonic())
        if own == "stats":
            try:
                instance = json.loads(payload).get("instance")
            except (ValueError, UnicodeDecodeError, AttributeError):
                instance = None
            return OwnStats(str(instance)[:16] if instance is not None else None)
        return None

    # -- the frame thread --

    def start(self) -> bool:
        """Connect in the background; False when nothing answers at the broker's address."""
        return start(self.client, self.mqtt)

    def send(self, topic: str, payload: bytes) -> bool:
        """A request (QoS 1); False when it cannot go now (no session, or the outgoing queue full)."""
        return self.client.publish(topic, payload, qos=1).rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        """QoS 1: paho keeps up to 100 messages through an outage (and sends them on reconnect);
        beyond that they are counted (``totals.unsent`` in the stats) and said, not dropped in
        silence (the frames themselves are all answered)."""
        self.outbox.publish(topic, payload, retain=retain)

    def check(self) -> None:
        """BrokerRefused when the broker refused this device for good."""
        self.session.check()

    def close(self) -> None:
        go_offline(self.client, self.topics.device_status(self.device_id))

