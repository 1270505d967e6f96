"""A changelist paginator that never counts a whole table: counts stop at a cap."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.utils.functional import cached_property

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """`count` is exact up to COUNT_CAP rows and COUNT_CAP beyond; the database stops reading
    there (`SELECT COUNT(*) FROM (... LIMIT cap)`), so a page costs the same at any size."""

    @cached_property
    def count(self) -> int:
        return self.object_list[:COUNT_CAP].count()
