"""A real Mosquitto for tests (``mqtt.local_broker``), and the shipped production config made testable."""

from __future__ import annotations

import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

from mqtt.local_broker import Broker, dev_config, started  # noqa: F401  (re-exported for the tests)

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
REPO = Path(__file__).resolve().parents[1]


@contextmanager
def running_broker(config: str, workdir: Path):
    """Start ``mosquitto -c`` on ``config`` (which must contain LISTENER, replaced by a free port)."""
    with started(config, workdir) as broker:
        yield broker.port


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
