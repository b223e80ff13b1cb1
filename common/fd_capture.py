"""Catch what native libraries write straight to file descriptors 1 and 2 (TensorFlow's C++ logging,
the TFLite converter's progress lines), which Python's own redirection cannot see."""

from __future__ import annotations

import contextlib
import os
import sys
import threading


@contextlib.contextmanager
def captured(*fds: int):
    """Within the block, what is written to ``fds`` (default 1 and 2) is collected instead of shown;
    the block receives a list that holds the text (one string per descriptor) once it ends."""
    fds = fds or (1, 2)
    text: list[str] = []
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved, readers, chunks = [], [], []
    for fd in fds:
        read_end, write_end = os.pipe()
        saved.append(os.dup(fd))
        os.dup2(write_end, fd)
        os.close(write_end)
        got: list[bytes] = []
        chunks.append(got)
        reader = threading.Thread(target=_drain, args=(read_end, got), daemon=True)
        reader.start()
        readers.append((reader, read_end))
    try:
        yield text
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, old in zip(fds, saved):
            os.dup2(old, fd)  # the pipe's last write end closes: its reader sees the end
            os.close(old)
        for (reader, read_end), got in zip(readers, chunks):
            reader.join()
            os.close(read_end)
            text.append(b"".join(got).decode(errors="replace"))


def _drain(fd: int, into: list[bytes]) -> None:
    while chunk := os.read(fd, 65536):
        into.append(chunk)
