"""USDC workflows: Alpaca -> Base and Base -> Alpaca over Circle CCTP V2 (spec 7.3 with the
section-12 fixes B5, B6, B7, B10, B12). One `WORKFLOW` serves both operation kinds; the
aggregate (`inventory.domain.usdc`) carries the direction.

Alpaca -> Base (source Ethereum, domain 0; destination Base, domain 6):

    (no aggregate)     -> Request(AlpacaToBase, amount)                      [intent first]
    Requested          -> an OUTGOING withdrawal of that amount to our wallet created since
                          the request? (a POST whose outcome was unknown) else POST it (the
                          client checks the whitelist; not APPROVED, a 4xx or an amount under
                          Alpaca's 51 USDC minimum -> FailRequest) -> Initiate(AlpacaId)
    Withdrawing        -> transfer COMPLETE -> ConfirmWithdrawal(received = USDC that reached
                          our wallet onchain, fee = Alpaca's network fee); FAILED ->
                          FailWithdrawal; else Wait; past the step timeout -> FailWithdrawal
    WithdrawalComplete -> standing max approval of TokenMessenger if needed (recorded as
                          APPROVE_BURN), then depositForBurn(burnable amount, maxFee from the
                          Iris fast fee) recorded as BURN, broadcast, receipt ->
                          InitiateBridging(burn tx, nonce, burn amount, max fee); a revert or
                          preflight revert -> FailBridging (B5)
    Bridging           -> Iris message complete -> ReceiveAttestation(attestation, message);
                          else Wait; past the step timeout -> FailBridging
    Attested           -> receiveMessage on the destination recorded as MINT, broadcast,
                          receipt -> ConfirmBridging(mint tx, received from the USDC Transfer
                          logs to us, fee); "already received" -> the earlier mint's outcome
    Bridged            -> approval of the vault if needed (APPROVE_VAULT), vault deposit4 of
                          the depositable amount recorded as VAULT_DEPOSIT -> InitiateDeposit
                          (OnchainTx) -> ConfirmDeposit(amount from the receipt); a revert ->
                          FailDeposit (B5, valid in Bridged)

Base -> Alpaca (source Base, domain 6; destination Ethereum, domain 0):

    (no aggregate)     -> Request(BaseToAlpaca, amount)
    Requested          -> vault withdraw4 recorded as VAULT_WITHDRAW, broadcast, receipt ->
                          Initiate(OnchainTx) then ConfirmWithdrawal(received from the
                          Transfer logs); a revert -> FailRequest (nothing left the vault)
    WithdrawalComplete -> burn on Base as above; Bridging / Attested as above (mint on Ethereum)
    Bridged            -> Alpaca's USDC deposit address; an ERC-20 transfer of the received
                          amount to it recorded as ALPACA_DEPOSIT (B12: the USDC is sent) ->
                          InitiateDeposit(OnchainTx(transfer))
    DepositInitiated   -> Alpaca's INCOMING transfer with that tx hash: COMPLETE ->
                          ConfirmDeposit(amount); FAILED -> FailDeposit; else Wait; past the
                          step timeout -> FailDeposit

Every signed transaction is recorded (raw bytes + hash, nonce allocated in the same database
transaction) before it is broadcast; a resumed step looks at the stored transaction's receipt
first and re-broadcasts the same bytes, so nothing is sent twice. Failures after money left
the source keep it inflight (the aggregate's failure states) and flag the operation for an
operator, who reconciles it (`ReconcileUsdc`) once settled.

Chaos points (operator drill, `REBALANCER_CHAOS_KILL_AT=usdc_<direction>:<point>`): the
automatic `after:<Command>` ones, `before:/after:broadcast:<label>` with labels
`vault_withdraw approve_burn burn mint approve_vault vault_deposit alpaca_deposit`, and
`before:withdraw` / `after:withdraw` around the Alpaca withdrawal POST.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any

from inventory.codec import decode_event
from inventory.domain import usdc
from inventory.domain.events import Initiated, TxPurpose
from inventory.domain.units import UnitConversionError, units_to_usdc, usdc_to_units
from inventory.domain.values import (
    DomainError,
    RebalanceDirection,
    TransferRef,
    TransferRefKind,
)
from inventory.models import Event
from operations.models import OperationKind
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
from venues import cctp
from venues.alpaca import (
    AddressNotWhitelisted,
    AlpacaApiError,
    AlpacaError,
    AlpacaOutcomeUnknown,
    InvalidAmount,
    Order,
    Transfer,
    TransferNotFound,
    TransferStatus,
    WhitelistStatus,
)
from venues.chain import (
    ChainError,
    EvmChain,
    InvalidArgument,
    PreflightReverted,
    Receipt,
    SignedTx,
    erc20_transfers_in,
    is_already_received,
)
from venues.circle import CircleError

logger = logging.getLogger(__name__)

S = usdc.UsdcStep

# Alpaca refuses withdrawals under $50; the upstream code uses 51 USDC (spec 8.2).
ALPACA_MINIMUM_WITHDRAWAL_USDC = Decimal("51")
# A standing approval: one approve per (chain, spender), never exhausted (ADR 0005 upstream).
MAX_APPROVAL_UNITS = 2**256 - 1
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
# Tolerance for Alpaca's clock when adopting a withdrawal created since our request
# (withdrawals already claimed by another rebalance are never taken).
ALPACA_CLOCK_SKEW_S = 2.0
# How far before our request candidates are looked for: a transfer there is either ours with
# Alpaca's clock far behind, or someone else's of the same amount; either way ambiguous.
ALPACA_LOOKBACK_S = 3600.0
# A withdrawal POST that got no answer at all (a timeout, a dropped connection) may still be
# in flight at Alpaca and be carried out after our lookup found nothing: the next attempt waits
# this long before it looks for it (and posts again only if it is still not there). Alpaca's
# wallet transfers take no id of ours, so a repeated POST would move the money twice. A POST
# answered with a 5xx has finished at Alpaca: it is looked for at once.
ALPACA_WITHDRAWAL_SETTLE_S = 60.0


class WithdrawalMayBeInFlight(TransientStepError):
    """The withdrawal POST got no answer; look for it only after it had time to land."""

    retry_after_s = ALPACA_WITHDRAWAL_SETTLE_S


# How far back an "already received" mint is looked for on the destination chain.
MINT_SCAN_BLOCKS = 10_000

KIND_DIRECTION = {
    OperationKind.USDC_ALPACA_TO_BASE: RebalanceDirection.ALPACA_TO_BASE,
    OperationKind.USDC_BASE_TO_ALPACA: RebalanceDirection.BASE_TO_ALPACA,
}


@dataclass(frozen=True)
class Route:
    """The two chains of one direction: burn on `source`, mint on `destination`."""

    source: EvmChain
    destination: EvmChain
    source_domain: int
    destination_domain: int
    source_usdc: str
    destination_usdc: str


USDC_UNIT = Decimal("0.000001")
# How long a step watches its conversion order fill before it waits a poll interval.
CONVERSION_FILL_WAIT_S = 5.0
CONVERSION_FILL_POLL_S = 0.1


def conversion_order_id(aggregate_id: str, side: str) -> str:
    """The `client_order_id` of the operation's `USDCUSD` conversion order."""
    return f"usdc-{side}-{aggregate_id}"


