"""Bounded logging: one line per kind per interval, with the count of those not shown."""

import logging

from common.logs import RateLimitedLog


def test_one_line_per_kind_per_interval_and_a_bounded_number_of_kinds(caplog):
    now = [0.0]
    logs = RateLimitedLog(logging.getLogger("t"), every_s=60, max_kinds=3, clock=lambda: now[0])
    caplog.set_level("WARNING", logger="t")
    for k in range(1000):
        logs.warning("bad", "message %d", k)
        logs.warning(f"kind-{k}", "other %d", k)  # made-up kinds share one past max_kinds
    assert [r.getMessage() for r in caplog.records] == ["message 0", "other 0", "other 1", "other 2"]
    now[0] = 61.0
    logs.warning("bad", "message %d", 1000)
    assert caplog.records[-1].getMessage() == "message 1000 (999 more like it in the last 60 s)"
    assert len(logs._kinds) == 4  # three kinds and the one the rest share
