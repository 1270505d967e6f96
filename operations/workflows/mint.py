"""Mint workflow (spec 7.1 with B9 and the onchain verification of PR #350).

(no aggregate)  -> RequestMint(symbol, quantity, wallet = our market-maker wallet)
                   the aggregate id is our issuer_request_id (idempotency key)
MintRequested   -> Alpaca request by our issuer_request_id; none -> POST mint with it
                   (403/422 -> RejectMint; anything else: outcome unknown -> retry, and the
                   retry looks the request up first) -> AcknowledgeAcceptance
MintAccepted    -> check once: pending -> Wait(poll); completed -> verify onchain (receipt
                   succeeded, Transfer logs of the asset's token to our wallet >= quantity)
                   -> ReceiveTokens; rejected -> FailAcceptance; past the step timeout ->
                   TimeOutMint (inflight kept, operator attention)
TokensReceived  -> Finalize
"""

from __future__ import annotations

import logging
from typing import Any

from inventory.domain import mint
from inventory.domain.units import UnitConversionError, shares_to_units
from inventory.domain.values import DomainError
from inventory.selectors import asset_by_symbol
from operations.workflows.base import (
    Continue,
    Done,
    NeedsAttention,
    NotReconcilable,
    Outcome,
    TransientStepError,
    Wait,
)
from operations.workflows.context import StepContext
from venues.alpaca import (
    AlpacaError,
    InsufficientPosition,
    InvalidAmount,
    InvalidParameters,
    RequestNotFound,
    TokenizationRequest,
    TokenizationStatus,
    UnsupportedAccount,
)
from venues.chain import ChainError, erc20_transfers_in

logger = logging.getLogger(__name__)

REFUSED = (InsufficientPosition, UnsupportedAccount, InvalidParameters, InvalidAmount)


