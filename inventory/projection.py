"""Inventory projection: applies stored events to the InventoryPool rows.

Called by `inventory.store` inside the appending transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inventory.store import StoredEvent


def projection_apply(events: Sequence[StoredEvent]) -> set[str]:
    """Apply events to the pools they touch; returns the touched pool keys."""
    # Filled in by the inventory projection work (issue: Foundation, "Persisted projection").
    return set()
