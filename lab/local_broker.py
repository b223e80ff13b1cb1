"""A private Mosquitto on a free loopback port, for ``ans demo`` and the integration tests: started
from a config we write (the shipped development config unless told otherwise), stoppable and
restartable on the same port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

DEV_CONFIG = Path(str(resources.files("mqtt") / "mosquitto.conf"))


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found is None:
        raise OSError("mosquitto is not installed (Debian/Ubuntu: sudo apt-get install mosquitto)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dev_config() -> str:
    """The shipped development config with its listener left as LISTENER, for ``Broker`` to fill in."""
    return "\n".join("LISTENER" if line.startswith("listener") else line
                     for line in DEV_CONFIG.read_text().splitlines()) + "\n"


class Broker:
    """A mosquitto process on a fixed port, which may be stopped and started again (a broker restart)."""

    def __init__(self, config: str, workdir: Path, host: str = "127.0.0.1", wrapper: tuple[str, ...] = ()):
        """``host``: the address to listen on; ``wrapper``: a command prefix, e.g. ``ip netns exec NS``."""
        self.port = free_port()
        self.host, self.wrapper = host, list(wrapper)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = self.workdir / "mosquitto.conf"
        config = config.replace("LISTENER", f"listener {self.port} {host}")
        if os.geteuid() == 0:  # as root mosquitto would drop to its own user, who may not read our files
            config += "user root\n"
        self.conf.write_text(config)
        self.log = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([*self.wrapper, mosquitto_binary(), "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise OSError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise OSError("mosquitto did not start listening in 10 s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextmanager
def started(config: str, workdir: Path):
    broker = Broker(config, workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
