"""The systemd units: valid (systemd-analyze verify), hardened (exposure at most 3.0 by
systemd-analyze security --offline), and installed by ``ans service install`` into a tree."""

import re
import shutil
import stat
import subprocess

import pytest

from ans.install import hidden_from_units, render_unit

from .running import ANS, ENV

ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


@pytest.mark.parametrize("role", ["device", "edge"])
def test_units_verify_and_expose_at_most_3(tmp_path, role):
    unit = tmp_path / f"ans-{role}.service"
    unit.write_text(render_unit(role, tmp_path / "ans"))
    (tmp_path / "ans").write_text("#!/bin/sh\n")
    (tmp_path / "ans").chmod(0o755)
    verify = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run([ANALYZE, "security", "--offline=yes", "--threshold=30", str(unit)],
                              capture_output=True, text=True)
    level = float(re.search(r"Overall exposure level for .*: (\d+\.\d+)", security.stdout).group(1))
    assert security.returncode == 0 and level <= 3.0, security.stdout[-2000:]
    text = unit.read_text()
    for needed in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StartLimitBurst=", "DynamicUser=yes",
                   f"StateDirectory=ans/{role}", "ConfigurationDirectory=ans", "After=network-online.target",
                   f"--config /etc/ans/{role}.toml", "RestartPreventExitStatus=2 3"):
        assert needed in text
    assert ("DeviceAllow=char-video4linux" in text) == (role == "device")
    assert ("nvidia" in text) == (role == "edge")


def test_install_and_uninstall_into_a_tree(tmp_path, demo_bundle):
    root = tmp_path / "root"
    args = ["service", "install", "--role", "device", "--bundle", str(demo_bundle / "bundle"), "--root", str(root),
            "--broker", "mqtt://hub.lan:1883"]
    first = subprocess.run(ANS + args, capture_output=True, text=True, env=ENV)
    assert first.returncode == 0, first.stderr
    unit = root / "etc/systemd/system/ans-device.service"
    config = root / "etc/ans/device.toml"
    text = unit.read_text()
    assert "ExecStart=" in text and "@ANS@" not in text and "@DOCS@" not in text
    assert stat.S_IMODE((root / "etc/ans/device.password").stat().st_mode) == 0o600
    check = subprocess.run(ANS + ["config", "check", "device", str(config)], capture_output=True, text=True, env=ENV)
    assert check.returncode == 0 and "mqtt://hub.lan:1883" in check.stdout, check.stderr
    config.write_text(config.read_text().replace('id = "device-1"', 'id = "cam-7"'))
    again = subprocess.run(ANS + args, capture_output=True, text=True, env=ENV)
    assert "kept" in again.stdout and 'id = "cam-7"' in config.read_text()  # the user's config survives
    gone = subprocess.run(ANS + ["service", "uninstall", "--role", "device", "--root", str(root), "--purge"],
                          capture_output=True, text=True, env=ENV)
    assert gone.returncode == 0 and not unit.exists() and not config.exists()
    assert "removed" in gone.stdout and "nothing to remove" not in gone.stdout
    twice = subprocess.run(ANS + ["service", "uninstall", "--role", "device", "--root", str(root), "--purge"],
                           capture_output=True, text=True, env=ENV)
    assert twice.returncode == 0 and "removed" not in twice.stdout and "nothing to remove" in twice.stdout
    bad = subprocess.run(ANS + ["service", "install", "--role", "edge", "--bundle", str(tmp_path), "--root",
                                str(root)], capture_output=True, text=True, env=ENV)
    assert bad.returncode == 2 and "not a bundle" in bad.stderr
    assert not (root / "etc/ans/edge.toml").exists()  # checked before anything was written


def test_install_warns_about_what_the_user_must_do(tmp_path, demo_bundle):
    root = tmp_path / "root"
    args = ["service", "install", "--role", "device", "--bundle", str(demo_bundle / "bundle"), "--root", str(root)]
    first = subprocess.run(ANS + args, capture_output=True, text=True, env=ENV)
    assert first.returncode == 0, first.stderr
    assert "cannot see (PrivateTmp=yes)" in first.stdout  # the bundle under /tmp: the unit would not find it
    assert "camera:0 (not there now)" in first.stdout
    again = subprocess.run(ANS + args + ["--broker", "mqtt://hub.lan:1883"], capture_output=True, text=True, env=ENV)
    assert "--broker mqtt://hub.lan:1883 not written" in again.stdout


@pytest.mark.parametrize("path, hidden", [("/home/pi/ans/.venv/bin/ans", "ProtectHome"), ("/root/b", "ProtectHome"),
                                          ("/tmp/bundle", "PrivateTmp"), ("/var/tmp/x", "PrivateTmp"),
                                          ("/opt/ans/.venv/bin/ans", None), ("/homework/b", None)])
def test_paths_the_hardened_unit_cannot_see(path, hidden):
    why = hidden_from_units(path)
    assert (why is None) if hidden is None else (f"{hidden}=yes" in why)


def test_a_regular_install_ships_the_units(tmp_path, monkeypatch):
    """From a non-editable pip install, the units come from <prefix>/share/ans/systemd."""
    from ans import install

    shipped = tmp_path / "share/ans/systemd"
    shipped.mkdir(parents=True)
    (shipped / "ans-edge.service").write_text("ExecStart=@ANS@ edge\nDocumentation=file://@DOCS@/deploy.md\n")
    (tmp_path / "share/doc/ans").mkdir(parents=True)
    (tmp_path / "share/doc/ans/deploy.md").write_text("# deploy\n")
    monkeypatch.setattr(install.sys, "prefix", str(tmp_path))
    monkeypatch.setattr(install, "CHECKOUT", tmp_path / "no-checkout")
    assert render_unit("edge", tmp_path / "bin/ans") == (f"ExecStart={tmp_path}/bin/ans edge\n"
                                                         f"Documentation=file://{tmp_path}/share/doc/ans/deploy.md\n")
    with pytest.raises(OSError, match="reinstall ANS"):
        render_unit("device", tmp_path / "bin/ans")
