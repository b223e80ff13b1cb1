"""How requests wait on the edge: one queue per device, served in turn, and a budget for error
replies. A device that floods the edge fills only its own share and is answered at a bounded
rate; every other device's next request is at most one turn of each busy device away.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Items queued per device, taken round robin. ``put`` refuses an item when its device already
    holds ``per_device`` or the whole queue ``total``; ``get`` blocks until one is there."""

    def __init__(self, per_device: int, total: int):
        self.per_device, self.total = per_device, total
        self._queues: collections.OrderedDict[str, collections.deque[T]] = collections.OrderedDict()
        self._size = 0
        self._ready = threading.Condition()

    def __len__(self) -> int:
        return self._size

    def put(self, device: str, item: T) -> bool:
        with self._ready:
            waiting = self._queues.get(device)
            if self._size >= self.total or (waiting is not None and len(waiting) >= self.per_device):
                return False
            if waiting is None:
                waiting = self._queues[device] = collections.deque()
            waiting.append(item)
            self._size += 1
            self._ready.notify()
            return True

    def get(self, timeout: float) -> tuple[str, T] | None:
        """The oldest item of the device whose turn it is (None after ``timeout`` with nothing queued)."""
        with self._ready:
            if not self._size and not self._ready.wait_for(lambda: self._size, timeout):
                return None
            device, waiting = next(iter(self._queues.items()))
            item = self._take(device, waiting)
            return device, item

    def take_matching(self, match: Callable[[T], bool], most: int, until: float | None = None,
                      had_turn: str | None = None) -> list[tuple[str, T]]:
        """The rest of a batch whose first item came from ``had_turn``: up to ``most`` queued items
        that ``match``, each device's first such item in turn (its order kept), waiting for more
        until the monotonic time ``until`` if given. While any device waits with another split, a
        device that already had its turn in this batch gets no more: a batch is one turn each, not
        a burst of one device's requests."""
        taken: list[tuple[str, T]] = []
        served = {had_turn}
        with self._ready:
            while True:
                while len(taken) < most:
                    contested = any(not any(match(item) for item in waiting) for waiting in self._queues.values())
                    picked = False
                    for device, waiting in list(self._queues.items()):
                        if len(taken) >= most or (contested and device in served):
                            continue
                        index = next((i for i, item in enumerate(waiting) if match(item)), None)
                        if index is not None:
                            taken.append((device, self._take(device, waiting, index)))
                            served.add(device)
                            picked = True
                    if not picked:
                        break
                left = until - time.monotonic() if until is not None else 0.0
                if len(taken) >= most or left <= 0 or not self._ready.wait(left):
                    return taken

    def depth(self, device: str) -> int:
        with self._ready:
            return len(self._queues.get(device, ()))

    def _take(self, device: str, waiting: collections.deque[T], index: int = 0) -> T:
        item = waiting[index]
        del waiting[index]
        self._size -= 1
        if waiting:
            self._queues.move_to_end(device)  # its next item waits for everyone else's turn
        else:
            del self._queues[device]
        return item


class TokenBucket:
    """``rate`` events per second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float, now: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ErrorBudget:
    """Which error replies go out: each device gets ``per_device_per_s`` (bursts of twice that),
    and all devices together ``total_per_s``. Keeps at most ``max_devices`` buckets (oldest first
    out), so that a flood of made-up device names costs bounded memory."""

    def __init__(self, per_device_per_s: float, total_per_s: float, max_devices: int = 1024,
                 clock: Callable[[], float] = time.monotonic):
        self.per_device, self.clock, self.max_devices = per_device_per_s, clock, max_devices
        self.overall = TokenBucket(total_per_s, 2 * total_per_s, clock())
        self._buckets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()
        self._lock = threading.Lock()

    def allow(self, device: str) -> bool:
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(device)
            if bucket is None:
                bucket = self._buckets[device] = TokenBucket(self.per_device, 2 * self.per_device, now)
                if len(self._buckets) > self.max_devices:
                    self._buckets.popitem(last=False)
            self._buckets.move_to_end(device)
            return bucket.take(now) and self.overall.take(now)


class TopCounts:
    """Counts per device for the stats, bounded: the ``keep`` largest survive each report."""

    def __init__(self, keep: int = 10, limit: int = 1024):
        self.keep, self.limit = keep, limit
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def add(self, device: str) -> None:
        with self._lock:
            if device in self.counts or len(self.counts) < self.limit:
                self.counts[device] += 1
            else:
                self.counts["(others)"] += 1

    def report(self) -> dict[str, int]:
        """The largest counts since the last report (and starts the next window)."""
        with self._lock:
            top, self.counts = dict(self.counts.most_common(self.keep)), collections.Counter()
        return top
