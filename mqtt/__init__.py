"""The wire between device and edge: cut-tensor codecs (and, with the running system, topics and messages)."""
