"""The layout is enforced, not hoped for: the import contracts in pyproject.toml hold (and a
violation breaks them), and the README's layout table names every top-level package."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.parent.name for p in REPO.glob("*/__init__.py"))
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_import_contracts_hold():
    proc = lint(REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 broken" in proc.stdout


def test_a_device_module_importing_the_converter_or_tensorflow_breaks_them(tmp_path):
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.h5"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    keyframe = tmp_path / "device_app" / "keyframe.py"
    keyframe.write_text(keyframe.read_text() + "\n\ndef _bad():\n    import converter.bundle\n    import tensorflow\n")
    proc = lint(tmp_path)
    assert proc.returncode != 0
    assert "do not know each other BROKEN" in proc.stdout and "neither TensorFlow nor Keras" in proc.stdout


def test_the_readme_layout_table_names_every_top_level_package():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Layout"):]
    named = set(re.findall(r"^\| `([a-z_]+)/`", table, re.MULTILINE))
    assert set(PACKAGES) <= named, f"missing from the README's layout table: {set(PACKAGES) - named}"
    assert all((REPO / name).is_dir() for name in named), f"named but absent: {[n for n in named if not (REPO / n).is_dir()]}"
