"""Redemption workflow (spec 7.2 with stored signed transfers, B4 and B14).

(no aggregate)   -> amount = shares_to_units(quantity) (negative/underflow: the operation
                    fails with the reason, the guard is released, others go on); sign the
                    ERC-20 transfer to the redemption wallet with an allocated nonce and
                    record it (SignTransfer: raw bytes + hash) in one transaction
TransferPending  -> receipt? success -> SendTokens; reverted -> FailTransfer; none ->
                    broadcast the same bytes (dead: nonce used elsewhere -> FailTransfer,
                    nothing left our wallet) then Wait short
TokensSent       -> the redeem request matched by OUR tx hash (never by wallet, B14):
                    found -> Detect; not yet -> Wait; past the timeout -> FailDetection
                    (inflight kept, attention)
Pending          -> completed -> Complete; rejected -> RejectRedemption; past the timeout
                    -> RejectRedemption with the reason (inflight kept, attention)
"""

from __future__ import annotations

import logging
from typing import Any

from inventory.domain import redemption
from inventory.domain.units import UnitConversionError, shares_to_units
from inventory.domain.values import DomainError
from operations.workflows.base import (
    Continue,
    Done,
    NeedsAttention,
    NotFailable,
    NotReconcilable,
    Outcome,
    TransientStepError,
    Wait,
)
from operations.workflows.context import StepContext, TxDead, TxMined, TxPending
from venues.alpaca import AlpacaError, RequestNotFound, TokenizationStatus
from venues.chain import ChainError, InvalidArgument, PreflightReverted

logger = logging.getLogger(__name__)

S = redemption.RedemptionStep


