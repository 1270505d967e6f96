"""How many processes a backtest runs its candidates in (`operations.backtest.worker_count`).
Its own module: the module-scoped day of `test_backtest.py` holds a transaction open, and
inside one the candidates never leave the process."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from operations.backtest import worker_count


def _count_in_a_daemon(queue) -> None:
    queue.put(worker_count(None, 3))


@pytest.mark.django_db(transaction=True)
def test_candidates_run_in_worker_processes_except_inside_a_daemonic_one():
    """Outside a transaction the candidates are split over processes (one per candidate, up
    to the cores); a daemonic process (a django-q2 worker runs the console's task) may not
    start any, so there the backtest runs them itself instead of failing."""
    cores = os.cpu_count() or 1
    assert worker_count(None, 3) == min(3, cores)
    assert worker_count(8, 2) == min(2, 8)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_count_in_a_daemon, args=(queue,), daemon=True)
    process.start()
    counted = queue.get(timeout=30)
    process.join(timeout=30)
    assert counted == 1
