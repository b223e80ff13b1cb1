"""Both services under a real systemd, as a board and an edge run them: a Debian 12 root booted by
systemd-nspawn (systemd 252 as PID 1), ANS installed there by a regular (non-editable) pip install
with the device and edge extras (TensorFlow included), ``ans service install`` for both roles, a
Mosquitto on the host's loopback. It checks what the units promise and prints a report:

* both units reach READY (``Type=notify``) and keep pinging the watchdog; the device, as
  installed, is enabled but not started (no camera in the container) until its source is set;
* they run as systemd's dynamic users (``ans-device``, ``ans-edge``), the device offloads to the edge;
* ``kill -9`` of either: restarted; a frozen device (SIGSTOP): killed by the watchdog and restarted;
* ``systemctl stop``: the learner state is on disk and ``offline`` is retained on the broker;
* ``systemd-analyze security`` (online, on the running units): the exposure of each.

    sudo .venv/bin/python bench/systemd_real.py [--work /var/tmp/ans-systemd] [--keep]

Needs root, and Debian's packages debootstrap and systemd-container (installed when missing). The
root (about 300 MB) and the venv in it are kept in --work and reused (the venv is rebuilt when
the source changed); the first run takes about 5 minutes, later ones about 2 (the watchdog check
alone waits out WatchdogSec=30). Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lab.local_broker import Broker, dev_config  # noqa: E402

HOST_CA = "/etc/ssl/host-ca.crt"
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,python3-pip,ca-certificates,procps"
START = time.monotonic()


def step(text: str) -> None:
    print(f"[{time.monotonic() - START:6.1f} s] {text}", flush=True)


def sh(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def wait_for(what: str, check, timeout: float, every: float = 0.5):
    """Poll ``check`` until it returns something true; that value, or an error naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("debootstrap", "debootstrap"), ("systemd-nspawn", "systemd-container"))
               if shutil.which(tool) is None]
    if missing:
        step(f"installing {' '.join(missing)}")
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", *missing, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def ensure_root(root: Path) -> None:
    if (root / "lib/systemd/systemd").exists():
        step(f"reusing the Debian root {root}")
        return
    step(f"debootstrap bookworm into {root} (a few minutes)")
    root.parent.mkdir(parents=True, exist_ok=True)
    sh("debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(root))


def source_tarball() -> tuple[bytes, str]:
    """The working tree's files (tracked and untracked, not ignored) as a tar, and its digest."""
    names = sh("git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z").stdout.split("\0")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(n for n in names if n and (REPO / n).is_file()):
            tar.add(REPO / name, arcname=name)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


class Container:
    """A booted systemd-nspawn container sharing the host's network (the broker is on its loopback)."""

    def __init__(self, root: Path, log: Path):
        self.root, self.log = root, log
        self.proc: subprocess.Popen | None = None
        self.pid = 0

    def boot(self) -> None:
        cache = Path("/root/.cache/pip")
        cache.mkdir(parents=True, exist_ok=True)
        # pip in the container trusts what the host trusts (a proxy's CA, say) and shares its cache.
        trust = Path(os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "-D", str(self.root), "--boot", "--register=no", "--keep-unit", "-M", "ans-systemd",
                 f"--bind={cache}:/root/.cache/pip", f"--bind-ro={trust.resolve()}:{HOST_CA}", "--console=pipe"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = wait_for("the container's PID 1", self._pid1, 60)
        state = wait_for("the container booted", lambda: self.state() in ("running", "degraded") and self.state(), 120)
        step(f"container up: systemd {self.run('systemctl', '--version').split()[1]} as PID 1, system {state}")

    def _pid1(self) -> int:
        if self.proc.poll() is not None:
            raise OSError(f"systemd-nspawn exited: {self.log.read_text()[-2000:]}")
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            if re.search(rf"^PPid:\s+{self.proc.pid}$", text, re.M) and re.search(r"^Name:\s+systemd$", text, re.M):
                return int(status.parent.name)
        return 0

    def state(self) -> str:
        return subprocess.run(["nsenter", "-t", str(self.pid), "-a", "systemctl", "is-system-running"],
                              capture_output=True, text=True).stdout.strip()

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> str:
        proc = subprocess.run(["nsenter", "-t", str(self.pid), "-a", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                               "HOME=/root", "LANG=C.UTF-8", *args], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise OSError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def show(self, unit: str, prop: str) -> str:
        return self.run("systemctl", "show", "-P", prop, unit).strip()

    def shutdown(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        subprocess.run(["nsenter", "-t", str(self.pid), "-a", "systemctl", "poweroff"], capture_output=True)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Watcher:
    """Everything the apps publish on the broker, as the host sees it."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.status: dict[str, str] = {}
        self.stats: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"systemd-bench-{os.getpid()}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("ans/v1/#", qos=1)
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, client, userdata, message) -> None:
        parts = message.topic.split("/")
        if len(parts) != 5:
            return
        with self.lock:
            if parts[4] == "status":
                self.status[parts[3]] = message.payload.decode(errors="replace")
            elif parts[4] == "stats":
                try:
                    self.stats[parts[3]] = json.loads(message.payload)
                except ValueError:
                    pass

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def install_ans(box: Container, root: Path, tarball: bytes, digest: str) -> None:
    stamp = root / "opt/ans/installed-from"
    if stamp.exists() and stamp.read_text() == digest:
        step("ANS already installed in the container from this source")
        return
    step("copying the source into the container and pip installing '.[board,edge]' (not editable)")
    src = root / "opt/ans/src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        tar.extractall(src, filter="data")
    shutil.rmtree(root / "opt/ans/venv", ignore_errors=True)
    box.run("python3", "-m", "venv", "/opt/ans/venv")
    pip = ("env", f"PIP_CERT={HOST_CA}", "PIP_DISABLE_PIP_VERSION_CHECK=1", "/opt/ans/venv/bin/pip", "install", "-q")
    box.run(*pip, "/opt/ans/src[board,edge]", timeout=1800)
    shutil.rmtree(src)  # a regular install needs no checkout: the units come from the venv's share/
    stamp.write_text(digest)


def restart_after(box: Container, unit: str, signal: str, timeout: float) -> dict:
    """Send ``signal`` to the unit's main process; wait until systemd has started it again."""
    before, restarts = box.show(unit, "MainPID"), int(box.show(unit, "NRestarts"))
    sent = time.monotonic()
    box.run("kill", f"-{signal}", before)
    wait_for(f"{unit} restarted after SIGNAL {signal}",
             lambda: int(box.show(unit, "NRestarts")) > restarts and box.show(unit, "ActiveState") == "active"
             and box.show(unit, "MainPID") not in ("0", before), timeout)
    return {"signal": signal, "back_active_after_s": round(time.monotonic() - sent, 1),
            "restarts": int(box.show(unit, "NRestarts"))}


def main() -> int:
    parser = argparse.ArgumentParser(description="run both ANS units under a real systemd (root)")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/ans-systemd"),
                        help="where the Debian root is kept between runs")
    parser.add_argument("--keep", action="store_true", help="leave the container running at the end (debugging)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/systemd_real.py needs root (debootstrap, systemd-nspawn)", file=sys.stderr)
        return 2
    root = args.work / "root"
    ensure_tools()
    ensure_root(root)
    tarball, digest = source_tarball()
    report: dict = {"checks": {}}
    checks = report["checks"]
    broker = Broker(dev_config(), args.work / "broker")
    broker.start()
    box = Container(root, args.work / "container.log")
    watcher = None
    try:
        box.boot()
        report["systemd"] = box.run("systemctl", "--version").splitlines()[0]
        install_ans(box, root, tarball, digest)
        ans = "/opt/ans/venv/bin/ans"
        if not (root / "opt/ans/bundles/demo/manifest.json").exists():
            step("converting the demo detector in the container")
            box.run(ans, "convert", "--zoo", "demo", "--out", "/opt/ans/bundles/demo")
        for role in ("device", "edge"):  # a fresh install each run
            box.run(ans, "service", "uninstall", "--role", role, "--purge")
        watcher = Watcher(broker.port)

        step("ans service install --role edge")
        out = box.run(ans, "service", "install", "--role", "edge", "--bundle", "/opt/ans/bundles/demo",
                      "--broker", broker.url)
        checks["edge_installed_and_ready"] = box.show("ans-edge", "ActiveState") == "active"
        step("ans service install --role device")
        out = box.run(ans, "service", "install", "--role", "device", "--bundle", "/opt/ans/bundles/demo",
                      "--broker", broker.url)
        checks["device_not_started_without_camera"] = ("not starting" in out
                                                       and box.show("ans-device", "ActiveState") == "inactive"
                                                       and box.show("ans-device", "UnitFileState") == "enabled")
        config = root / "etc/ans/device.toml"
        text = config.read_text()
        for key, value in (("source", '"demo"'), ("loop", "true"), ("emulate_slowdown", "30.0"), ("id", '"cam-sd"')):
            text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
        config.write_text(text)
        sent = time.monotonic()
        box.run("systemctl", "start", "ans-device")  # Type=notify: returns once READY=1 came
        report["device_ready_s"] = round(time.monotonic() - sent, 1)
        checks["device_ready"] = box.show("ans-device", "ActiveState") == "active"
        step(f"device READY after {report['device_ready_s']} s (calibration included)")

        uids = {role: int(box.run("ps", "-o", "uid=", "-p", box.show(f"ans-{role}", "MainPID")))
                for role in ("device", "edge")}
        checks["dynamic_users"] = all(61184 <= uid <= 65519 for uid in uids.values())  # systemd's dynamic range
        report["uids"] = uids

        def offloaded() -> int:
            with watcher.lock:
                return watcher.stats.get("cam-sd", {}).get("totals", {}).get("offloaded", 0)

        wait_for("the device offloading to the edge", offloaded, 120)
        checks["device_offloads_to_edge"] = True
        step(f"the device offloads: {offloaded()} frames answered by the edge so far")
        first = box.show("ans-device", "WatchdogTimestampMonotonic")
        wait_for("a new watchdog ping", lambda: box.show("ans-device", "WatchdogTimestampMonotonic") != first, 40)
        checks["watchdog_pinged"] = True

        step("kill -9 the device and the edge")
        report["device_kill9"] = restart_after(box, "ans-device", "KILL", 120)
        report["edge_kill9"] = restart_after(box, "ans-edge", "KILL", 180)
        checks["restarted_after_kill9"] = True
        step("SIGSTOP the device: the watchdog (WatchdogSec=30) should kill and restart it")
        report["device_watchdog"] = restart_after(box, "ans-device", "STOP", 120)
        journal = box.run("journalctl", "-u", "ans-device", "--no-pager", "-q")
        checks["watchdog_restarted_frozen_device"] = "Watchdog timeout" in journal
        step(f"restarted after kill -9 in {report['device_kill9']['back_active_after_s']} s (device), "
             f"{report['edge_kill9']['back_active_after_s']} s (edge); by the watchdog in "
             f"{report['device_watchdog']['back_active_after_s']} s")

        security = box.run("systemd-analyze", "security", "--no-pager", "ans-device.service", "ans-edge.service",
                           check=False)
        report["exposure"] = dict(re.findall(r"^(ans-\w+)\.service\s+(\d+\.\d+)", security, re.M))
        checks["exposure_at_most_3"] = (len(report["exposure"]) == 2
                                        and all(float(v) <= 3.0 for v in report["exposure"].values()))

        step("systemctl stop both")
        wait_for("the device online again", lambda: watcher.status.get("cam-sd") == "online", 60)
        box.run("systemctl", "stop", "ans-device", "ans-edge")
        saved = root / "var/lib/private/ans/device/learner.json"
        checks["learner_saved_on_stop"] = saved.is_file()
        checks["offline_retained"] = wait_for("offline on the broker", lambda: watcher.status.get("cam-sd") == "offline"
                                              and watcher.status.get(_edge_id(root)) == "offline", 30)
        report["stop_result"] = {role: box.show(f"ans-{role}", "Result") for role in ("device", "edge")}
        checks["clean_stop"] = set(report["stop_result"].values()) == {"success"}
    finally:
        if watcher is not None:
            watcher.close()
        if not args.keep:
            box.shutdown()
        broker.stop()
    report["passed"] = all(checks.values())
    print(json.dumps(report, indent=1))
    (args.work / "report.json").write_text(json.dumps(report, indent=1))
    return 0 if report["passed"] else 1


def _edge_id(root: Path) -> str:
    match = re.search(r'^id = "([^"]+)"', (root / "etc/ans/edge.toml").read_text(), re.M)
    return match.group(1) if match else "edge-1"


if __name__ == "__main__":
    sys.exit(main())
