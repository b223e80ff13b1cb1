"""A device's link without a broker, for tests of the frame thread: what the device sends is kept,
and what comes back is what the test says, through the same event queue paho's thread would fill."""

from __future__ import annotations

import queue
from types import SimpleNamespace

from device_app.link import EdgeStatus


class FakeLink:
    """``answer(topic, payload)``: the events that come back for a request (none by default: the edge
    never answers); ``send_ok=False``: the outgoing queue refuses every request."""

    def __init__(self, answer=lambda topic, payload: (), send_ok: bool = True, edges: tuple[str, ...] = ()):
        self.events: queue.Queue = queue.Queue()
        self.answer, self.send_ok = answer, send_ok
        self.sent: list[tuple[str, bytes]] = []
        self.published: list[tuple[str, bytes, bool]] = []
        self.session = SimpleNamespace(reason=None)
        for edge in edges:
            self.events.put(EdgeStatus(edge, True))

    def start(self) -> bool:
        return False

    def send(self, topic: str, payload: bytes) -> bool:
        if not self.send_ok:
            return False
        self.sent.append((topic, payload))
        for event in self.answer(topic, payload):
            self.events.put(event)
        return True

    def publish(self, topic: str, payload, retain: bool = False) -> None:
        self.published.append((topic, payload, retain))

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass
