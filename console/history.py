"""Ratio history: a sample per pool each time a venue poll (a balance snapshot) touches it."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from console.models import PoolRatioSample
from inventory.domain.events import SNAPSHOT
from inventory.domain.inventory import ratio
from inventory.models import InventoryPool

_RATIO_STEP = Decimal("0.000001")


def _rounded(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(_RATIO_STEP, rounding=ROUND_HALF_EVEN)


def on_events_appended(sender: Any, events: list, pools: set[str], **kwargs: Any) -> None:
    """Inside the appending transaction: sample the pools a snapshot event touched."""
    snapshots = [stored for stored in events if stored.aggregate_type == SNAPSHOT]
    if not snapshots or not pools:
        return
    moment = max(stored.recorded_at for stored in snapshots)
    samples = []
    for row in InventoryPool.objects.filter(key__in=sorted(pools)):
        pool = row.to_domain()
        samples.append(
            PoolRatioSample(
                pool=row.key,
                recorded_at=moment,
                onchain_total=pool.onchain.total() if pool.onchain else None,
                offchain_total=pool.offchain.total() if pool.offchain else None,
                ratio=_rounded(ratio(pool)),
            )
        )
    PoolRatioSample.objects.bulk_create(samples)
