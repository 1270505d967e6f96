"""bench/queue_log.py reads a service log: operations, lines, re-enqueued lines, and the time
from a wait's end to the next run's start."""

from __future__ import annotations

from bench.queue_log import measure

LOG = """\
2026-12-07 03:00:00,000 INFO operations.services operation 7 created: mint AAPL
2026-12-07 03:00:00,100 INFO operations.workflows.runner operation 7 (mint AAPL 1): attempt 1
2026-12-07 03:00:00,200 INFO operations.workflows.runner operation 7: waiting 0.3s (mint pending)
2026-12-07 03:00:00,700 INFO operations.workflows.runner operation 7 (mint AAPL 1): attempt 1
2026-12-07 03:00:01,000 WARNING runner operation 7: attempt 1 failed, retrying in 2.0s
2026-12-07 03:00:03,100 INFO operations.sweep sweep: operation 7 is due, re-enqueued
2026-12-07 03:00:03,400 INFO operations.workflows.runner operation 7 (mint AAPL 1): attempt 2
2026-12-07 03:00:04,000 WARNING operations.due operation 7: task not taken, enqueued again
"""


def test_the_log_figures():
    figures = measure(LOG)
    assert figures["operations"] == 1
    assert figures["log_lines"] == 8
    assert figures["warning_lines"] == 2
    assert (figures["reenqueued_warnings"], figures["reenqueued_info"]) == (1, 1)
    latency = figures["wait_end_to_start_s"]
    # 0.7 - (0.2 + 0.3) and 3.4 - (1.0 + 2.0)
    assert latency["n"] == 2
    assert (latency["p50"], latency["max"]) == (0.2, 0.4)
