"""``ans service install|uninstall``: put the device or edge app under systemd, once.

Checks before it writes anything: the bundle, the unit template (shipped under
<prefix>/share/ans/systemd by every pip install, or the checkout's systemd/), and that the
hardened unit can see the paths it needs. Writes /etc/ans/<role>.toml (kept if it exists: it is
the user's), an empty password file for brokers without authentication, and
/etc/systemd/system/ans-<role>.service with ExecStart pointing at this installation's ``ans``;
then enables and starts it (a device whose camera is not there yet is enabled, not started). The service user is
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

CHECKOUT = Path(__file__).resolve().parents[1]
ROLES = ("device", "edge")
#: Folders the hardened units cannot see: ProtectHome=yes hides the first three, PrivateTmp=yes the rest.
HIDDEN = ("/home", "/root", "/run/user", "/tmp", "/var/tmp")


def unit_name(role: str) -> str:
    return f"ans-{role}.service"


def ans_command() -> Path:
    """This installation's ``ans`` (next to the running Python)."""
    return Path(sys.executable).parent / "ans"


def _shipped(installed: str, in_checkout: str) -> Path | None:
    """A file shipped with ANS: under <prefix> (any pip install) or in the checkout (editable)."""
    for path in (Path(sys.prefix) / installed, CHECKOUT / in_checkout):
        if path.is_file():
            return path
    return None


def render_unit(role: str, ans: Path) -> str:
    template = _shipped(f"share/ans/systemd/{unit_name(role)}", f"systemd/{unit_name(role)}")
    if template is None:
        raise OSError(f"{unit_name(role)}: unit template not found in {Path(sys.prefix) / 'share/ans/systemd'} "
                      "or in a checkout; reinstall ANS (pip install '.[board]')")
    deploy = _shipped("share/doc/ans/deploy.md", "docs/deploy.md") or CHECKOUT / "docs" / "deploy.md"
    return template.read_text().replace("@ANS@", str(ans)).replace("@DOCS@", str(deploy.parent))


def hidden_from_units(path: str | Path) -> str | None:
    """Why the hardened unit would not see ``path``, or None."""
    resolved = Path(path).resolve()
    for folder in HIDDEN:
        if resolved == Path(folder) or Path(folder) in resolved.parents:
            return (f"{resolved} is under {folder}, which the hardened unit cannot see "
                    f"({'PrivateTmp' if 'tmp' in folder else 'ProtectHome'}=yes)")
    return None


def _config(role: str, bundle: str, broker: str | None) -> str:
    from common.config import example
    from device_app.settings import DeviceSettings

    if role == "device":
        cls = DeviceSettings
    else:
        from edge_app.settings import EdgeSettings as cls
    return example(cls, {"bundle": bundle, **({"mqtt.broker": broker} if broker else {})})


def install(role: str, bundle: str, broker: str | None = None, root: str = "/", start: bool = True,
            log=print) -> None:
    """Checks everything first (paths the unit can see, a bundle, the unit template), then writes."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    live = Path(root) == Path("/")
    if live and os.geteuid() != 0:
        raise PermissionError("installing a service needs root: sudo .venv/bin/ans service install ...")
    ans = ans_command()
    bundle = str(Path(bundle).resolve())
    if not (Path(bundle) / "manifest.json").is_file():
        raise ValueError(f"{bundle}: not a bundle (no manifest.json); make one with ans convert")
    # The interpreter too: a venv made from a Python under /root (pyenv, say) links to it.
    for advice, path in (("put ANS under /opt/ans", ans),
                         ("make the venv from a system Python (python3 -m venv with /usr/bin/python3)",
                          Path(sys.executable).resolve()),
                         ("put the bundle under /opt/ans", bundle)):
        why = hidden_from_units(path)
        if why and live:
            raise ValueError(f"{why}: {advice} (see docs/deploy.md)")
        if why:  # another tree: its paths are the target's, only worth a warning
            log(f"warning: {why}")
    unit_text = render_unit(role, ans)
    base = Path(root)
    etc = base / "etc" / "ans"
    config = etc / f"{role}.toml"
    etc.mkdir(parents=True, exist_ok=True)
    fresh = not config.exists()
    if fresh:
        config.write_text(_config(role, bundle, broker))
        config.chmod(0o644)
        log(f"wrote {config}")
    else:
        log(f"kept {config} (already there)")
        if broker:
            log(f"warning: --broker {broker} not written: {config} is kept as it is; edit its broker line")
    password = etc / f"{role}.password"
    if not password.exists():
        password.touch(mode=0o600)
        log(f"wrote {password} (empty: put the broker password here if it asks for one)")
    unit = base / "etc" / "systemd" / "system" / unit_name(role)
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(unit_text)
    log(f"wrote {unit}")
    if role == "device" and fresh:
        camera = Path(root) / "dev" / "video0"
        log(f"the new config reads camera:0 ({'present' if camera.exists() else 'not there now'}); "
            f"set source in {config} to a video file or another camera if needed")
        if start and live and not camera.exists():
            start = False
            log(f"not starting {unit_name(role)} before its source is there: edit {config}, "
                f"then systemctl start {unit_name(role)}")
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
    removed = _remove(unit, log)
    if live:
        _systemctl("daemon-reload")
    config = Path(root) / "etc" / "ans" / f"{role}.toml"
    if purge:
        for path in (config, Path(root) / "etc" / "ans" / f"{role}.password"):
            removed |= _remove(path, log)
        state = Path(root) / "var" / "lib" / "ans" / role
        if state.exists():
            shutil.rmtree(state)
            log(f"removed {state}")
            removed = True
    elif config.exists():
        log(f"kept {config} and the learner state (--purge removes them)")
    if not removed:
        log(f"nothing to remove: {unit_name(role)} is not installed under {root}")


def _remove(path: Path, log) -> bool:
    if not path.exists():
        return False
    path.unlink()
    log(f"removed {path}")
    return True


def _systemctl(*args: str) -> None:
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise OSError(f"systemctl {' '.join(args)} failed: {result.stderr.strip()}")