def withdrawal_request_id(aggregate_id: str) -> str:
    """The operation's stored request id for its Alpaca withdrawal (`Idempotency-Key`)."""
    return f"usdc-withdrawal-{aggregate_id}"


def route_for(ctx: StepContext, direction: RebalanceDirection) -> Route:
    venues, config = ctx.venues, ctx.config
    if direction == RebalanceDirection.ALPACA_TO_BASE:
        return Route(
            source=venues.ethereum,
            destination=venues.base,
            source_domain=cctp.DOMAIN_ETHEREUM,
            destination_domain=cctp.DOMAIN_BASE,
            source_usdc=config.usdc_ethereum,
            destination_usdc=config.usdc_base,
        )
    return Route(
        source=venues.base,
        destination=venues.ethereum,
        source_domain=cctp.DOMAIN_BASE,
        destination_domain=cctp.DOMAIN_ETHEREUM,
        source_usdc=config.usdc_base,
        destination_usdc=config.usdc_ethereum,
    )


def _definitive(exc: AlpacaApiError) -> bool:
    """A 4xx (other than 429) means Alpaca refused; a 5xx or 429 may pass on a retry."""
    return 400 <= exc.status < 500 and exc.status != 429


def _sum_units(receipt: Receipt, *, token: str, to: str, from_: str | None = None) -> int:
    return sum(t.amount_units for t in erc20_transfers_in(receipt, token=token, to=to, from_=from_))


def _claimed_withdrawals(*, exclude_aggregate_id: str, since: datetime) -> set[str]:
    """Alpaca withdrawal ids other USDC rebalances recorded (never adopt another's)."""
    claimed: set[str] = set()
    # An exact event type and a time range: the (event_type, recorded_at) index, no LIKE scan.
    rows = Event.objects.filter(
        event_type=Initiated.event_type_name(), recorded_at__gte=since
    ).exclude(aggregate_id=exclude_aggregate_id)
    for row in rows:
        event = decode_event(row.event_type, row.payload)
        if isinstance(event, Initiated) and event.withdrawal_ref.kind is TransferRefKind.ALPACA_ID:
            claimed.add(event.withdrawal_ref.value)
    return claimed


