"""A real Mosquitto for tests (``lab.local_broker``), and the shipped production config made
testable: its dynamic-security file made by ``mqtt.access``, certificates by trustme."""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lab.local_broker import Broker, dev_config, free_port, started  # noqa: F401  (re-exported for the tests)
from mqtt.access import security_document

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
REPO = Path(__file__).resolve().parents[1]
PLUGIN = next(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"), None)
ADMIN = ("admin", "admin-pw")


@contextmanager
def running_broker(config: str, workdir: Path):
    """Start ``mosquitto -c`` on ``config`` (which must contain LISTENER, replaced by a free port)."""
    with started(config, workdir) as broker:
        yield broker.port


@dataclass
class Certificates:
    """A throwaway CA, the broker's certificate, and a client certificate per name (CN = name)."""

    folder: Path
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        import trustme

        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca_obj = trustme.CA()
        self.ca = self.folder / "ca.crt"
        self.ca_obj.cert_pem.write_to_path(str(self.ca))
        broker = self.ca_obj.issue_cert("127.0.0.1", "localhost")
        broker.cert_chain_pems[0].write_to_path(str(self.folder / "broker.crt"))
        broker.private_key_pem.write_to_path(str(self.folder / "broker.key"))
        for name in self.names:
            leaf = self.ca_obj.issue_cert(f"{name}.devices.invalid", common_name=name)
            leaf.cert_chain_pems[0].write_to_path(str(self.folder / f"{name}.crt"))
            leaf.private_key_pem.write_to_path(str(self.folder / f"{name}.key"))


@dataclass
class Production:
    """The shipped production config, rewritten for a test: the loopback listener becomes LISTENER
    (plain, for ``started``), the TLS listener a free port of its own."""

    config: str
    tls_port: int


def production_config(workdir: Path, clients: list[tuple[str, str, str | None]], certs: Certificates | None = None,
                      by_certificate: bool = False) -> Production:
    """``clients``: (kind, name, password or None) in the dynamic-security file, as ``ans broker``
    makes it. ``by_certificate``: the TLS listener requires client certificates, CN = user name."""
    security = workdir / "dynamic-security.json"
    security.write_text(json.dumps(security_document(*ADMIN, clients)))
    tls_port = free_port()
    lines = []
    for line in (REPO / "mqtt" / "mosquitto-production.conf").read_text().splitlines():
        if line.startswith("plugin "):
            line = f"plugin {PLUGIN}"
        elif line.startswith("plugin_opt_config_file"):
            line = f"plugin_opt_config_file {security}"
        elif line.startswith("listener 1883"):
            line = "LISTENER"
        elif line.startswith("listener 8883"):
            line = f"listener {tls_port} 127.0.0.1"
        elif certs is not None and line.split(" ")[0] in ("cafile", "certfile", "keyfile"):
            key = line.split(" ")[0]
            line = f"{key} {certs.folder / {'cafile': 'ca.crt', 'certfile': 'broker.crt', 'keyfile': 'broker.key'}[key]}"
        elif by_certificate and line.startswith("#require_certificate"):
            line = "require_certificate true"
        elif by_certificate and line.startswith("#use_identity_as_username"):
            line = "use_identity_as_username true"
        lines.append(line)
    config = "\n".join(lines) + "\n"
    if certs is None:  # no TLS listener without certificates
        config = config.replace(f"listener {tls_port} 127.0.0.1\n", "").replace("cafile ", "#cafile ") \
            .replace("certfile ", "#certfile ").replace("keyfile ", "#keyfile ")
    return Production(config, tls_port)
