"""A real Mosquitto for tests (``lab.local_broker``), the shipped production config made testable
(``lab.production_broker``), and certificates made by trustme."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lab.local_broker import Broker, dev_config, free_port, started  # noqa: F401  (re-exported for the tests)
from lab.production_broker import ADMIN, PLUGIN, Production, production_config  # noqa: F401  (the same)

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
REPO = Path(__file__).resolve().parents[1]


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
