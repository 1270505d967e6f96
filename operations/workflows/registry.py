"""Which workflow advances which operation kind (spec 6: dispatch per kind).

USDC workflows live in `operations.workflows.usdc`, which exposes `WORKFLOW` (one object for
both directions; the aggregate carries the direction).
"""

from __future__ import annotations

import importlib

from operations.models import OperationKind
from operations.workflows.base import Workflow


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
