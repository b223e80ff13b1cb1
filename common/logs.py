"""Logging that bad input cannot flood: one line per kind of problem per interval."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable


class RateLimitedLog:
    """At most one line per kind of problem every ``every_s`` seconds, saying how many like it were
    not shown. Kinds come from a small fixed set chosen by the caller (never the message text,
    which holds frame ids and sizes); past ``max_kinds`` distinct kinds, the rest share one more, so
    memory stays bounded whatever arrives."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0, max_kinds: int = 64,
                 clock: Callable[[], float] = time.monotonic):
        self.logger, self.every_s, self.max_kinds, self.clock = logger, every_s, max_kinds, clock
        self._kinds: dict[str, list] = {}  # kind -> [last time shown, not shown since]
        self._lock = threading.Lock()

    def __call__(self, level: int, kind: str, message: str, *args, **kwargs) -> bool:
        """Log ``message % args`` unless this kind was logged within the interval; True if logged."""
        now = self.clock()
        with self._lock:
            if kind not in self._kinds and len(self._kinds) >= self.max_kinds:
                kind = "(other)"
            seen = self._kinds.setdefault(kind, [None, 0])
            if seen[0] is not None and now - seen[0] < self.every_s:
                seen[1] += 1
                return False
            hidden, seen[:] = seen[1], [now, 0]
        if hidden:
            message += f" ({hidden} more like it in the last {self.every_s:.0f} s)"
        self.logger.log(level, message, *args, **kwargs)
        return True

    def warning(self, kind: str, message: str, *args, **kwargs) -> bool:
        return self(logging.WARNING, kind, message, *args, **kwargs)

    def error(self, kind: str, message: str, *args, **kwargs) -> bool:
        return self(logging.ERROR, kind, message, *args, **kwargs)
