"""``ans broker``: the production broker's access control (Mosquitto's dynamic security plugin).

``init`` writes the plugin's file before the broker's first start: the roles and an
administrator. ``add`` and ``remove`` change a running broker through the plugin's control API,
as that administrator; the plugin saves the change itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mqtt.access import Control, client_commands, new_password, remove_commands, security_document, switch_commands
from mqtt.connection import MqttSettings

SECURITY_FILE = "dynamic-security.json"


def _secret(path: Path, generate: bool) -> str:
    """The password in ``path``; with ``generate``, a new one written there (mode 600) when the
    file is missing or empty (``ans service install`` leaves an empty one)."""
    if path.is_file() and path.read_text(encoding="utf-8").strip():
        return path.read_text(encoding="utf-8").strip()
    if not generate:
        raise ValueError(f"{path}: no password there")
    password = new_password()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(password + "\n")
    os.chmod(path, 0o600)
    return password


def init(out: str, admin: str, admin_password_file: str | None, prefix: str, group: str) -> str:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / SECURITY_FILE
    if target.exists():
        raise ValueError(f"{target}: exists; the running broker keeps it current (use ans broker add/remove)")
    password = _secret(Path(admin_password_file) if admin_password_file else folder / "admin.password", True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(security_document(admin, password, prefix=prefix, group=group), f, indent=1)
    return f"wrote {target} (roles ans-device, ans-edge, ans-monitor, ans-homeassistant; administrator {admin})"


def _control(broker: str, admin: str, admin_password_file: str, tls: dict) -> Control:
    settings = MqttSettings(broker=broker, username=admin, password_file=admin_password_file, **tls)
    return Control(settings)


def add(kind: str, name: str, password_file: str | None, broker: str, admin: str, admin_password_file: str,
        prefix: str, tls: dict, discovery_prefix: str = "homeassistant", snapshots: bool = False) -> str:
    """A client of ``kind``; with ``password_file`` its password (generated into it when missing),
    without one it logs in by certificate only."""
    password = _secret(Path(password_file), True) if password_file else None
    control = _control(broker, admin, admin_password_file, tls)
    try:
        control.run(client_commands(kind, name, password, prefix, discovery_prefix, snapshots))
    finally:
        control.close()
    how = f"password in {password_file}" if password_file else "certificate only (CN = name)"
    return f"added {kind} {name} ({how})"


def change(action: str, kind: str, name: str, broker: str, admin: str, admin_password_file: str, tls: dict,
           snapshots: bool = False) -> str:
    """``remove``, ``disable`` (close its session and refuse it until enabled, by password or
    certificate) or ``enable`` a client."""
    commands = remove_commands(kind, name) if action == "remove" else \
        switch_commands(kind, name, action == "enable", snapshots)
    control = _control(broker, admin, admin_password_file, tls)
    try:
        control.run(commands)
    finally:
        control.close()
    return f"{action}d {kind} {name}"


#: Room above the largest request for its topic, MQTT header and properties.
PACKET_MARGIN = 64 * 2**10


def limits(bundles: list[str]) -> str:
    """The broker's size limits for these bundles: ``max_packet_size`` from the largest request any
    device may send (float32 at the split with the largest cut, plus ``PACKET_MARGIN``), so that
    nothing bigger is ever accepted, and per-client queues that hold a few of them."""
    from common.bundle import read_manifest
    from mqtt.protocol import request_size

    largest, where = 0, ""
    for folder in bundles:
        manifest = read_manifest(folder)
        for k, split in enumerate(manifest.splits):
            size = request_size(split.shapes, "float32") if split.tensors else 0
            if size > largest:
                largest, where = size, f"{manifest.model.name} split {k}, float32"
    packet = max(largest + PACKET_MARGIN, 256 * 2**10)
    return "\n".join([
        f"# The largest request: {largest:,} bytes ({where}); anything bigger is refused at its header.",
        f"max_packet_size {packet}",
        "# A client's queue and in-flight window hold a few requests, never the broker's whole memory.",
        f"max_queued_bytes {8 * packet}",
        f"max_inflight_bytes {4 * packet}",
    ])
