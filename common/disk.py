"""Files a running service writes (results, learner state, calibration): a full or failing disk is
an ordinary fault. It is said (naming the file and the space left), counted, and tried again at
the next write; it never stops detection and never leaves a line cut in half."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_problem(path: str | Path, exc: OSError) -> str:
    """One line for a failed write: the file, the error, and what is left on its filesystem."""
    folder = Path(path).parent
    try:
        free = f"{shutil.disk_usage(folder).free:,} bytes free there"
    except OSError:
        free = "free space unknown"
    return f"cannot write {path}: {exc.strerror or exc} ({free})"


class JsonLines:
    """One JSON object per line, each line written whole or not at all: a write that fails part-way
    (a full disk) is cut back to the last whole line, and the next line is tried afresh."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.end = 0  # where the last whole line ends

    def write(self, document: bytes) -> None:
        """One JSON document (no newline in it) as a line. Raises OSError when the line could not be
        written (the file then ends with a whole line)."""
        data = memoryview(document + b"\n")
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            os.ftruncate(self.fd, self.end)
            os.lseek(self.fd, self.end, os.SEEK_SET)
            raise
        self.end = os.lseek(self.fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        os.close(self.fd)
