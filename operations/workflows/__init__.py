"""Resumable operation workflows run by django-q2 workers (issue #5).

Entry point: `operation_advance(operation_id=..., venues=None)` (see `runner`). Per-kind
workflows: `mint`, `redemption` and `usdc`; the step contract is in `base`, the helpers a step
uses in `context`.
"""

from operations.workflows.runner import AdvanceResult, operation_advance

__all__ = ["AdvanceResult", "operation_advance"]
