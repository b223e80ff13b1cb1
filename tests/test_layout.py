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


def _attributes(cls) -> set[str]:
    """The instance attributes a class sets (``self.x = ...`` anywhere in its methods)."""
    import ast

    names = set()
    for node in ast.walk(cls):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            for t in ast.walk(target):
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    names.add(t.attr)
    return names


def test_device_classes_are_small_and_nobody_asks_a_policy_what_it_can_do():
    """Every class on the device holds at most 15 attributes; the learner's interface is declared
    (``Policy``), so no caller probes a policy with getattr or hasattr."""
    import ast

    classes = {node.name: node for path in (REPO / "device_app").rglob("*.py")
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(node, ast.ClassDef)}

    def held(name: str) -> set[str]:  # its own and what its bases in device_app set
        node = classes[name]
        return _attributes(node).union(*(held(b.id) for b in node.bases if isinstance(b, ast.Name) and b.id in classes))
    assert {"Device", "ANS", "MuLinUCB", "Link", "EdgeView"} <= set(classes)
    for name in classes:
        assert len(held(name)) <= 15, (name, sorted(held(name)))
    for package in ("device_app", "ans", "lab", "edge_app"):
        for path in (REPO / package).rglob("*.py"):
            for line in path.read_text(encoding="utf-8").splitlines():
                assert not re.search(r"(getattr|hasattr)\((self\.)?(policy|learner|p)\b", line), (path.name, line)
