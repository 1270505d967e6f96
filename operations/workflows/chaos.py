"""Operator drill: kill the worker at a named point of a workflow (crash-safety rehearsal).

Set `REBALANCER_CHAOS_KILL_AT=<kind>:<point>` (kind = the operation kind, e.g. `mint`,
`redemption`, `usdc_alpaca_to_base`) and the worker sends itself SIGKILL the first time an
operation of that kind reaches the point. Points:

- `before:<effect>`: the intent is committed, the side effect (`request_mint`,
  `broadcast:<label>`, ...) is about to happen;
- `after:<effect>`: the side effect happened, its outcome is not recorded yet;
- `after:<Command>`: the event(s) of that aggregate command just committed.

Each point kills once per operation: a marker file in `REBALANCER_CHAOS_DIR` (default: a
`rebalancer-chaos` directory in the temp dir) is created before the kill, so the restarted worker
gets past it. Unset the variable to disable; it costs one string comparison per point.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from pathlib import Path

from conf.env import WorkerConfig

logger = logging.getLogger(__name__)


def chaos_dir(config: WorkerConfig) -> Path:
    return Path(config.chaos_dir or Path(tempfile.gettempdir()) / "rebalancer-chaos")


def chaos_point(*, config: WorkerConfig, kind: str, point: str, operation_key: str) -> None:
    """Kill this process if `<kind>:<point>` is the configured point (once per operation)."""
    target = config.chaos_kill_at
    if not target or target != f"{kind}:{point}":
        return
    directory = chaos_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / f"{operation_key}-{kind}-{point.replace(':', '_')}"
    try:
        descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(descriptor, str(os.getpid()).encode())
    os.fsync(descriptor)
    os.close(descriptor)
    logger.warning("chaos: killing worker pid %s at %s:%s (%s)", os.getpid(), kind, point, marker)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
