"""``ans monitor`` shows every device and edge on a real broker, from their status and stats topics,
readable at 80 columns, and forgets clients that left long ago."""

import json
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("rich")
mqtt = pytest.importorskip("paho.mqtt.client")

from rich.cells import cell_len  # noqa: E402
from rich.console import Console  # noqa: E402

from ans.monitor import Board  # noqa: E402
from mqtt.protocol import FrameRecord, Topics  # noqa: E402
from device_app.learner.profile import load_profile  # noqa: E402
from device_app.learner.registry import make_policy  # noqa: E402
from device_app.telemetry import DeviceStats  # noqa: E402
from edge_app.server import EdgeStats  # noqa: E402

from .broker import dev_config, started  # noqa: E402
from .running import ANS, ENV  # noqa: E402


def test_monitor_lists_devices_and_edges(tmp_path):
    profile = load_profile("tiny-yolov2-tx2")
    stats = DeviceStats(profile.n_splits, [str(k) for k in range(profile.n_splits)])
    for frame in range(30):
        stats.record(FrameRecord(frame, 3, frame == 7, 0.04, [], [], None, True), explored=frame % 10 == 0)
    device_stats = stats.report(make_policy("ans", profile), device="cam-1")
    edge = EdgeStats()
    edge.batch(3, 0.012, [0.001, 0.002, 0.002])
    edge_stats = edge.report(edge="edge-1", queue_depth=2)
    with started(dev_config(), tmp_path) as broker:
        from paho.mqtt.enums import CallbackAPIVersion

        pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        for topic, payload, retain in [("ans/v1/device/cam-1/status", b"online", True),
                                       ("ans/v1/device/cam-2/status", b"offline", True),
                                       ("ans/v1/edge/edge-1/status", b"online", True)]:
            pub.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
        monitor = subprocess.Popen(ANS + ["monitor", "--broker", broker.url, "--seconds", "3"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**ENV, "COLUMNS": "80"})
        while monitor.poll() is None:  # stats are not retained: sent, as the apps do, until the monitor is done
            pub.publish("ans/v1/device/cam-1/stats", json.dumps(device_stats), qos=1).wait_for_publish(5)
            pub.publish("ans/v1/edge/edge-1/stats", json.dumps(edge_stats), qos=1).wait_for_publish(5)
            pub.publish("ans/v1/device/cam-2/stats", b"{not json", qos=1).wait_for_publish(5)
            try:
                monitor.wait(0.1)
            except subprocess.TimeoutExpired:
                pass
        out, err = monitor.communicate(timeout=30)
        pub.loop_stop()
    assert monitor.returncode == 0, err
    assert max(map(len, out.splitlines())) <= 80
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in
            ("cam-1", "cam-2", "edge-1")}
    assert set(rows) == {"cam-1", "cam-2", "edge-1"}
    cells = rows["cam-1"].split()
    assert cells[1] == "online" and cells[3:5] == ["3", "40/40"]
    assert "offline" in rows["cam-2"] and "bad stats" in rows["cam-2"]
    assert rows["edge-1"].split()[1] == "online" and "12.0" in rows["edge-1"] and "3.0" in rows["edge-1"]


DEVICE = {"fps": 14.9, "split": 12, "delay_mean_ms": 38.25, "delay_p95_ms": 120.5, "fallbacks": 1234,
          "exploration_rate": 0.031}
EDGE = {"requests_per_s": 120.3, "compute_mean_ms": 4.12, "errors": 3, "queue_depth": 17, "batch_mean": 3.4,
        "cpu_percent": 85.0}


def _render(board: Board, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(board.tables())
    return console.export_text().splitlines()


def test_every_row_fits_80_columns_on_one_line():
    board = Board(Topics("ans"))
    for k in range(3):
        board.take(f"ans/v1/device/kitchen-camera-{k}/status", b"online")
        board.take(f"ans/v1/device/kitchen-camera-{k}/stats", json.dumps(DEVICE).encode())
    board.take("ans/v1/edge/gpu-server-in-the-basement-01/status", b"online")
    board.take("ans/v1/edge/gpu-server-in-the-basement-01/stats", json.dumps(EDGE).encode())
    lines = _render(board)
    assert max(map(len, lines)) <= 80
    rows = [line for line in lines if "online" in line]
    assert len(rows) == 4  # one line per client: nothing wrapped
    assert any("38/120" in r and "1234" in r and "0.031" in r for r in rows)
    assert any("gpu-server-in-t…" in r and "85%" in r and "4.1" in r for r in rows)


def test_a_client_offline_and_silent_too_long_is_forgotten():
    board = Board(Topics("ans"), forget_after_s=60)
    for name in ("old", "new", "alive"):
        board.take(f"ans/v1/device/{name}/status", b"online")
    board.take("ans/v1/device/old/status", b"offline")
    board.take("ans/v1/device/new/status", b"offline")
    board.rows[("device", "old")]["heard"] -= 61
    board.rows[("device", "alive")]["heard"] -= 3600  # online: kept however quiet
    text = "\n".join(_render(board))
    assert "old" not in text and "new" in text and "alive" in text
    keep = Board(Topics("ans"), forget_after_s=None)
    keep.take("ans/v1/device/old/status", b"offline")
    keep.rows[("device", "old")]["heard"] -= 10**6
    assert "old" in "\n".join(_render(keep))


def test_hostile_retained_payloads_are_shown_as_text_never_read_as_markup():
    board = Board(Topics("ans"))
    board.take("ans/v1/device/dev-b/status", b"[/]")
    board.take("ans/v1/device/[bold]x/status", b"online")
    board.take("ans/v1/device/[bold]x/stats", json.dumps({"fps": "[/]", "split": 1e308,
                                                                 "delay_mean_ms": [1, 2], "fallbacks": True}).encode())
    board.take("ans/v1/edge/e/stats", b'{"cpu_percent": "[red]", "errors": {"a": 1}}')
    text = "\n".join(_render(board))
    assert "[/]" in text and "[bold]x" in text and "[red]%" in text


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(
    st.one_of(st.text(max_size=40), st.builds(lambda k, n, w: f"ans/v1/{k}/{n}/{w}", st.sampled_from(["device", "edge"]),
                                             st.text(max_size=20), st.sampled_from(["status", "stats"]))),
    st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
              st.dictionaries(st.sampled_from(list(DEVICE) + list(EDGE)),
                              st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                                        st.lists(st.integers(), max_size=3)), max_size=8).map(
                  lambda d: json.dumps(d).encode()))), max_size=12))
def test_the_board_renders_whatever_arrives(messages):
    board = Board(Topics("ans"))
    for topic, payload in messages:
        board.take(topic, payload)
    assert max(map(cell_len, _render(board)), default=0) <= 80  # columns on the terminal (wide, zero-width)


def test_wide_and_zero_width_characters_stay_within_80_columns():
    board = Board(Topics("ans"))
    board.take("ans/v1/device/0/status", b"\x00\x00\x00\x00\x00\x00\x00\xe0\xa3\x8a")
    board.take("ans/v1/device/00000000000\U00020000\U00020000/stats", b"")
    assert max(map(cell_len, _render(board))) <= 80


def test_without_a_broker_the_monitor_says_so_and_exits_non_zero():
    from lab.local_broker import free_port

    port = free_port()  # nothing listens there
    done = subprocess.run(ANS + ["monitor", "--broker", f"mqtt://127.0.0.1:{port}", "--seconds", "0.5"],
                          capture_output=True, text=True, timeout=120, env={**ENV, "COLUMNS": "80"})
    assert done.returncode == 1
    assert f"not connected to 127.0.0.1:{port}" in done.stdout and "not connected" in done.stderr
