"""``ans service install|uninstall``: put the device or edge app under systemd, once.

Writes /etc/ans/<role>.toml (kept if it exists: it is the user's), an empty password file for
brokers without authentication, and /etc/systemd/system/ans-<role>.service with ExecStart
pointing at this installation's ``ans``; then enables and starts it. The service user is
systemd's DynamicUser (made up at start, nothing to create or delete); the state directory
/var/lib/ans/<role> is systemd's too. ``--root`` writes into another tree and runs nothing
(packaging, tests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

UNITS = Path(__file__).resolve().parents[1] / "systemd"
ROLES = ("device", "edge")


def unit_name(role: str) -> str:
    return f"ans-{role}.service"


def ans_command() -> Path:
    """This installation's ``ans`` (next to the running Python)."""
    return Path(sys.executable).parent / "ans"


def render_unit(role: str, ans: Path) -> str:
    template = UNITS / unit_name(role)
    if not template.is_file():
        raise OSError(f"{template}: unit file not found; install ANS from a checkout (see docs/deploy.md)")
    return template.read_text().replace("@ANS@", str(ans)).replace("@DOCS@", str(UNITS.parent / "docs"))


def _config(role: str, bundle: str, broker: str | None) -> str:
    from common.config import example
    from device_app.settings import DeviceSettings

    if role == "device":
        cls = DeviceSettings
    else:
        from edge_app.settings import EdgeSettings as cls
    text = example(cls, {"bundle": bundle})
    if broker:
        text = text.replace('broker = "mqtt://127.0.0.1:1883"', f'broker = "{broker}"')
    return text


def install(role: str, bundle: str, broker: str | None = None, root: str = "/", start: bool = True,
            log=print) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    live = Path(root) == Path("/")
    if live and os.geteuid() != 0:
        raise PermissionError("installing a service needs root: sudo .venv/bin/ans service install ...")
    ans = ans_command()
    if live and any(str(ans).startswith(p) for p in ("/home/", "/root/", "/run/user/")):
        raise ValueError(f"{ans} is under a home directory, which the hardened unit cannot see (ProtectHome=yes); "
                         "install ANS under /opt/ans (see docs/deploy.md)")
    bundle = str(Path(bundle).resolve())
    if not (Path(bundle) / "manifest.json").is_file():
        raise ValueError(f"{bundle}: not a bundle (no manifest.json); make one with ans convert")
    base = Path(root)
    etc = base / "etc" / "ans"
    etc.mkdir(parents=True, exist_ok=True)
    config = etc / f"{role}.toml"
    if config.exists():
        log(f"kept {config} (already there)")
    else:
        config.write_text(_config(role, bundle, broker))
        config.chmod(0o644)
        log(f"wrote {config}")
    password = etc / f"{role}.password"
    if not password.exists():
        password.touch(mode=0o600)
        log(f"wrote {password} (empty: put the broker password here if it asks for one)")
    unit = base / "etc" / "systemd" / "system" / unit_name(role)
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(render_unit(role, ans))
    log(f"wrote {unit}")
    if live:
        _systemctl("daemon-reload")
        _systemctl("enable", *(["--now"] if start else []), unit_name(role))
        log(f"{unit_name(role)} enabled{' and started' if start else ''}: journalctl -u {unit_name(role)} -f")


def uninstall(role: str, root: str = "/", purge: bool = False, log=print) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    live = Path(root) == Path("/")
    if live and os.geteuid() != 0:
        raise PermissionError("removing a service needs root")
    unit = Path(root) / "etc" / "systemd" / "system" / unit_name(role)
    if live and unit.exists():
        _systemctl("disable", "--now", unit_name(role))
    unit.unlink(missing_ok=True)
    log(f"removed {unit}")
    if live:
        _systemctl("daemon-reload")
    if purge:
        for path in (Path(root) / "etc" / "ans" / f"{role}.toml", Path(root) / "etc" / "ans" / f"{role}.password"):
            path.unlink(missing_ok=True)
            log(f"removed {path}")
        state = Path(root) / "var" / "lib" / "ans" / role
        if state.exists():
            shutil.rmtree(state)
            log(f"removed {state}")
    else:
        log(f"kept /etc/ans/{role}.toml and the learner state (--purge removes them)")


def _systemctl(*args: str) -> None:
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise OSError(f"systemctl {' '.join(args)} failed: {result.stderr.strip()}")
