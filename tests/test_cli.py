import json
import subprocess
import sys
from pathlib import Path

from ans.cli import main


def test_simulate_prints_one_json_object(capsys):
    assert main(["simulate", "--profile", "vgg16-tx2", "--trace", "bandwidth-drop", "--policy", "ans",
                 "--frames", "600", "--seed", "2", "--json", "--splits"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("policy", "frames", "mean_delay_s", "p95_delay_s", "regret_s", "splits"):
        assert key in out
    assert out["frames"] == 600 and len(out["splits"]) == 600 and out["ratio_to_oracle"] >= 1.0


def test_simulate_reads_a_csv_trace_and_paper_profile_path(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("frame,bandwidth_mbps,rtt_ms,edge_slowdown,key_frame\n0,100,10,1,0\n100,10,10,1,1\n101,10,10,1,0\n")
    profile = Path(__file__).parents[1] / "device_app" / "profiles" / "tiny_yolov2_tx2.json"
    assert main(["simulate", "--profile", str(profile), "--trace", str(trace), "--frames", "300", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "ans"


def test_state_out_then_in(tmp_path, capsys):
    state = tmp_path / "learner.json"
    args = ["simulate", "--profile", "tiny-yolov2-tx2", "--trace", "steady", "--frames", "400", "--json"]
    assert main(args + ["--state-out", str(state)]) == 0
    assert json.loads(state.read_text())["policy"] == "ans"
    assert main(args + ["--state-in", str(state), "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(args + ["--policy", "oracle", "--state-in", str(state)]) == 2
    assert "keeps no state" in capsys.readouterr().err


def test_bad_input_exits_non_zero_with_the_file_and_line(tmp_path):
    trace = tmp_path / "bad.csv"
    trace.write_text("frame,bandwidth_mbps,rtt_ms,edge_slowdown\n0,100,10,1\n10,-5,10,1\n")
    proc = subprocess.run([sys.executable, "-m", "ans.cli", "simulate", "--profile", "tiny-yolov2-tx2",
                           "--trace", str(trace)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{trace}:3: bandwidth_mbps must be positive" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_script_is_installed():
    ans = Path(sys.executable).parent / "ans"
    proc = subprocess.run([str(ans), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "simulate" in proc.stdout and "experiment" in proc.stdout


def test_every_option_of_every_subcommand_says_what_it_does():
    import argparse

    from ans.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    silent = [f"{name} {a.option_strings or a.dest}" for name, sub in commands.choices.items() for a in sub._actions
              if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not silent, silent
