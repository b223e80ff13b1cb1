"""TensorFlow without its start-up chatter.

TensorFlow 2.x logs through absl before absl is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not
silence it: every ``ans edge`` and ``ans convert`` would start with absl's "All log messages
before absl::InitializeLog()" preamble, oneDNN's notice and the CPU-feature notice, which users
learn to ignore (and then miss real errors among). This imports TensorFlow with file descriptor 2
(where the C++ side writes) caught, drops exactly those notices and passes every other line on.
"""

from __future__ import annotations

import os
import re
import sys

from common.fd_capture import captured

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # what TensorFlow does honour: its later INFO/WARNING lines

NOISE = re.compile(r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                   r"|port\.cc:\d+\] oneDNN custom operations are on"
                   r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
                   r"|^To enable the following instructions: .*rebuild TensorFlow")


def import_tensorflow():
    """``import tensorflow``, its known start-up notices dropped; anything else still reaches stderr."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with captured(2) as text:
        import tensorflow
    for line in text[0].splitlines():
        if line.strip() and not NOISE.search(line):
            print(line, file=sys.stderr)
    return tensorflow