class RedemptionWorkflow:
    spec = redemption.SPEC

    def step(self, ctx: StepContext) -> Outcome:
        state = ctx.load().state
        step = redemption.step_of(state)
        try:
            if step == S.UNINITIALIZED:
                return self._sign(ctx)
            if step == S.TRANSFER_PENDING:
                return self._send(ctx, state.value)
            if step == S.TOKENS_SENT:
                return self._detect(ctx, state.value)
            if step == S.PENDING:
                return self._poll(ctx, state.value)
        except ChainError as exc:
            raise TransientStepError(f"chain: {exc}") from exc
        except AlpacaError as exc:
            raise TransientStepError(f"alpaca: {exc}") from exc
        if step == S.CORRUPTED:
            raise NeedsAttention(f"redemption {ctx.aggregate_id}: event log corrupted: {state}")
        return Done(f"redemption {step}")

    # -- steps -------------------------------------------------------------------------------

    def _sign(self, ctx: StepContext) -> Outcome:
        operation = ctx.operation
        try:
            amount_units = shares_to_units(operation.amount)
            if amount_units <= 0:
                raise UnitConversionError("zero", operation.amount, 18, "amount must be positive")
        except UnitConversionError as exc:
            ctx.fail_before_events(f"amount={operation.amount}: {exc}")
            return Done("invalid amount")
        base = ctx.venues.base
        wallet = ctx.venues.redemption_wallet
        token = operation.token_address
        try:
            ctx.sign_and_record(
                chain=base,
                build=lambda nonce: base.build_erc20_transfer(
                    token=token, to=wallet, amount_units=amount_units, nonce=nonce
                ),
                command=lambda signed: redemption.SignTransfer(
                    symbol=operation.pool,
                    quantity=operation.amount,
                    token=token,
                    redemption_wallet=wallet,
                    raw_tx=signed.raw,
                    tx_hash=signed.tx_hash,
                ),
                label="transfer",
            )
        except (PreflightReverted, InvalidArgument) as exc:
            ctx.fail_before_events(f"token transfer refused before sending: {exc}")
            return Done("transfer refused")
        except redemption.RedemptionError:
            return Continue("already signed")
        except DomainError as exc:
            ctx.fail_before_events(f"redemption refused: {exc}")
            return Done("invalid redemption")
        return Continue("signed")

    def _send(self, ctx: StepContext, state: redemption.TransferPending) -> Outcome:
        status = ctx.tx_resume(
            chain=ctx.venues.base, raw_tx=state.raw_tx, tx_hash=state.tx_hash, label="transfer"
        )
        if isinstance(status, TxMined):
            if status.succeeded:
                ctx.execute(
                    redemption.SendTokens(
                        symbol=state.symbol,
                        quantity=state.quantity,
                        redemption_wallet=state.redemption_wallet,
                        tx_hash=state.tx_hash,
                    )
                )
                return Continue("tokens sent")
            ctx.execute(redemption.FailTransfer(reason=f"transfer {state.tx_hash} reverted"))
            return Done("transfer reverted")
        if isinstance(status, TxDead):
            ctx.execute(
                redemption.FailTransfer(
                    reason=f"transfer {state.tx_hash} dropped: nonce {status.nonce} was used "
                    "by another transaction; no tokens left the wallet"
                )
            )
            return Done("transfer dead")
        assert isinstance(status, TxPending)
        if ctx.seconds_since(state.signed_at) > ctx.config.tx_timeout_s:
            from operations.services import operation_flag

            operation_flag(
                operation_id=ctx.operation_id,
                error=f"transfer {state.tx_hash} not mined after {ctx.config.tx_timeout_s:g}s",
            )
        return Wait(ctx.config.tx_poll_interval_s, "transfer not mined yet")

    def _detect(self, ctx: StepContext, state: redemption.TokensSent) -> Outcome:
        found = ctx.venues.alpaca.find_redemption_by_tx(state.tx_hash)
        if found is not None:
            ctx.execute(redemption.Detect(tokenization_request_id=found.tokenization_request_id))
            return Continue("detected")
        timeout_s = ctx.config.redemption_detection_timeout_s
        if ctx.seconds_since(state.sent_at) > timeout_s:
            ctx.execute(
                redemption.FailDetection(
                    reason=f"Detection polling failed: no redeem request for {state.tx_hash} "
                    f"within {timeout_s:g}s"
                )
            )
            ctx.flag(f"redemption {state.tx_hash} not detected; tokens sent, inflight kept")
            return Done("detection timed out")
        return Wait(ctx.config.poll_interval_s, "waiting for Alpaca to detect the transfer")

    def _poll(self, ctx: StepContext, state: redemption.Pending) -> Outcome:
        try:
            request = ctx.venues.alpaca.get_request(state.tokenization_request_id)
        except RequestNotFound:
            request = None
        if request is not None and request.status == TokenizationStatus.COMPLETED:
            ctx.execute(redemption.Complete())
            return Done("completed")
        if request is not None and request.status == TokenizationStatus.REJECTED:
            ctx.execute(redemption.RejectRedemption(reason="Redemption rejected by Alpaca"))
            ctx.flag("redemption rejected by Alpaca; tokens sent, inflight kept")
            return Done("rejected")
        timeout_s = ctx.config.redemption_completion_timeout_s
        if ctx.seconds_since(state.detected_at) > timeout_s:
            ctx.execute(
                redemption.RejectRedemption(
                    reason=f"Completion polling failed: {state.tokenization_request_id} not "
                    f"completed within {timeout_s:g}s"
                )
            )
            ctx.flag("redemption not completed in time; tokens sent, inflight kept")
            return Done("completion timed out")
        return Wait(ctx.config.poll_interval_s, "Alpaca processing the redemption")

    # -- operator and give-up paths ----------------------------------------------------------

    def fail(self, ctx: StepContext, *, reason: str, actor: str) -> bool:
        """Settle the stored transfer's truth first, then the per-state mapping decides.

        A signed transfer still in the mempool cannot be failed (it may yet move tokens); a
        mined one is recorded as sent first, so the failure keeps the tokens inflight instead
        of claiming none left; an unknown one (never broadcast) gives its nonce back.
        """
        state = ctx.load().state
        give_back: bytes | None = None
        if redemption.step_of(state) == S.TRANSFER_PENDING:
            value: redemption.TransferPending = state.value
            try:
                probe = ctx.tx_probe(chain=ctx.venues.base, tx_hash=value.tx_hash)
            except ChainError as exc:
                raise NotFailable(S.TRANSFER_PENDING, f"cannot tell what was sent: {exc}") from exc
            if isinstance(probe, TxPending):
                raise NotFailable(
                    S.TRANSFER_PENDING, f"transfer {value.tx_hash} is in the mempool; retry later"
                )
            if isinstance(probe, TxMined) and probe.succeeded:
                ctx.execute(
                    redemption.SendTokens(
                        symbol=value.symbol,
                        quantity=value.quantity,
                        redemption_wallet=value.redemption_wallet,
                        tx_hash=value.tx_hash,
                    )
                )
            elif probe is None:
                give_back = value.raw_tx
        ctx.force_fail(reason=reason, actor=actor)
        if give_back is not None:
            ctx.nonce_give_back(chain=ctx.venues.base, raw_tx=give_back)
        return True

    def reconcile_command(self, ctx: StepContext, *, reason: str, operator: str) -> Any:
        state = ctx.load().state
        if not redemption.can_reconcile(state):
            raise NotReconcilable(redemption.step_of(state), "no kept inflight to reconcile")
        return redemption.ReconcileRedemption(reason=reason, operator=operator)


WORKFLOW = RedemptionWorkflow()
