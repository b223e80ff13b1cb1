"""TensorFlow's start-up notices never reach the user; anything else written while it loads does."""

import subprocess
import sys

import pytest

CODE = "from ans.quiet_tensorflow import import_tensorflow; tf = import_tensorflow(); print(tf.__name__)"


def test_a_module_writing_noise_and_an_error_to_fd_2_keeps_only_the_error(tmp_path):
    fake = tmp_path / "tensorflow.py"  # stands in for TensorFlow's C++ side writing to file descriptor 2
    fake.write_text(
        "import os\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
        "os.write(2, b'I0000 00:00:1 123 port.cc:153] oneDNN custom operations are on. You may see ...\\n')\n"
        "os.write(2, b'I0000 00:00:1 123 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use ...\\n')\n"
        "os.write(2, b'To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with "
        "the appropriate compiler flags.\\n')\n"
        "os.write(2, b'E0000 cuda_driver.cc:1] failed call to cuInit: a real problem\\n')\n")
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": f"{tmp_path}:{_repo()}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "tensorflow\n"
    assert proc.stderr == "E0000 cuda_driver.cc:1] failed call to cuInit: a real problem\n"


def test_the_real_tensorflow_loads_without_a_word():
    pytest.importorskip("tensorflow")
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(_repo()), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout == "tensorflow\n"
    assert proc.stderr == ""


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]
