"""A stamp that changes whenever the configuration the trigger reads changes.

The trigger checks the pools after every appended event; it reads the global settings row,
the assets and the pool breakers. They change a few times a day, the events thousands of
times: each process keeps them in memory, keyed by the stamp, and a check costs one read of
the stamp (`inventory_configstamp`, one row).

The stamp is written by database triggers (installed by inventory's migration 0010 on the
settings row and the assets, and operations' 0005 on the pool breakers) on every INSERT,
UPDATE and DELETE of the watched tables, in the writing transaction, whatever writes them
(services, the admin, raw SQL), so every process sees a new stamp exactly when it sees the new
rows. The stamp is a random token, never a counter: a transaction that changes a setting and
rolls back leaves a token no other process can ever produce again, so a value cached inside
that transaction is never taken for a committed one. No stamp row (a new or flushed database)
means nothing is cached.

Locks (PostgreSQL): a write to a watched table also locks the stamp row until commit, so
writers of configuration are serialised; the stamp row is the last lock such a transaction
takes (pools, then breakers, then the stamp), keeping the global lock order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from cachetools import LRUCache
from django.db import connections

from inventory import rawsql

T = TypeVar("T")

TABLE = "inventory_configstamp"
STAMP_SQL = _STAMP_SQL = f'SELECT "token" FROM "{TABLE}" WHERE "id" = 1'


def stamp(using: str = "default") -> str | None:
    """The current stamp (None: no configuration written since the database was created)."""
    rows = rawsql.fetch(_STAMP_SQL, (), using=using)
    return None if not rows else str(rows[0][0])


# Entries kept (one per distinct `what`, e.g. per set of pools checked together); the least
# recently used go first beyond it.
MAX_ENTRIES = 10_000
# (alias, database name, what) -> (stamp, value)
_cache: LRUCache[tuple[str, str, str], tuple[str, Any]] = LRUCache(maxsize=MAX_ENTRIES)
_lock = threading.Lock()


def cached(what: str, load: Callable[[], T], using: str = "default") -> T:
    """`load()`'s value, loaded again only when the stamp changed since it was cached.

    The stamp is read before loading, so a cached value is never older than its stamp (a
    change committed between the two reads only makes the next call load again)."""
    connection = connections[using]
    key = (using, str(connection.settings_dict.get("NAME")), what)
    current = stamp(using)
    if current is not None:
        with _lock:
            hit = _cache.get(key)
        if hit is not None and hit[0] == current:
            return hit[1]
    value = load()
    if current is not None:
        with _lock:
            _cache[key] = (current, value)
    return value


def clear() -> None:
    with _lock:
        _cache.clear()
