import numpy as np
import pytest

from lab.sim.trace import TraceError, load_trace


def write(tmp_path, text):
    p = tmp_path / "t.csv"
    p.write_text(text)
    return p


def test_rows_hold_until_the_next_row(tmp_path):
    t = load_trace(write(tmp_path, "frame,bandwidth_mbps,rtt_ms,edge_slowdown\n0,100,10,1\n3,20,5,2\n"))
    per = t.per_frame(5)
    np.testing.assert_array_equal(per["bandwidth_mbps"], [100, 100, 100, 20, 20])
    np.testing.assert_array_equal(per["edge_slowdown"], [1, 1, 1, 2, 2])
    assert "key_frame" not in per


def test_key_frame_column_and_column_order(tmp_path):
    t = load_trace(write(tmp_path, "rtt_ms,frame,key_frame,edge_slowdown,bandwidth_mbps\n1,0,1,1,50\n1,1,0,1,50\n"))
    np.testing.assert_array_equal(t.per_frame(3)["key_frame"], [True, False, False])


@pytest.mark.parametrize(
    "text, where, message",
    [
        ("frame,bandwidth_mbps,rtt_ms\n0,1,1\n", ":1:", "missing column(s) edge_slowdown"),
        ("frame,bandwidth_mbps,rtt_ms,edge_slowdown\n0,100,10,1\n5,-3,10,1\n", ":3:", "bandwidth_mbps must be positive"),
        ("frame,bandwidth_mbps,rtt_ms,edge_slowdown\n0,100,10,1\n9,1,1,1\n4,1,1,1\n", ":4:", "frames must increase"),
        ("frame,bandwidth_mbps,rtt_ms,edge_slowdown\n0,fast,10,1\n", ":2:", "bandwidth_mbps is not a number"),
        ("frame,bandwidth_mbps,rtt_ms,edge_slowdown\n2,100,10,1\n", ":2:", "must start at frame 0"),
        ("frame,bandwidth_mbps,rtt_ms,edge_slowdown\n0,100,10\n", ":2:", "3 fields, header has 4"),
        ("frame,bandwidth_mbps,rtt_ms,edge_slowdown,key_frame\n0,100,10,1,2\n", ":2:", "key_frame must be 0 or 1"),
        ("", ":1:", "empty trace"),
    ],
)
def test_bad_traces_name_file_line_and_problem(tmp_path, text, where, message):
    path = write(tmp_path, text)
    with pytest.raises(TraceError) as err:
        load_trace(path)
    assert f"{path}{where}" in str(err.value) and message in str(err.value)
