"""Which workflow advances which operation kind (spec 6: dispatch per kind).

USDC workflows live in `operations.workflows.usdc`, which exposes `WORKFLOW` (one object for
both directions; the aggregate carries the direction).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

from inventory.domain.aggregate import AggregateSpec
from operations.models import OperationKind
from operations.workflows.base import Outcome

if TYPE_CHECKING:
    from operations.workflows.context import StepContext


class Workflow(Protocol):
    """One per operation kind (`workflow_for` returns it)."""

    spec: AggregateSpec

    def step(self, ctx: StepContext) -> Outcome:
        """Advance from the current aggregate state by one step."""
        ...

    def fail(self, ctx: StepContext, *, reason: str, actor: str) -> bool:
        """Record the failure event valid in the current state (force-fail, attempts exhausted).

        Returns False when no aggregate exists yet (the caller then releases the guard through
        `operations.services.operation_fail`). Raises `NotFailable` when no failure command is
        valid (for example tokens already received: the mint can only complete).
        """
        ...

    def reconcile_command(self, ctx: StepContext, *, reason: str, operator: str) -> Any:
        """The aggregate's operator Reconcile command (zeroes kept inflight, B13), or raise
        `NotReconcilable` when the current state has nothing to reconcile."""
        ...

    def reconcile_unknown(self, ctx: StepContext, *, reason: str, operator: str) -> Any | None:
        """For an active operation whose venue outcome is unknown (the venue could not be
        asked): the failure command an operator records after checking the venue themselves,
        or None when the current step has no such outcome."""
        ...


class NoWorkflow(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        super().__init__(f"kind={kind!r}: no workflow ({detail})")


def workflow_for(kind: str) -> Workflow:
    if kind == OperationKind.MINT:
        from operations.workflows.mint import WORKFLOW

        return WORKFLOW
    if kind == OperationKind.REDEMPTION:
        from operations.workflows.redemption import WORKFLOW as REDEMPTION

        return REDEMPTION
    if kind in (OperationKind.USDC_ALPACA_TO_BASE, OperationKind.USDC_BASE_TO_ALPACA):
        try:
            module = importlib.import_module("operations.workflows.usdc")
        except ModuleNotFoundError as exc:
            raise NoWorkflow(kind, "operations.workflows.usdc is not installed") from exc
        return module.WORKFLOW
    raise NoWorkflow(kind, "unknown kind")
