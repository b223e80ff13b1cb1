"""Running under systemd: the notify protocol (READY, WATCHDOG, STATUS, STOPPING) through the
``sdnotify`` package, and SIGTERM turned into an orderly stop. Outside systemd (no
NOTIFY_SOCKET, or sdnotify not installed) every call does nothing."""

from __future__ import annotations

import os
import signal
import threading
import time


class Notifier:
    """Tells systemd how the service is doing; the watchdog is fed at half of ``WatchdogSec``."""

    def __init__(self) -> None:
        self._sd = None
        if os.environ.get("NOTIFY_SOCKET"):
            try:
                import sdnotify
            except ImportError:
                sdnotify = None
            if sdnotify is not None:
                self._sd = sdnotify.SystemdNotifier()
                if self._sd.socket is not None:
                    # Never wait on systemd: a notification its socket cannot take now (a full queue,
                    # ten datagrams by default on Linux) is dropped, not waited for. A blocked send
                    # would stop the service's main loop, its watchdog and its orderly stop with it.
                    self._sd.socket.setblocking(False)
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._last_ping = 0.0

    def _send(self, message: str) -> None:
        if self._sd is not None:
            self._sd.notify(message)

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def extend(self, seconds: float, status: str) -> None:
        """Still starting, and saying so: systemd's start timeout is pushed ``seconds`` further (a
        first-start calibration on a slow board may outlast ``TimeoutStartSec``)."""
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}\nSTATUS={status}")

    def watchdog(self) -> None:
        """Call from the main loop as often as you like; pings only when due."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")


class Heartbeat:
    """What a service's main loop does after each unit of work: feed the watchdog, publish stats
    when due, and give up if the broker refused us for good."""

    def __init__(self, notifier: Notifier, every_s: float, publish_stats, session) -> None:
        self.notifier, self.every_s, self.publish_stats, self.session = notifier, every_s, publish_stats, session
        self.last = time.monotonic()

    def __call__(self) -> None:
        self.notifier.watchdog()
        if time.monotonic() - self.last >= self.every_s:
            self.publish_stats()
            self.last = time.monotonic()
        self.session.check()


def stop_on_sigterm() -> threading.Event:
    """An event set by SIGTERM (systemd's stop) or SIGINT, for a main loop to finish cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