class MintWorkflow:
    spec = mint.SPEC

    def step(self, ctx: StepContext) -> Outcome:
        loaded = ctx.load()
        state = loaded.state
        step = mint.step_of(state)
        if step == mint.MintStep.UNINITIALIZED:
            return self._request(ctx)
        if step == mint.MintStep.REQUESTED:
            return self._submit(ctx, state.value)
        if step == mint.MintStep.ACCEPTED:
            return self._check(ctx, state.value)
        if step == mint.MintStep.TOKENS_RECEIVED:
            ctx.execute(mint.Finalize())
            return Continue("finalized")
        if step == mint.MintStep.CORRUPTED:
            raise NeedsAttention(f"mint {ctx.aggregate_id}: event log corrupted: {state}")
        return Done(f"mint {step}")

    # -- steps -------------------------------------------------------------------------------

    def _request(self, ctx: StepContext) -> Outcome:
        operation = ctx.operation
        command = mint.RequestMint(
            symbol=operation.pool,
            quantity=operation.amount,
            wallet=ctx.venues.market_maker_wallet,  # B9: our own wallet
        )
        try:
            ctx.execute(command)
        except mint.MintError:
            return Continue("already requested")
        except DomainError as exc:
            ctx.fail_before_events(f"mint refused before request: {exc}")
            return Done("invalid mint")
        return Continue("requested")

    def _submit(self, ctx: StepContext, state: mint.MintRequested) -> Outcome:
        alpaca = ctx.venues.alpaca
        try:
            existing = alpaca.find_request_by_issuer_request_id(ctx.aggregate_id)
        except AlpacaError as exc:
            raise TransientStepError(f"looking up mint {ctx.aggregate_id}: {exc}") from exc
        request = existing
        if request is None:
            ctx.ensure_active()
            ctx.chaos("before:request_mint")
            try:
                request = alpaca.request_mint(
                    underlying_symbol=state.symbol,
                    quantity_shares=state.quantity,
                    wallet_address=state.wallet,
                    issuer_request_id=ctx.aggregate_id,
                )
            except REFUSED as exc:
                ctx.execute(mint.RejectMint(reason=f"Alpaca API error: {exc}"))
                return Done("rejected by Alpaca")
            except AlpacaError as exc:
                # 5xx, network, unreadable answer: the request may or may not exist; the next
                # attempt looks it up by our issuer_request_id before posting again.
                raise TransientStepError(f"mint request outcome unknown: {exc}") from exc
            ctx.chaos("after:request_mint")
        else:
            logger.info(
                "operation %s: mint %s already at Alpaca as %s (%s)",
                ctx.operation_id,
                ctx.aggregate_id,
                request.tokenization_request_id,
                request.status,
            )
        ctx.execute(
            mint.AcknowledgeAcceptance(
                issuer_request_id=request.issuer_request_id or ctx.aggregate_id,
                tokenization_request_id=request.tokenization_request_id,
            )
        )
        return Continue("accepted")

    def _check(self, ctx: StepContext, state: mint.MintAccepted) -> Outcome:
        config = ctx.config
        timed_out = ctx.seconds_since(state.accepted_at) > config.mint_timeout_s
        try:
            request = ctx.venues.alpaca.get_request(state.tokenization_request_id)
        except RequestNotFound:
            request = None
        except AlpacaError as exc:
            if timed_out:
                return self._time_out(ctx, f"polling failed past the timeout: {exc}")
            raise TransientStepError(
                f"polling mint {state.tokenization_request_id}: {exc}"
            ) from exc
        if request is not None and request.status == TokenizationStatus.REJECTED:
            ctx.execute(mint.FailAcceptance(reason="Mint request rejected by Alpaca"))
            return Done("rejected")
        if request is not None and request.status == TokenizationStatus.COMPLETED:
            verdict = self._verify(ctx, state, request)
            if verdict is not None:
                return verdict
        if timed_out:
            status = "not found" if request is None else str(request.status)
            return self._time_out(
                ctx, f"no verified completion within {config.mint_timeout_s:g}s ({status})"
            )
        return Wait(config.poll_interval_s, "Alpaca processing the mint")

    def _verify(
        self, ctx: StepContext, state: mint.MintAccepted, request: TokenizationRequest
    ) -> Outcome | None:
        """Alpaca says completed: record the tokens only once they are verified onchain."""
        if not request.tx_hash:
            logger.warning("operation %s: mint completed without tx_hash", ctx.operation_id)
            return None
        asset = asset_by_symbol(state.symbol)
        if asset is None:
            raise NeedsAttention(f"symbol={state.symbol}: no asset row, cannot verify the mint")
        try:
            expected_units = shares_to_units(state.quantity)
        except UnitConversionError as exc:
            raise NeedsAttention(f"quantity={state.quantity}: {exc}") from exc
        try:
            receipt = ctx.venues.base.receipt(request.tx_hash)
        except ChainError as exc:
            raise TransientStepError(f"receipt of {request.tx_hash}: {exc}") from exc
        if receipt is None:
            return None  # not visible yet; look again
        if not receipt.succeeded:
            return self._time_out(ctx, f"Alpaca reported tx {request.tx_hash}, which reverted")
        received = sum(
            t.amount_units
            for t in erc20_transfers_in(receipt, token=asset.token_address, to=state.wallet)
        )
        if received < expected_units:
            return self._time_out(
                ctx,
                f"tx {request.tx_hash} moved {received} units of {asset.token_address} to "
                f"{state.wallet}, expected at least {expected_units}",
            )
        ctx.execute(
            mint.ReceiveTokens(tx_hash=request.tx_hash, receipt_id=0, shares_minted=received)
        )
        return Continue("tokens received")

    def _time_out(self, ctx: StepContext, reason: str) -> Outcome:
        ctx.execute(mint.TimeOutMint(reason=reason))
        ctx.flag(f"mint timed out, shares kept inflight: {reason}")
        return Done("timed out")

    # -- operator and give-up paths ----------------------------------------------------------

    def fail(self, ctx: StepContext, *, reason: str, actor: str) -> bool:
        """Nothing to settle first: the per-state mapping decides (an accepted mint times
        out keeping inflight; tokens received cannot fail)."""
        ctx.force_fail(reason=reason, actor=actor)
        return True

    def reconcile_command(self, ctx: StepContext, *, reason: str, operator: str) -> Any:
        state = ctx.load().state
        if not mint.can_reconcile(state):
            raise NotReconcilable(mint.step_of(state), "no kept inflight to reconcile")
        return mint.ReconcileMint(reason=reason, operator=operator)


WORKFLOW = MintWorkflow()
