"""A real Mosquitto for tests: started on a free loopback port from a config we write, stopped after."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A mosquitto process on a fixed port, which a test may stop and start again (a broker restart)."""

    def __init__(self, config: str, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        config = config.replace("LISTENER", f"listener {self.port} 127.0.0.1")
        if os.geteuid() == 0:  # as root mosquitto would drop to its own user, who cannot read pytest's tmp files
            config += "user root\n"
        self.conf.write_text(config)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.workdir / "mosquitto.log", "a")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.workdir / 'mosquitto.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start listening in 10 s") from None
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
def running_broker(config: str, workdir: Path):
    """Start ``mosquitto -c`` on ``config`` (which must contain LISTENER, replaced by a free port)."""
    with started(config, workdir) as broker:
        yield broker.port


@contextmanager
def started(config: str, workdir: Path):
    broker = Broker(config, workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def production_config(workdir: Path, users: dict[str, str]) -> str:
    """The shipped production config and ACL, with a password file for ``users`` and a test listener."""
    passwd = workdir / "ans.passwd"
    passwd.write_text("")
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, capture_output=True)
    acl = workdir / "ans.acl"
    acl.write_text((REPO / "mqtt" / "ans.acl").read_text())
    lines = []
    for line in (REPO / "mqtt" / "mosquitto-production.conf").read_text().splitlines():
        if line.startswith("password_file"):
            line = f"password_file {passwd}"
        elif line.startswith("acl_file"):
            line = f"acl_file {acl}"
        elif line.startswith("listener"):
            line = "LISTENER"
        lines.append(line)
    return "\n".join(lines) + "\n"