class UsdcWorkflow:
    spec = usdc.SPEC

    def step(self, ctx: StepContext) -> Outcome:
        state = ctx.load().state
        step = usdc.step_of(state)
        value = state.value
        try:
            if step == S.UNINITIALIZED:
                return self._request(ctx)
            if step == S.REQUESTED:
                if value.direction == RebalanceDirection.ALPACA_TO_BASE:
                    return self._alpaca_to_base_from_requested(ctx, value)
                return self._withdraw_from_vault(ctx, value)
            if step == S.WITHDRAWING:
                if value.direction == RebalanceDirection.ALPACA_TO_BASE:
                    return self._check_alpaca_withdrawal(ctx, value)
                return self._confirm_vault_withdrawal(ctx, value)
            if step == S.WITHDRAWAL_COMPLETE:
                return self._burn(ctx, value)
            if step == S.BRIDGING:
                return self._attestation(ctx, value)
            if step == S.ATTESTED:
                return self._mint(ctx, value)
            if step == S.BRIDGED:
                if value.direction == RebalanceDirection.ALPACA_TO_BASE:
                    return self._vault_deposit(ctx, value)
                return self._alpaca_deposit(ctx, value)
            if step == S.DEPOSIT_INITIATED:
                if value.direction == RebalanceDirection.ALPACA_TO_BASE:
                    return self._confirm_vault_deposit(ctx, value)
                return self._check_alpaca_deposit(ctx, value)
        except ChainError as exc:
            raise TransientStepError(f"chain: {exc}") from exc
        except AlpacaError as exc:
            raise TransientStepError(f"alpaca: {exc}") from exc
        except CircleError as exc:
            raise TransientStepError(f"circle: {exc}") from exc
        if step == S.CORRUPTED:
            raise NeedsAttention(f"usdc rebalance {ctx.aggregate_id}: event log corrupted: {state}")
        return Done(f"usdc rebalance {step}")

    # -- helpers -----------------------------------------------------------------------------

    def _fail_keeping_inflight(self, ctx: StepContext, command: Any, what: str) -> Outcome:
        """Record a failure that keeps the money inflight and ask for an operator."""
        ctx.execute(command)
        ctx.flag(f"{what}: {command.reason}; USDC kept inflight, reconcile once settled")
        return Done(what)

    def _vault(self, ctx: StepContext) -> tuple[str, bytes]:
        config = ctx.venues.config
        if not config.base_orderbook or not config.usdc_vault_id:
            raise NeedsAttention("BASE_ORDERBOOK and USDC_VAULT_ID must be set for USDC moves")
        # The order book, or the RaindexInventory that owns the vaults (spec 15.6).
        writer = ctx.venues.vault_writer
        return writer, bytes.fromhex(config.usdc_vault_id.removeprefix("0x"))

    def _record(
        self,
        ctx: StepContext,
        *,
        chain: EvmChain,
        purpose: TxPurpose,
        build: Any,
    ) -> SignedTx:
        """Sign with an allocated nonce and record the tx for `purpose` in one transaction."""
        return ctx.sign_and_record(
            chain=chain,
            build=build,
            command=lambda signed: usdc.RecordTransaction(
                purpose=purpose,
                chain_id=signed.chain_id,
                raw_tx=signed.raw,
                tx_hash=signed.tx_hash,
            ),
            label=str(purpose),
        )

    def _resume(self, ctx: StepContext, chain: EvmChain, stored: usdc.SignedTx) -> Any:
        """Receipt of the stored tx (or one it replaced), else broadcast it; unmined past
        `tx_replace_after_s` -> a bumped-fee replacement recorded for its purpose first."""
        return ctx.tx_resume(chain=chain, stored=stored)

    def _pending(self, ctx: StepContext, stored: usdc.SignedTx) -> Outcome:
        return ctx.tx_not_mined(f"{stored.purpose} tx", stored.tx_hash, stored.pending_since)

    def _settle_stored(
        self,
        ctx: StepContext,
        chain: EvmChain,
        stored: usdc.SignedTx,
        *,
        tx: str,
        what: str,
        fail: Callable[[str], Any],
        dropped_note: str = "",
    ) -> Outcome | Receipt:
        """Resume the recorded `stored` tx: its receipt once mined and successful, else the
        step's outcome (not mined yet -> wait; dropped or reverted -> the command `fail(reason)`
        keeping the USDC inflight). `tx` names the transaction in the reason, `what` the step
        in the outcome ("<what> dead", "<what> reverted")."""
        status = self._resume(ctx, chain, stored)
        if isinstance(status, TxPending):
            return self._pending(ctx, stored)
        if isinstance(status, TxDead):
            return self._fail_keeping_inflight(
                ctx,
                fail(
                    f"{tx} dropped (nonce {status.nonce} used by another transaction){dropped_note}"
                ),
                f"{what} dead",
            )
        if not status.succeeded:
            return self._fail_keeping_inflight(
                ctx,
                fail(f"{tx} reverted: {chain.revert_reason(status.receipt.tx_hash)}"),
                f"{what} reverted",
            )
        return status.receipt

    def _record_or_fail(
        self,
        ctx: StepContext,
        *,
        chain: EvmChain,
        purpose: TxPurpose,
        build: Any,
        what: str,
        fail: Callable[[str], Any],
    ) -> Outcome:
        """Sign and record the tx for `purpose` ("<what> signed"); a preflight revert or an
        invalid argument records `fail(str(exc))` keeping the USDC inflight ("<what> refused")."""
        try:
            self._record(ctx, chain=chain, purpose=purpose, build=build)
        except (PreflightReverted, InvalidArgument) as exc:
            return self._fail_keeping_inflight(ctx, fail(f"{exc}"), f"{what} refused")
        return Continue(f"{what} signed")

    def _ensure_allowance(
        self,
        ctx: StepContext,
        state: usdc.UsdcState,
        *,
        chain: EvmChain,
        token: str,
        spender: str,
        amount_units: int,
        purpose: TxPurpose,
    ) -> Outcome | None:
        """None when `spender` may already pull `amount_units`; else the approval's progress
        (a standing max approval, recorded before it is broadcast)."""
        allowance = chain.erc20_allowance(token=token, owner=chain.address, spender=spender)
        if allowance >= amount_units:
            return None
        stored = usdc.transaction_for(state, purpose)
        if stored is None:
            self._record(
                ctx,
                chain=chain,
                purpose=purpose,
                build=lambda nonce: chain.build_erc20_approve(
                    token=token, spender=spender, amount_units=MAX_APPROVAL_UNITS, nonce=nonce
                ),
            )
            return Continue(f"{purpose} signed")
        status = self._resume(ctx, chain, stored)
        if isinstance(status, TxPending):
            return self._pending(ctx, stored)
        if isinstance(status, TxMined) and status.succeeded:
            # Mined, yet the allowance is short (read before the receipt?): read it again.
            allowance = chain.erc20_allowance(token=token, owner=chain.address, spender=spender)
            if allowance >= amount_units:
                return None
        raise NeedsAttention(
            f"{purpose} tx {stored.tx_hash} did not leave an allowance of {amount_units} units "
            f"for {spender} on {chain.name} ({type(status).__name__}); approve manually"
        )

    # -- Requested ---------------------------------------------------------------------------

    def _request(self, ctx: StepContext) -> Outcome:
        operation = ctx.operation
        direction = KIND_DIRECTION.get(operation.kind)
        if direction is None:
            ctx.fail_before_events(f"kind={operation.kind!r}: not a USDC operation")
            return Done("not a USDC operation")
        amount = operation.amount
        try:
            if usdc_to_units(amount) <= 0:
                raise UnitConversionError("zero", amount, 6, "amount must be positive")
        except UnitConversionError as exc:
            ctx.fail_before_events(f"amount={amount}: {exc}")
            return Done("invalid amount")
        try:
            ctx.execute(usdc.Request(direction=direction, amount=amount))
        except usdc.UsdcRebalanceError:
            return Continue("already requested")
        except DomainError as exc:
            ctx.fail_before_events(f"USDC rebalance refused before request: {exc}")
            return Done("invalid request")
        return Continue("requested")

    def _existing_withdrawal(self, ctx: StepContext, state: usdc.Requested) -> Transfer | None:
        """The withdrawal an earlier POST (outcome unknown) created, or None if there is none.

        Alpaca's wallet transfers take no id of ours, so the only id is the one its answer
        carries (recorded by `Initiate`); without it a candidate is an OUTGOING transfer of
        exactly this amount to our wallet that no other rebalance claimed. Candidates are
        looked for well before the request (Alpaca's clock may be behind ours). Adopted only
        when unambiguous: exactly one candidate, created at or after the request (within
        `ALPACA_CLOCK_SKEW_S`). Several candidates, or one older than the request (a manual
        withdrawal of the same amount?), raise `NeedsAttention`: posting again could move the
        money twice and adopting could take someone else's transfer; an operator looks.
        """
        candidates = ctx.venues.alpaca.find_outgoing_transfers(
            to_address=ctx.venues.market_maker_wallet,
            amount_usdc=usdc.withdrawal_amount(state),
            created_at_or_after=state.requested_at - timedelta(seconds=ALPACA_LOOKBACK_S),
        )
        claimed = _claimed_withdrawals(
            exclude_aggregate_id=ctx.aggregate_id, since=state.requested_at - timedelta(days=1)
        )
        candidates = sorted(
            (t for t in candidates if t.id not in claimed), key=lambda t: t.created_at
        )
        if not candidates:
            return None
        earliest = state.requested_at - timedelta(seconds=ALPACA_CLOCK_SKEW_S)
        if len(candidates) == 1 and candidates[0].created_at >= earliest:
            return candidates[0]
        described = ", ".join(f"{t.id} at {t.created_at.isoformat()}" for t in candidates)
        raise NeedsAttention(
            f"USDC rebalance {ctx.aggregate_id}: cannot tell which Alpaca withdrawal of "
            f"{state.amount} USDC to {ctx.venues.market_maker_wallet} is ours (requested at "
            f"{state.requested_at.isoformat()}; unclaimed candidates: {described}); not "
            "posting again and not adopting one: check the transfers and reconcile"
        )

    # -- conversions (spec 15.5: USD cash and USDC are two balances at Alpaca) ------------

    def _alpaca_to_base_from_requested(self, ctx: StepContext, state: usdc.Requested) -> Outcome:
        """Buy `USDCUSD` for the requested USD amount, then withdraw exactly the USDC bought
        (a withdrawal can only spend the USDC position). An operation requested before
        conversions existed and already past its POST keeps withdrawing the amount."""
        if state.amount < ALPACA_MINIMUM_WITHDRAWAL_USDC:
            return self._withdraw_from_alpaca(ctx, state)  # refused there, before any order
        conversion = state.conversion
        if conversion is None and (
            ctx.venue_request_sent_at() is not None
            or self._existing_withdrawal(ctx, state) is not None
        ):
            # A log from before conversions whose withdrawal may be at Alpaca already.
            return self._withdraw_from_alpaca(ctx, state)
        if conversion is None:
            # A withdrawal Alpaca would refuse is refused before any USD is converted.
            address = ctx.venues.market_maker_wallet
            entry = ctx.venues.alpaca.whitelist_entry(address)
            if entry is None or entry.status is not WhitelistStatus.APPROVED:
                refused = AddressNotWhitelisted(
                    address, "USDC", "ethereum", None if entry is None else entry.status
                )
                ctx.execute(usdc.FailRequest(reason=f"Alpaca withdrawal refused: {refused}"))
                return Done("withdrawal refused")
        if conversion is None or not conversion.settled:
            return self._convert(ctx, state, side="buy", amount=state.amount)
        if conversion.failure is not None:
            reason = f"USDC conversion failed, nothing left Alpaca: {conversion.failure}"
            ctx.execute(usdc.FailRequest(reason=reason))
            return Done("conversion failed")
        return self._withdraw_from_alpaca(ctx, state)

    def _convert(
        self,
        ctx: StepContext,
        state: usdc.Requested | usdc.DepositInitiated,
        *,
        side: str,
        amount: Decimal,
    ) -> Outcome:
        """One `USDCUSD` market order, recorded before it is placed and after it settles.

        Its `client_order_id` is derived from the operation: before placing, the order is
        looked up by it, so a lost answer never places a second order. An order that ends
        with nothing filled is a failed conversion; one partly filled is confirmed with what
        filled (`partial`), the rest of the amount stays where it was."""
        client_order_id = conversion_order_id(ctx.aggregate_id, side)
        if state.conversion is None:
            ctx.execute(
                usdc.InitiateConversion(client_order_id=client_order_id, side=side, amount=amount)
            )
            started = ctx.now()
        else:
            client_order_id = state.conversion.client_order_id
            amount = state.conversion.amount
            started = state.conversion.initiated_at
        alpaca = ctx.venues.alpaca
        order = alpaca.find_order_by_client_order_id(client_order_id)
        if order is None:
            ctx.ensure_active()
            ctx.chaos("before:convert")
            try:
                order = alpaca.submit_usdc_conversion(
                    side=side,
                    client_order_id=client_order_id,
                    notional_usd=amount if side == "buy" else None,
                    qty_usdc=amount if side == "sell" else None,
                )
            except AlpacaApiError as exc:
                if not _definitive(exc):
                    raise
                ctx.execute(usdc.FailConversion(reason=f"Alpaca refused the order: {exc}"))
                return Continue("conversion refused")
            ctx.chaos("after:convert")
        order = self._await_fill(ctx, order)
        if not order.is_terminal:
            if ctx.seconds_since(started) > ctx.config.usdc_step_timeout_s:
                raise NeedsAttention(
                    f"USDC rebalance {ctx.aggregate_id}: conversion order {order.id} "
                    f"({client_order_id}, {side} {amount}) is {order.status} after "
                    f"{ctx.config.usdc_step_timeout_s:g}s: check it at Alpaca"
                )
            return Wait(ctx.config.poll_interval_s, f"conversion order {order.status}")
        price = order.filled_avg_price
        if order.filled_qty <= 0 or price is None:
            ctx.execute(
                usdc.FailConversion(
                    reason=f"order {order.id} ended {order.status} with nothing filled"
                )
            )
            return Continue("conversion failed")
        partial = order.status != "filled"
        filled = order.filled_qty
        if side == "buy":
            # The USDC bought, floored: the withdrawal can spend no more than that.
            usdc_amount = filled.quantize(USDC_UNIT, rounding=ROUND_DOWN)
            spent = amount if not partial else (filled * price).quantize(USDC_UNIT, ROUND_UP)
            usd_amount = spent
        else:
            # The USDC that left the position, up to the micro-USDC: what stays unsold
            # (deposited - usdc_amount) is then never counted above what is left.
            usdc_amount = filled.quantize(USDC_UNIT, rounding=ROUND_UP)
            usd_amount = (filled * price).quantize(USDC_UNIT, rounding=ROUND_DOWN)
        if partial:
            logger.warning(
                "operation %s: conversion order %s %s: filled %s of %s (%s)",
                ctx.operation_id,
                order.id,
                side,
                filled,
                amount,
                order.status,
            )
        ctx.execute(
            usdc.ConfirmConversion(
                order_id=order.id,
                filled_qty=filled,
                filled_avg_price=price,
                usdc_amount=usdc_amount,
                usd_amount=usd_amount,
                partial=partial,
            )
        )
        return Continue("conversion filled")

    def _await_fill(self, ctx: StepContext, order: Order) -> Order:
        """A market order for USDC fills within moments: look at it for a few seconds before
        leaving the step to wait (`CONVERSION_FILL_WAIT_S`)."""
        deadline = time.monotonic() + CONVERSION_FILL_WAIT_S
        while not order.is_terminal and time.monotonic() < deadline:
            time.sleep(CONVERSION_FILL_POLL_S)
            order = ctx.venues.alpaca.get_order(order.id)
        return order

    def _withdraw_from_alpaca(self, ctx: StepContext, state: usdc.Requested) -> Outcome:
        if state.amount < ALPACA_MINIMUM_WITHDRAWAL_USDC:
            ctx.execute(
                usdc.FailRequest(
                    reason=f"amount={state.amount} USDC: below Alpaca's minimum withdrawal of "
                    f"{ALPACA_MINIMUM_WITHDRAWAL_USDC} USDC"
                )
            )
            return Done("below the minimum withdrawal")
        alpaca = ctx.venues.alpaca
        transfer = self._existing_withdrawal(ctx, state)
        if transfer is not None:
            logger.info(
                "operation %s: withdrawal already at Alpaca as %s (%s)",
                ctx.operation_id,
                transfer.id,
                transfer.status,
            )
        else:
            sent_at = ctx.venue_request_sent_at()
            if sent_at is not None:
                # An earlier attempt sent a POST and never learnt its answer (its worker died,
                # or the request timed out): it may still land. Never a second POST on our
                # own: look for it until Alpaca's settle window has passed, then hold the
                # operation for an operator with what was found.
                waited = ctx.seconds_since(sent_at)
                if waited >= ALPACA_WITHDRAWAL_SETTLE_S:
                    raise NeedsAttention(
                        f"USDC rebalance {ctx.aggregate_id}: a withdrawal POST of "
                        f"{state.amount} USDC to {ctx.venues.market_maker_wallet} sent at "
                        f"{sent_at.isoformat()} got no answer, and {waited:.0f}s later no "
                        "unclaimed OUTGOING transfer of that amount to that address, created "
                        "since the request, is at Alpaca; not posting again on its own: check "
                        "Alpaca's transfers, then fail the operation (nothing left) or "
                        "reconcile it (money left)"
                    )
                in_flight = WithdrawalMayBeInFlight(
                    f"a withdrawal POST sent {waited:.1f}s ago got no answer and is not at "
                    f"Alpaca yet; looking for it again "
                    f"(until {ALPACA_WITHDRAWAL_SETTLE_S:g}s after it was sent)"
                )
                in_flight.retry_after_s = max(0.5, ALPACA_WITHDRAWAL_SETTLE_S - waited)
                raise in_flight
            ctx.ensure_active()
            ctx.chaos("before:withdraw")
            ctx.venue_request_sending()
            try:
                transfer = alpaca.initiate_withdrawal(
                    amount_usdc=usdc.withdrawal_amount(state),
                    address=ctx.venues.market_maker_wallet,
                    idempotency_key=withdrawal_request_id(ctx.aggregate_id),
                )
            except (AddressNotWhitelisted, InvalidAmount) as exc:
                ctx.venue_request_answered()
                ctx.execute(usdc.FailRequest(reason=f"Alpaca withdrawal refused: {exc}"))
                return Done("withdrawal refused")
            except AlpacaApiError as exc:
                ctx.venue_request_answered()
                if not _definitive(exc):
                    raise
                ctx.execute(usdc.FailRequest(reason=f"Alpaca withdrawal refused: {exc}"))
                return Done("withdrawal refused")
            except AlpacaOutcomeUnknown as exc:
                if exc.status is not None:
                    # Answered (a 5xx): finished at Alpaca, looked for at once.
                    ctx.venue_request_answered()
                    raise
                raise WithdrawalMayBeInFlight(
                    f"{exc}; looking for it in {ALPACA_WITHDRAWAL_SETTLE_S:g}s, before any "
                    "second POST"
                ) from exc
            except AlpacaError:
                # Not sent, or answered with something unreadable: nothing is in flight.
                ctx.venue_request_answered()
                raise
            ctx.venue_request_answered()
            # Anything else (5xx, unreadable answer): the outcome is unknown; the next
            # attempt looks for the withdrawal before posting again.
            ctx.chaos("after:withdraw")
        ctx.execute(
            usdc.Initiate(
                direction=state.direction,
                amount=usdc.withdrawal_amount(state),
                withdrawal=TransferRef(TransferRefKind.ALPACA_ID, transfer.id),
            )
        )
        return Continue("withdrawal initiated")

    def _withdraw_from_vault(self, ctx: StepContext, state: usdc.Requested) -> Outcome:
        base = ctx.venues.base
        stored = usdc.transaction_for(state, TxPurpose.VAULT_WITHDRAW)
        if stored is None:
            vault, vault_id = self._vault(ctx)
            units = usdc_to_units(state.amount)
            token = ctx.config.usdc_base
            try:
                self._record(
                    ctx,
                    chain=base,
                    purpose=TxPurpose.VAULT_WITHDRAW,
                    build=lambda nonce: base.build_vault_withdraw(
                        vault=vault,
                        token=token,
                        vault_id=vault_id,
                        target_amount_units=units,
                        nonce=nonce,
                    ),
                )
            except (PreflightReverted, InvalidArgument) as exc:
                ctx.execute(usdc.FailRequest(reason=f"Vault withdraw refused: {exc}"))
                return Done("vault withdraw refused")
            return Continue("vault withdraw signed")
        status = self._resume(ctx, base, stored)
        if isinstance(status, TxPending):
            return self._pending(ctx, stored)
        if isinstance(status, TxDead):
            ctx.nonce_give_back(chain=base, raw_tx=stored.raw_tx)
            ctx.execute(
                usdc.FailRequest(
                    reason=f"vault withdraw {stored.tx_hash} dropped: nonce {status.nonce} used "
                    "by another transaction; nothing left the vault"
                )
            )
            return Done("vault withdraw dead")
        if not status.succeeded:
            ctx.execute(
                usdc.FailRequest(
                    reason=f"vault withdraw {status.receipt.tx_hash} reverted: "
                    f"{base.revert_reason(status.receipt.tx_hash)}"
                )
            )
            return Done("vault withdraw reverted")
        received = self._vault_withdrawn_units(ctx, status.receipt)
        if received <= 0:
            ctx.execute(
                usdc.FailRequest(
                    reason=f"vault withdraw {status.receipt.tx_hash} moved no USDC (vault empty)"
                )
            )
            return Done("vault empty")
        ctx.execute(
            usdc.Initiate(
                direction=state.direction,
                amount=state.amount,
                withdrawal=TransferRef(TransferRefKind.ONCHAIN_TX, status.receipt.tx_hash),
            )
        )
        ctx.execute(usdc.ConfirmWithdrawal(amount_received=units_to_usdc(received)))
        return Continue("withdrawn from the vault")

    def _vault_withdrawn_units(self, ctx: StepContext, receipt: Receipt) -> int:
        vault, _ = self._vault(ctx)
        return _sum_units(
            receipt, token=ctx.config.usdc_base, to=ctx.venues.market_maker_wallet, from_=vault
        )

    # -- Withdrawing -------------------------------------------------------------------------

    def _timed_out(self, ctx: StepContext, since: datetime) -> bool:
        return ctx.seconds_since(since) > ctx.config.usdc_step_timeout_s

    def _check_alpaca_withdrawal(self, ctx: StepContext, state: usdc.Withdrawing) -> Outcome:
        transfer_id = state.withdrawal_ref.value
        timeout_s = ctx.config.usdc_step_timeout_s
        try:
            transfer: Transfer | None = ctx.venues.alpaca.get_transfer(transfer_id)
        except TransferNotFound:
            transfer = None
        if transfer is not None and transfer.status == TransferStatus.FAILED:
            return self._fail_keeping_inflight(
                ctx,
                usdc.FailWithdrawal(reason="Transfer ended in status: FAILED"),
                "withdrawal failed",
            )
        if transfer is not None and transfer.status == TransferStatus.COMPLETE:
            verdict = self._confirm_alpaca_withdrawal(ctx, transfer)
            if verdict is not None:
                return verdict
        if self._timed_out(ctx, state.initiated_at):
            status = "not found" if transfer is None else str(transfer.status)
            return self._fail_keeping_inflight(
                ctx,
                usdc.FailWithdrawal(
                    reason=f"Polling failed: withdrawal {transfer_id} not complete within "
                    f"{timeout_s:g}s ({status})"
                ),
                "withdrawal timed out",
            )
        return Wait(ctx.config.poll_interval_s, "Alpaca processing the withdrawal")

    def _confirm_alpaca_withdrawal(self, ctx: StepContext, transfer: Transfer) -> Outcome | None:
        """COMPLETE: the received amount is what reached our wallet onchain (when visible)."""
        fee = transfer.network_fee or Decimal(0)
        expected = transfer.amount - fee
        received = expected
        if transfer.tx_hash:
            receipt = ctx.venues.ethereum.receipt(transfer.tx_hash)
            if receipt is None:
                return None  # not visible on our node yet: look again
            if not receipt.succeeded:
                return self._fail_keeping_inflight(
                    ctx,
                    usdc.FailWithdrawal(
                        reason=f"Alpaca reported withdrawal tx {transfer.tx_hash}, which reverted"
                    ),
                    "withdrawal reverted",
                )
            units = _sum_units(
                receipt, token=ctx.config.usdc_ethereum, to=ctx.venues.market_maker_wallet
            )
            if units <= 0:
                return self._fail_keeping_inflight(
                    ctx,
                    usdc.FailWithdrawal(
                        reason=f"withdrawal tx {transfer.tx_hash} sent no USDC to "
                        f"{ctx.venues.market_maker_wallet}"
                    ),
                    "withdrawal not received",
                )
            received = units_to_usdc(units)
            if received != expected:
                logger.warning(
                    "operation %s: withdrawal %s: Alpaca reports %s - fee %s, onchain %s; "
                    "recording the onchain amount",
                    ctx.operation_id,
                    transfer.id,
                    transfer.amount,
                    fee,
                    received,
                )
        else:
            logger.warning(
                "operation %s: withdrawal %s complete without tx_hash; not verified onchain",
                ctx.operation_id,
                transfer.id,
            )
        ctx.execute(usdc.ConfirmWithdrawal(amount_received=received, fee=fee))
        return Continue("withdrawal confirmed")

    def _confirm_vault_withdrawal(self, ctx: StepContext, state: usdc.Withdrawing) -> Outcome:
        """Initiate(OnchainTx) was recorded, ConfirmWithdrawal not yet (a crash in between)."""
        receipt = ctx.venues.base.receipt(state.withdrawal_ref.value)
        if receipt is None or not receipt.succeeded:
            raise NeedsAttention(
                f"vault withdraw {state.withdrawal_ref.value} has no successful receipt"
            )
        received = self._vault_withdrawn_units(ctx, receipt)
        ctx.execute(usdc.ConfirmWithdrawal(amount_received=units_to_usdc(received)))
        return Continue("withdrawal confirmed")

    # -- WithdrawalComplete: burn ------------------------------------------------------------

    def _burn(self, ctx: StepContext, state: usdc.WithdrawalComplete) -> Outcome:
        route = route_for(ctx, state.direction)
        chain = route.source
        stored = usdc.transaction_for(state, TxPurpose.BURN)
        if stored is not None:
            receipt = self._settle_stored(
                ctx,
                chain,
                stored,
                tx=f"tx {stored.tx_hash}",
                what="burn",
                fail=lambda reason: usdc.FailBridging(reason=f"Burn failed: {reason}"),
                dropped_note="; nothing was burned",
            )
            if not isinstance(receipt, Receipt):
                return receipt
            self._initiate_bridging(ctx, chain, receipt)
            return Continue("burned")

        try:
            amount_units = usdc_to_units(usdc.burnable_amount(state))
        except UnitConversionError as exc:
            raise NeedsAttention(f"burnable amount: {exc}") from exc
        messenger = ctx.config.cctp_token_messenger
        approval = self._ensure_allowance(
            ctx,
            state,
            chain=chain,
            token=route.source_usdc,
            spender=messenger,
            amount_units=amount_units,
            purpose=TxPurpose.APPROVE_BURN,
        )
        if approval is not None:
            return approval
        fee_bps = ctx.venues.iris.fast_transfer_fee_bps(
            route.source_domain, route.destination_domain
        )
        max_fee_units = cctp.max_fee(amount_units, fee_bps)
        recipient = ctx.venues.market_maker_wallet
        return self._record_or_fail(
            ctx,
            chain=chain,
            purpose=TxPurpose.BURN,
            build=lambda nonce: chain.build_deposit_for_burn(
                token_messenger=messenger,
                burn_token=route.source_usdc,
                amount_units=amount_units,
                destination_domain=route.destination_domain,
                mint_recipient=recipient,
                max_fee_units=max_fee_units,
                min_finality_threshold=cctp.FINALITY_THRESHOLD_FAST,
                nonce=nonce,
            ),
            what="burn",
            # B5: FailBridging is valid in WithdrawalComplete (no burn data).
            fail=lambda reason: usdc.FailBridging(reason=f"Burn failed: {reason}"),
        )

    def _initiate_bridging(self, ctx: StepContext, chain: EvmChain, receipt: Receipt) -> None:
        burn = chain.decode_message_sent(receipt)
        nonce = burn.nonce
        if int(nonce, 16) == 0:
            # CCTP V2 emits a placeholder nonce (Iris assigns the real one): the message hash
            # identifies the burn until the attested message carries the nonce.
            nonce = burn.message_hash
        ctx.execute(
            usdc.InitiateBridging(
                burn_tx=receipt.tx_hash,
                cctp_nonce=nonce,
                burn_amount=units_to_usdc(burn.amount),
                max_fee=units_to_usdc(burn.max_fee),
            )
        )

    # -- Bridging: attestation ---------------------------------------------------------------

    def _attestation(self, ctx: StepContext, state: usdc.Bridging) -> Outcome:
        route = route_for(ctx, state.direction)
        message = ctx.venues.iris.get_message(route.source_domain, state.burn_tx_hash)
        if message is not None:
            ctx.execute(
                usdc.ReceiveAttestation(attestation=message.attestation, message=message.message)
            )
            return Continue("attested")
        if self._timed_out(ctx, state.burned_at):
            return self._fail_keeping_inflight(
                ctx,
                usdc.FailBridging(
                    reason=f"Attestation polling failed: burn {state.burn_tx_hash} not attested "
                    f"within {ctx.config.usdc_step_timeout_s:g}s"
                ),
                "attestation timed out",
            )
        return Wait(ctx.config.poll_interval_s, "waiting for the CCTP attestation")

    # -- Attested: mint ----------------------------------------------------------------------

    def _mint(self, ctx: StepContext, state: usdc.Attested) -> Outcome:
        route = route_for(ctx, state.direction)
        chain = route.destination
        message = state.message
        attestation = state.attestation
        if message is None:  # recorded without the envelope: fetch it again (#745)
            fetched = ctx.venues.iris.get_message(route.source_domain, state.burn_tx_hash)
            if fetched is None:
                raise TransientStepError(f"attested message of {state.burn_tx_hash} unavailable")
            message, attestation = fetched.message, fetched.attestation
        parsed = cctp.parse_message(message)
        transmitter = ctx.config.cctp_message_transmitter
        stored = usdc.transaction_for(state, TxPurpose.MINT)
        if stored is not None:
            status = self._resume(ctx, chain, stored)
            if isinstance(status, TxPending):
                return self._pending(ctx, stored)
            if isinstance(status, TxMined) and status.succeeded:
                return self._confirm_bridging(ctx, state, route, status.receipt)
            if chain.cctp_nonce_used(message_transmitter=transmitter, nonce=parsed.nonce):
                return self._already_received(ctx, state, route, parsed, stored)
            reason = (
                f"dropped (nonce {status.nonce} used by another transaction)"
                if isinstance(status, TxDead)
                else f"reverted: {chain.revert_reason(status.receipt.tx_hash)}"
            )
            return self._fail_keeping_inflight(
                ctx,
                usdc.FailBridging(reason=f"Mint failed: tx {stored.tx_hash} {reason}"),
                "mint failed",
            )
        if chain.cctp_nonce_used(message_transmitter=transmitter, nonce=parsed.nonce):
            return self._already_received(ctx, state, route, parsed, None)
        try:
            self._record(
                ctx,
                chain=chain,
                purpose=TxPurpose.MINT,
                build=lambda nonce: chain.build_receive_message(
                    message_transmitter=transmitter,
                    message=message,
                    attestation=attestation,
                    nonce=nonce,
                ),
            )
        except PreflightReverted as exc:
            if is_already_received(exc):
                return self._already_received(ctx, state, route, parsed, None)
            return self._fail_keeping_inflight(
                ctx, usdc.FailBridging(reason=f"Mint failed: {exc}"), "mint refused"
            )
        return Continue("mint signed")

    def _confirm_bridging(
        self, ctx: StepContext, state: usdc.Attested, route: Route, receipt: Receipt
    ) -> Outcome:
        units = _sum_units(
            receipt,
            token=route.destination_usdc,
            to=ctx.venues.market_maker_wallet,
            from_=ZERO_ADDRESS,
        )
        if units <= 0:
            raise NeedsAttention(
                f"mint tx {receipt.tx_hash} succeeded but minted no USDC to "
                f"{ctx.venues.market_maker_wallet}"
            )
        received = units_to_usdc(units)
        burned = state.amounts.burn_amount
        fee = burned - received if burned is not None and burned >= received else None
        ctx.execute(
            usdc.ConfirmBridging(mint_tx=receipt.tx_hash, amount_received=received, fee=fee)
        )
        return Continue("bridged")

    def _already_received(
        self,
        ctx: StepContext,
        state: usdc.Attested,
        route: Route,
        parsed: cctp.CctpMessage,
        stored: usdc.SignedTx | None,
    ) -> Outcome:
        """The message was received by another transaction: record that mint's outcome."""
        chain = route.destination
        expected = parsed.body.amount_units - parsed.body.fee_executed_units
        latest = chain.block_number()
        found = [
            t
            for t in chain.erc20_transfers(
                token=route.destination_usdc,
                from_block=max(0, latest - MINT_SCAN_BLOCKS),
                to=ctx.venues.market_maker_wallet,
                from_=ZERO_ADDRESS,
            )
            if t.amount_units == expected
        ]
        hashes = {t.tx_hash.lower() for t in found}
        ours = {h.lower() for h in stored.all_hashes()} if stored is not None else set()
        if hashes & ours:
            hashes = hashes & ours
        if len(hashes) != 1 or (stored is not None and not hashes & ours):
            raise NeedsAttention(
                f"CCTP message {parsed.nonce} already received on {chain.name}, but its mint "
                f"of {expected} units to us is not identifiable (candidates: {sorted(hashes)}); "
                "confirm manually"
            )
        receipt = chain.receipt(next(iter(hashes)))
        if receipt is None:
            raise TransientStepError("receipt of the earlier mint not available yet")
        logger.info(
            "operation %s: message %s was already received in tx %s",
            ctx.operation_id,
            parsed.nonce,
            receipt.tx_hash,
        )
        return self._confirm_bridging(ctx, state, route, receipt)

    # -- Bridged: deposit --------------------------------------------------------------------

    def _vault_deposit(self, ctx: StepContext, state: usdc.Bridged) -> Outcome:
        base = ctx.venues.base
        vault, vault_id = self._vault(ctx)
        token = ctx.config.usdc_base
        stored = usdc.transaction_for(state, TxPurpose.VAULT_DEPOSIT)
        if stored is not None:
            receipt = self._settle_stored(
                ctx,
                base,
                stored,
                tx=f"vault deposit {stored.tx_hash}",
                what="vault deposit",
                fail=lambda reason: usdc.FailDeposit(reason=f"Deposit failed: {reason}"),
            )
            if not isinstance(receipt, Receipt):
                return receipt
            ctx.execute(
                usdc.InitiateDeposit(
                    deposit=TransferRef(TransferRefKind.ONCHAIN_TX, receipt.tx_hash)
                )
            )
            return self._confirm_deposit_receipt(ctx, receipt)

        try:
            units = usdc_to_units(usdc.depositable_amount(state))
        except UnitConversionError as exc:
            raise NeedsAttention(f"depositable amount: {exc}") from exc
        approval = self._ensure_allowance(
            ctx,
            state,
            chain=base,
            token=token,
            spender=vault,
            amount_units=units,
            purpose=TxPurpose.APPROVE_VAULT,
        )
        if approval is not None:
            return approval
        return self._record_or_fail(
            ctx,
            chain=base,
            purpose=TxPurpose.VAULT_DEPOSIT,
            build=lambda nonce: base.build_vault_deposit(
                vault=vault, token=token, vault_id=vault_id, amount_units=units, nonce=nonce
            ),
            what="vault deposit",
            fail=lambda reason: usdc.FailDeposit(reason=f"Deposit failed: {reason}"),
        )

    def _confirm_deposit_receipt(self, ctx: StepContext, receipt: Receipt) -> Outcome:
        vault, _ = self._vault(ctx)
        units = _sum_units(
            receipt, token=ctx.config.usdc_base, to=vault, from_=ctx.venues.market_maker_wallet
        )
        if units <= 0:
            logger.warning(
                "operation %s: vault deposit %s shows no USDC Transfer to the vault",
                ctx.operation_id,
                receipt.tx_hash,
            )
        deposited = units_to_usdc(units) if units > 0 else None
        ctx.execute(usdc.ConfirmDeposit(amount_deposited=deposited))
        return Done("deposited into the vault")

    def _confirm_vault_deposit(self, ctx: StepContext, state: usdc.DepositInitiated) -> Outcome:
        receipt = ctx.venues.base.receipt(state.deposit_ref.value)
        if receipt is None or not receipt.succeeded:
            raise NeedsAttention(f"vault deposit {state.deposit_ref.value} has no success receipt")
        return self._confirm_deposit_receipt(ctx, receipt)

    def _alpaca_deposit(self, ctx: StepContext, state: usdc.Bridged) -> Outcome:
        ethereum = ctx.venues.ethereum
        stored = usdc.transaction_for(state, TxPurpose.ALPACA_DEPOSIT)
        if stored is not None:
            receipt = self._settle_stored(
                ctx,
                ethereum,
                stored,
                tx=f"transfer {stored.tx_hash} to Alpaca",
                what="deposit transfer",
                fail=lambda reason: usdc.FailDeposit(reason=f"Deposit failed: {reason}"),
            )
            if not isinstance(receipt, Receipt):
                return receipt
            ctx.execute(
                usdc.InitiateDeposit(
                    deposit=TransferRef(TransferRefKind.ONCHAIN_TX, receipt.tx_hash)
                )
            )
            return Continue("sent to Alpaca")

        try:
            units = usdc_to_units(usdc.depositable_amount(state))
        except UnitConversionError as exc:
            raise NeedsAttention(f"depositable amount: {exc}") from exc
        address = ctx.venues.alpaca.deposit_address()
        token = ctx.config.usdc_ethereum
        return self._record_or_fail(
            ctx,
            chain=ethereum,
            purpose=TxPurpose.ALPACA_DEPOSIT,
            build=lambda nonce: ethereum.build_erc20_transfer(
                token=token, to=address, amount_units=units, nonce=nonce
            ),
            what="deposit transfer",
            fail=lambda reason: usdc.FailDeposit(
                reason=f"Deposit failed: transfer to Alpaca refused: {reason}"
            ),
        )

    def _check_alpaca_deposit(self, ctx: StepContext, state: usdc.DepositInitiated) -> Outcome:
        tx_hash = state.deposit_ref.value
        transfer = ctx.venues.alpaca.find_deposit_by_tx(tx_hash, since=ctx.operation.created_at)
        if transfer is not None and transfer.status == TransferStatus.COMPLETE:
            return self._sell_deposited(ctx, state, transfer)
        if transfer is not None and transfer.status == TransferStatus.FAILED:
            return self._fail_keeping_inflight(
                ctx,
                usdc.FailDeposit(reason=f"Deposit {transfer.id} ended in status: FAILED"),
                "deposit failed",
            )
        if self._timed_out(ctx, state.deposit_initiated_at):
            status = "not detected" if transfer is None else str(transfer.status)
            return self._fail_keeping_inflight(
                ctx,
                usdc.FailDeposit(
                    reason=f"Deposit polling failed: tx {tx_hash} not credited within "
                    f"{ctx.config.usdc_step_timeout_s:g}s ({status})"
                ),
                "deposit timed out",
            )
        return Wait(ctx.config.poll_interval_s, "waiting for Alpaca to credit the deposit")

    def _sell_deposited(
        self, ctx: StepContext, state: usdc.DepositInitiated, transfer: Transfer
    ) -> Outcome:
        """The deposit is credited as USDC (the `USDCUSD` position): sell that quantity for
        USD, then confirm the deposit with the USD received. A sale that fills nothing
        leaves the USDC at Alpaca (still counted there) and confirms the USDC deposited."""
        deposited = transfer.amount.quantize(USDC_UNIT, rounding=ROUND_DOWN)
        conversion = state.conversion
        if conversion is None or not conversion.settled:
            return self._convert(ctx, state, side="sell", amount=deposited)
        confirmed = conversion.confirmed
        if confirmed is None:
            logger.warning(
                "operation %s: the deposit stays USDC at Alpaca: %s",
                ctx.operation_id,
                conversion.failure,
            )
            ctx.execute(usdc.ConfirmDeposit(amount_deposited=deposited))
            return Done("deposited at Alpaca (kept as USDC)")
        # What now sits at Alpaca from this move: the USD received, plus any USDC not sold.
        unsold = deposited - confirmed.usdc_amount
        received = confirmed.usd_amount + max(unsold, Decimal(0))
        ctx.execute(usdc.ConfirmDeposit(amount_deposited=received))
        return Done("deposited at Alpaca and converted to USD")

    # -- operator and give-up paths ----------------------------------------------------------

    def fail(self, ctx: StepContext, *, reason: str, actor: str) -> bool:
        """Settle what only the workflow can check, then the one per-state mapping
        (`ctx.force_fail` -> `operations.services.operation_force_fail`) records the failure.

        A stored transaction still in the mempool cannot be failed (it may yet move money); a
        mined one is recorded first (the withdrawal, burn, mint or deposit happened), so the
        failure keeps the USDC inflight instead of claiming nothing moved; a never-broadcast
        one gives its nonce back. An Alpaca withdrawal whose POST outcome was unknown is looked
        up first for the same reason.
        """
        state = ctx.load().state
        try:
            give_back = self._settle(ctx, usdc.step_of(state), state.value)
        except (ChainError, AlpacaError, CircleError, NeedsAttention) as exc:
            raise NotFailable(usdc.step_of(state), f"cannot tell what was sent: {exc}") from exc
        ctx.force_fail(reason=reason, actor=actor)
        for chain, raw_tx in reversed(give_back):  # the last allocated nonce first
            ctx.nonce_give_back(chain=chain, raw_tx=raw_tx)
        return True

    def _probe(
        self,
        ctx: StepContext,
        chain: EvmChain,
        stored: usdc.SignedTx | None,
        give_back: list[tuple[EvmChain, bytes]],
    ) -> Any:
        if stored is None:
            return None
        probes = [ctx.tx_probe(chain=chain, tx_hash=h) for h in stored.all_hashes()]
        mined = [p for p in probes if isinstance(p, TxMined)]
        if mined:
            return mined[0]
        if any(isinstance(p, TxPending) for p in probes):
            raise NotFailable(
                "pending", f"{stored.purpose} tx {stored.tx_hash} is in the mempool; retry later"
            )
        give_back.append((chain, stored.raw_tx))
        return None

    def _settle(self, ctx: StepContext, step: S, value: Any) -> list[tuple[EvmChain, bytes]]:
        """Record the outcomes that already happened onchain or at Alpaca; returns the
        never-broadcast transactions whose nonces go back after the failure is recorded."""
        give_back: list[tuple[EvmChain, bytes]] = []
        if step == S.REQUESTED:
            ref: TransferRef | None = None
            if value.direction == RebalanceDirection.ALPACA_TO_BASE:
                if value.amount >= ALPACA_MINIMUM_WITHDRAWAL_USDC:
                    transfer = self._existing_withdrawal(ctx, value)
                    if transfer is not None:
                        ref = TransferRef(TransferRefKind.ALPACA_ID, transfer.id)
            else:
                stored = usdc.transaction_for(value, TxPurpose.VAULT_WITHDRAW)
                probe = self._probe(ctx, ctx.venues.base, stored, give_back)
                if isinstance(probe, TxMined) and probe.succeeded:
                    ref = TransferRef(TransferRefKind.ONCHAIN_TX, probe.receipt.tx_hash)
            if ref is not None:
                # The money left the source: the failure must keep it inflight.
                ctx.execute(
                    usdc.Initiate(direction=value.direction, amount=value.amount, withdrawal=ref)
                )
        elif step == S.WITHDRAWAL_COMPLETE:
            route = route_for(ctx, value.direction)
            for purpose in (TxPurpose.APPROVE_BURN, TxPurpose.BURN):
                stored = usdc.transaction_for(value, purpose)
                probe = self._probe(ctx, route.source, stored, give_back)
                if purpose == TxPurpose.BURN and isinstance(probe, TxMined) and probe.succeeded:
                    self._initiate_bridging(ctx, route.source, probe.receipt)
        elif step == S.ATTESTED:
            route = route_for(ctx, value.direction)
            stored = usdc.transaction_for(value, TxPurpose.MINT)
            probe = self._probe(ctx, route.destination, stored, give_back)
            if isinstance(probe, TxMined) and probe.succeeded:
                self._confirm_bridging(ctx, value, route, probe.receipt)
        elif step == S.BRIDGED:
            a2b = value.direction == RebalanceDirection.ALPACA_TO_BASE
            chain = ctx.venues.base if a2b else ctx.venues.ethereum
            purposes = (
                (TxPurpose.APPROVE_VAULT, TxPurpose.VAULT_DEPOSIT)
                if a2b
                else (TxPurpose.ALPACA_DEPOSIT,)
            )
            for purpose in purposes:
                stored = usdc.transaction_for(value, purpose)
                probe = self._probe(ctx, chain, stored, give_back)
                if purpose != TxPurpose.APPROVE_VAULT and (
                    isinstance(probe, TxMined) and probe.succeeded
                ):
                    ctx.execute(
                        usdc.InitiateDeposit(
                            deposit=TransferRef(TransferRefKind.ONCHAIN_TX, probe.receipt.tx_hash)
                        )
                    )
        return give_back

    def reconcile_unknown(self, ctx: StepContext, *, reason: str, operator: str) -> Any | None:
        """A requested Alpaca -> Base move whose withdrawal Alpaca could not confirm or deny
        (the lookup failed, or the match was ambiguous): the operator checked the transfers
        themselves and records the request failed."""
        state = ctx.load().state
        value = state.value
        if (
            usdc.step_of(state) == S.REQUESTED
            and value.direction == RebalanceDirection.ALPACA_TO_BASE
        ):
            return usdc.FailRequest(reason=f"reconciled by {operator}: {reason}")
        return None

    def reconcile_command(self, ctx: StepContext, *, reason: str, operator: str) -> Any:
        state = ctx.load().state
        if not usdc.can_reconcile(state):
            raise NotReconcilable(usdc.step_of(state), "no kept inflight to reconcile")
        return usdc.ReconcileUsdc(reason=reason, operator=operator)


WORKFLOW = UsdcWorkflow()
