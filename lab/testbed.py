"""The pieces of a live testbed on one machine (root): a real link whose bandwidth ``tc tbf`` sets (a
network namespace behind a veth pair), a relay that really delays every packet both ways (``tc
netem`` is not always there), and CPU hogs that slow a process pinned to a core. Benchmarks put
the broker and the edge behind the link and the device in front of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

NS, HOST_IF, NS_IF = "ans-bench-edge", "ansb-dev", "ansb-edge"
HOST_IP, NS_IP = "10.77.0.1", "10.77.0.2"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


class Link:
    """The namespace ``NS`` (at ``NS_IP``) behind a veth pair from the host (``HOST_IP``), the same
    rate both ways; removed on exit, whatever happened."""

    def __init__(self, mbit: float):
        self.mbit = mbit

    def shape(self, mbit: float) -> None:
        for prefix, dev in (((), HOST_IF), (("ip", "netns", "exec", NS), NS_IF)):
            sh(*prefix, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{mbit}mbit",
               "burst", "64kbit", "latency", "400ms")
        self.mbit = mbit

    def __enter__(self) -> Link:
        self._remove()
        sh("ip", "netns", "add", NS)
        try:
            sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
            sh("ip", "link", "set", NS_IF, "netns", NS)
            sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_IF)
            sh("ip", "link", "set", HOST_IF, "up")
            for cmd in (("ip", "addr", "add", f"{NS_IP}/24", "dev", NS_IF), ("ip", "link", "set", NS_IF, "up"),
                        ("ip", "link", "set", "lo", "up")):
                sh("ip", "netns", "exec", NS, *cmd)
            self.shape(self.mbit)
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    @staticmethod
    def _remove() -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            sh("ip", "link", "del", HOST_IF)
        with contextlib.suppress(subprocess.CalledProcessError):
            sh("ip", "netns", "del", NS)


class DelayRelay:
    """A TCP relay on 127.0.0.1 to ``(host, port)`` that holds every chunk ``delay_s`` before passing
    it on, in each direction, in order: a round trip through it takes 2 x ``delay_s`` more. The
    delay may change while connections are open (later chunks get the new one)."""

    def __init__(self, host: str, port: int, delay_s: float = 0.0):
        self.target, self.delay_s = (host, port), delay_s
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DelayRelay:
        self._thread.start()
        if not self._ready.wait(10):
            raise OSError("the delay relay did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _serve(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            self._loop.create_task(self._pump(src, dst))

    async def _pump(self, reader, writer) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if chunk is None:
                    writer.close()
                    return
                writer.write(chunk)
                await writer.drain()

        sender = self._loop.create_task(send())
        try:
            while chunk := await reader.read(65536):
                await queue.put((time.monotonic() + self.delay_s, chunk))
        except (ConnectionError, OSError):
            pass
        await queue.put((time.monotonic() + self.delay_s, None))
        with contextlib.suppress(ConnectionError, OSError):
            await sender


class CpuHog:
    """``count`` busy processes pinned to ``core``: whatever else runs there gets a share of it."""

    def __init__(self, core: int, count: int):
        self.core, self.count = core, count
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        self.procs = [subprocess.Popen(["taskset", "-c", str(self.core), sys.executable, "-c", "while True: pass"])
                      for _ in range(self.count)]

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs = []


def pin_this_process(core: int) -> None:
    os.sched_setaffinity(0, {core})
