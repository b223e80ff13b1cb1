"""A device's link without a broker, for tests of the frame thread: what the device sends is kept,
and what comes back is what the test says, through the same event queue paho's thread would fill."""

from __future__ import annotations

import queue
from types import SimpleNamespace

from device_app.link import EdgeStatus


class FakeLink:
    """``answer(topic, payload)``: the events that come back for a request (none by default: the edge
    never answers); ``edges``: online from the start."""

    def __init__(self, answer=lambda topic, payload: (), edges: tuple[str, ...] = ()):
        self.events: queue.Queue = queue.Queue()
        self.answer = answer
        self.sent: list[tuple[str, bytes]] = []
        self.session = SimpleNamespace(reason=None)
        for edge in edges:
            self.events.put(EdgeStatus(edge, True))

    def start(self) -> bool:
        return False

    def send(self, topic: str, payload: bytes) -> bool:
        self.sent.append((topic, payload))
        for event in self.answer(topic, payload):
            self.events.put(event)
        return True

    def publish(self, topic: str, payload, retain: bool = False) -> None:
        pass

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass
