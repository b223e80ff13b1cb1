"""``ans demo`` end to end: converts, starts its own broker and edge, runs the device on the demo clip
through an edge outage, and leaves the annotated video, the results and the plot."""

import subprocess

import pytest

from mqtt.protocol import FrameRecord

from .running import ANS, ENV

pytest.importorskip("keras")
pytest.importorskip("matplotlib")
cv2 = pytest.importorskip("cv2")


def test_the_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(ANS + ["demo", "--out", str(out), "--frames", "80", "--slowdown", "30"],
                          capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "80 frames:" in proc.stdout and "stopping the edge" in proc.stdout
    records = [FrameRecord.from_json(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r.frame for r in records] == list(range(80))
    assert any(r.edge for r in records)  # the edge answered some
    cap = cv2.VideoCapture(str(out / "annotated.avi"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 80
    assert (out / "demo.png").stat().st_size > 10_000
