import json

from lab.sim.experiment import run_experiment


def test_experiment_writes_table_json_traces_and_plots(tmp_path):
    lines = []
    table = run_experiment(tmp_path, profiles=("tiny-yolov2-tx2",), scenarios=("steady", "bandwidth-drop"),
                           policies=("ans", "oracle", "device-only"), seeds=2, frames=600, jobs=1, log=lines.append)
    assert len([line for line in lines if line.startswith("[")]) == 2 * 3 * 2  # progress per run
    assert table["tiny-yolov2-tx2"]["steady"]["oracle"]["ratio_to_oracle"] == 1.0
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["runs"]) == 12
    assert "| ans |" in (tmp_path / "summary.md").read_text()
    for scenario in ("steady", "bandwidth-drop"):
        png = tmp_path / f"tiny-yolov2-tx2_{scenario}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "traces" / f"{scenario}.csv").is_file()


def test_a_policy_keeps_its_colour_in_every_panel(tmp_path, monkeypatch):
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lab.sim import experiment

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    rng = np.random.default_rng(0)
    runs = {pol: [(None, None, rng.random(50), rng.random(50) * 0.5, rng.integers(0, 5, 50))]
            for pol in ("oracle", "neurosurgeon", "ans", "mu-linucb-paper")}
    experiment.plot_runs(tmp_path / "p.png", "tiny", "steady", runs)
    colours: dict[str, set] = {}
    for ax in kept[0].axes:
        for line in ax.get_lines():
            colours.setdefault(line.get_label(), set()).add(matplotlib.colors.to_hex(line.get_color()))
    assert {"ans", "mu-linucb-paper", "oracle"} <= set(colours)
    assert all(len(c) == 1 for c in colours.values()), colours
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)  # and no two share one
