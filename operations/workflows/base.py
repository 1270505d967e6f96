"""What a workflow step returns and raises (the `Workflow` protocol itself is in
`operations.workflows.registry`, next to the dispatch per kind).

A workflow advances one operation from its aggregate's current state, one step at a time. A
step either records progress (`Continue`: run the next step now), asks to be woken later
(`Wait`: nothing holds a worker while Alpaca or the attester works), or reports that the
operation is over (`Done`: a terminal event was recorded, or the operation was failed before
its first event).

Side effects happen once: a step that acts records its intent first (the genesis event whose
aggregate id is the idempotency key, or the signed transaction's raw bytes and hash), commits,
acts, then records the outcome. On resume the step looks for the outcome (receipt of the stored
hash, the Alpaca request by our id, the wallet transfer) before acting again.

Errors: `TransientStepError` (network, 5xx, outcome unknown) -> the runner records the error
and waits with backoff; the attempt stays counted. `NeedsAttention` -> the operation is flagged
for an operator and looked at again later (nothing valid to record). `OperationInactive` -> an
operator or another path ended the operation (or another worker holds it): stop quietly. Any
other exception is logged at ERROR and treated as transient, so a bug never drops an operation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Continue:
    """A step recorded progress; run the next step now."""

    note: str = ""


@dataclass(frozen=True)
class Wait:
    """Nothing to do until later: the runner sets `next_run_at`, status waiting, and returns."""

    seconds: float
    reason: str


@dataclass(frozen=True)
class Done:
    """The operation is over (terminal event recorded, or failed before its first event)."""

    note: str = ""


Outcome = Continue | Wait | Done


class WorkflowError(Exception):
    """Root of workflow errors."""


class TransientStepError(WorkflowError):
    """Retry later with backoff: network trouble, 5xx, an outcome not yet knowable."""


class NeedsAttention(WorkflowError):
    """Nothing valid can be recorded automatically; an operator must look (flagged)."""


class OperationInactive(WorkflowError):
    """The operation is no longer active, or another worker holds its lease: stop."""


class NotFailable(WorkflowError):
    """No failure command is valid in the aggregate's current state."""

    def __init__(self, state: str, detail: str) -> None:
        self.state = state
        self.detail = detail
        super().__init__(f"state={state}: cannot be failed: {detail}")


class NotReconcilable(WorkflowError):
    def __init__(self, state: str, detail: str) -> None:
        self.state = state
        self.detail = detail
        super().__init__(f"state={state}: cannot be reconciled: {detail}")
