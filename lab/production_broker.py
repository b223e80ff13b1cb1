"""The shipped production broker config made runnable on a free port, for the tests and the fault
benchmark: its dynamic-security file made by ``mqtt.access`` with the given clients, its TLS
listener on a port of its own (or dropped when there are no certificates)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mqtt.access import security_document

PRODUCTION_CONFIG = Path(str(resources.files("mqtt") / "mosquitto-production.conf"))
PLUGIN = next(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"), None)
ADMIN = ("admin", "admin-pw")


@dataclass
class Production:
    """The shipped production config, rewritten: the loopback listener becomes LISTENER (plain,
    for ``lab.local_broker.started``), the TLS listener a free port of its own."""

    config: str
    tls_port: int


def production_config(workdir: Path, clients: list[tuple[str, str, str | None]], certs=None,
                      by_certificate: bool = False) -> Production:
    """``clients``: (kind, name, password or None) in the dynamic-security file, as ``ans broker``
    makes it. ``certs``: a folder object with ``folder`` holding ca.crt, broker.crt and broker.key
    (None: no TLS listener). ``by_certificate``: the TLS listener requires client certificates,
    CN = user name."""
    from .local_broker import free_port

    security = workdir / "dynamic-security.json"
    workdir.mkdir(parents=True, exist_ok=True)
    security.write_text(json.dumps(security_document(*ADMIN, clients)))
    tls_port = free_port()
    files = {"cafile": "ca.crt", "certfile": "broker.crt", "keyfile": "broker.key"}
    lines = []
    for line in PRODUCTION_CONFIG.read_text().splitlines():
        key = line.split(" ")[0]
        if key == "plugin":
            line = f"plugin {PLUGIN}"
        elif key == "plugin_opt_config_file":
            line = f"plugin_opt_config_file {security}"
        elif line.startswith("listener 1883"):
            line = "LISTENER"
        elif line.startswith("listener 8883"):
            line = f"listener {tls_port} 127.0.0.1" if certs is not None else "#"
        elif key in files:
            line = f"{key} {certs.folder / files[key]}" if certs is not None else "#"
        elif by_certificate and line in ("#require_certificate true", "#use_identity_as_username true"):
            line = line[1:]
        lines.append(line)
    return Production("\n".join(lines) + "\n", tls_port)
