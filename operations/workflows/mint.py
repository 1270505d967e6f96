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
TokensReceived  -> the tokens go into the asset's vault (spec 15.1: onchain inventory is what
                   the order book can trade): allowance short -> a standing max approval of
                   the order book, signed and recorded (RecordVaultApproval), then broadcast
                   until mined (after REBALANCER_TX_REPLACE_AFTER_S unmined: a bumped-fee
                   replacement stored first, ReplaceTransaction); then
                   `deposit4(token, vault_id, Float amount, [])` signed and recorded
                   (SubmitVaultDeposit). A refused deposit -> FailVaultDeposit (tokens in the
                   wallet, inflight kept, attention)
VaultDepositSubmitted -> receipt (of the deposit or one it replaced)? success and its Transfer
                   log moved the tokens from our wallet into the order book ->
                   ConfirmVaultDeposit naming the mined one (DepositedIntoVault, terminal);
                   reverted or dropped -> FailVaultDeposit; none -> broadcast the same bytes,
                   or after REBALANCER_TX_REPLACE_AFTER_S a bumped-fee replacement stored first
                   (ReplaceTransaction), Wait
"""

from __future__ import annotations

import logging
from typing import Any

from inventory.domain import mint
from inventory.domain.events import TxPurpose
from inventory.domain.units import UnitConversionError, to_units
from inventory.domain.values import DomainError
from inventory.selectors import asset_by_symbol
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
from venues.chain import (
    ChainError,
    EvmChain,
    InvalidArgument,
    PreflightReverted,
    erc20_transfers_in,
)

logger = logging.getLogger(__name__)

REFUSED = (InsufficientPosition, UnsupportedAccount, InvalidParameters, InvalidAmount)
MAX_APPROVAL_UNITS = 2**256 - 1


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
        try:
            if step == mint.MintStep.TOKENS_RECEIVED:
                return self._deposit(ctx, state.value)
            if step == mint.MintStep.VAULT_DEPOSIT_SUBMITTED:
                return self._confirm_deposit(ctx, state.value)
        except ChainError as exc:
            raise TransientStepError(f"chain: {exc}") from exc
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
            existing = alpaca.find_request_by_issuer_request_id(
                ctx.aggregate_id, since=ctx.operation.created_at
            )
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
        if request is not None and request.status.is_refusal:
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
            expected_units = to_units(state.quantity, asset.decimals)
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

    # -- the vault deposit (spec 15.1) -------------------------------------------------------

    def _vault_of(self, ctx: StepContext, symbol: str) -> tuple[str, str, str]:
        """(order book address, the asset's vault id, the asset's token) or NeedsAttention."""
        asset = asset_by_symbol(symbol)
        if asset is None:
            raise NeedsAttention(f"symbol={symbol}: no asset row, cannot deposit into its vault")
        orderbook = ctx.venues.config.base_orderbook
        if not orderbook:
            raise NeedsAttention("BASE_ORDERBOOK must be set to deposit minted tokens")
        if not asset.vault_id:
            raise NeedsAttention(f"symbol={symbol}: the asset has no vault_id")
        # The order book, or the RaindexInventory that owns the vaults (spec 15.6).
        return ctx.venues.vault_writer, asset.vault_id, asset.token_address

    def _fail_deposit(self, ctx: StepContext, reason: str, what: str) -> Outcome:
        ctx.execute(mint.FailVaultDeposit(reason=reason))
        ctx.flag(f"mint tokens not deposited into the vault, inflight kept: {reason}")
        return Done(what)

    def _deposit(self, ctx: StepContext, state: mint.TokensReceived) -> Outcome:
        base = ctx.venues.base
        vault, vault_id, token = self._vault_of(ctx, state.symbol)
        asset = asset_by_symbol(state.symbol)
        if asset is None:
            raise NeedsAttention(f"symbol={state.symbol}: no asset row, cannot deposit the mint")
        try:
            units = to_units(state.quantity, asset.decimals)
        except UnitConversionError as exc:
            raise NeedsAttention(f"quantity={state.quantity}: {exc}") from exc
        approval = self._ensure_allowance(ctx, state, base, token=token, spender=vault, units=units)
        if approval is not None:
            return approval
        try:
            ctx.sign_and_record(
                chain=base,
                build=lambda nonce: base.build_vault_deposit(
                    vault=vault,
                    token=token,
                    vault_id=bytes.fromhex(vault_id.removeprefix("0x")),
                    amount_units=units,
                    nonce=nonce,
                ),
                command=lambda signed: mint.SubmitVaultDeposit(
                    vault=vault,
                    vault_id=vault_id,
                    amount_units=units,
                    raw_tx=signed.raw,
                    tx_hash=signed.tx_hash,
                ),
                label="vault_deposit",
            )
        except (PreflightReverted, InvalidArgument) as exc:
            return self._fail_deposit(ctx, f"vault deposit refused: {exc}", "vault deposit refused")
        return Continue("vault deposit signed")

    def _ensure_allowance(
        self,
        ctx: StepContext,
        state: mint.TokensReceived,
        chain: EvmChain,
        *,
        token: str,
        spender: str,
        units: int,
    ) -> Outcome | None:
        """None once the order book may pull `units`; else the standing approval's progress
        (signed and recorded before it is broadcast; a dropped one is signed anew)."""
        if chain.erc20_allowance(token=token, owner=chain.address, spender=spender) >= units:
            return None
        if state.approval_raw_tx is not None and state.approval_tx_hash is not None:
            status = ctx.tx_resume(
                chain=chain,
                stored=mint.stored_tx(state, TxPurpose.APPROVE_VAULT),
                label="vault_approval",
            )
            if isinstance(status, TxPending):
                return Wait(ctx.config.tx_poll_interval_s, "vault approval not mined yet")
            if isinstance(status, TxMined):
                if not status.succeeded:
                    return self._fail_deposit(
                        ctx,
                        f"vault approval {status.receipt.tx_hash} reverted",
                        "vault approval reverted",
                    )
                if (
                    chain.erc20_allowance(token=token, owner=chain.address, spender=spender)
                    >= units
                ):
                    return None
                raise NeedsAttention(
                    f"vault approval {status.receipt.tx_hash} mined but the allowance of "
                    f"{spender} for {token} is below {units} units"
                )
            assert isinstance(status, TxDead)  # nonce used elsewhere: sign a new approval
        try:
            ctx.sign_and_record(
                chain=chain,
                build=lambda nonce: chain.build_erc20_approve(
                    token=token, spender=spender, amount_units=MAX_APPROVAL_UNITS, nonce=nonce
                ),
                command=lambda signed: mint.RecordVaultApproval(
                    raw_tx=signed.raw, tx_hash=signed.tx_hash
                ),
                label="vault_approval",
            )
        except (PreflightReverted, InvalidArgument) as exc:
            return self._fail_deposit(ctx, f"vault approval refused: {exc}", "approval refused")
        return Continue("vault approval signed")

    def _confirm_deposit(self, ctx: StepContext, state: mint.VaultDepositSubmitted) -> Outcome:
        base = ctx.venues.base
        status = ctx.tx_resume(chain=base, stored=mint.stored_tx(state, TxPurpose.VAULT_DEPOSIT))
        if isinstance(status, TxPending):
            return ctx.tx_not_mined("vault deposit", state.deposit_tx_hash, state.submitted_at)
        if isinstance(status, TxDead):
            return self._fail_deposit(
                ctx,
                f"vault deposit {state.deposit_tx_hash} dropped: nonce {status.nonce} used by "
                "another transaction; the tokens are still in the wallet",
                "vault deposit dead",
            )
        mined = status.receipt.tx_hash
        if not status.succeeded:
            return self._fail_deposit(
                ctx,
                f"vault deposit {mined} reverted: {base.revert_reason(mined)}",
                "vault deposit reverted",
            )
        asset = asset_by_symbol(state.symbol)
        token = asset.token_address if asset is not None else ""
        moved = sum(
            t.amount_units
            for t in erc20_transfers_in(status.receipt, token=token, to=state.vault)
            if t.from_.lower() == state.wallet.lower()
        )
        if moved != state.deposit_units:
            raise NeedsAttention(
                f"vault deposit {mined} moved {moved} units of {token} into "
                f"the order book, expected {state.deposit_units}"
            )
        ctx.execute(mint.ConfirmVaultDeposit(tx_hash=mined))
        return Done("deposited into the vault")

    def _time_out(self, ctx: StepContext, reason: str) -> Outcome:
        ctx.execute(mint.TimeOutMint(reason=reason))
        ctx.flag(f"mint timed out, shares kept inflight: {reason}")
        return Done("timed out")

    # -- operator and give-up paths ----------------------------------------------------------

    def fail(self, ctx: StepContext, *, reason: str, actor: str) -> bool:
        """Ask Alpaca before declaring a requested mint dead, and settle a stored vault
        deposit's truth, then the per-state mapping decides (an accepted mint times out keeping
        inflight; received tokens fail their vault deposit, keeping inflight).

        A requested mint's POST may have reached Alpaca (an answer lost, a worker killed after
        posting): the request is looked up by our issuer_request_id first. Found -> its
        acceptance is recorded (so the failure keeps the shares inflight, or records Alpaca's
        own rejection); not found -> Alpaca confirms it holds nothing and the rejection is
        safe; the lookup failing -> `NotFailable` (the operation stays active and flagged
        until Alpaca answers, or an operator reconciles it with a reason). A vault deposit
        still in the mempool cannot be failed (it may yet move the tokens); a mined one
        completes the mint instead of failing it.
        """
        state = ctx.load().state
        give_back: bytes | None = None
        if mint.step_of(state) == mint.MintStep.REQUESTED:
            try:
                request = ctx.venues.alpaca.find_request_by_issuer_request_id(
                    ctx.aggregate_id, since=ctx.operation.created_at
                )
            except AlpacaError as exc:
                raise NotFailable(
                    mint.MintStep.REQUESTED,
                    f"cannot tell whether Alpaca holds mint {ctx.aggregate_id}: {exc}",
                ) from exc
            if request is not None:
                logger.warning(
                    "operation %s: mint %s is at Alpaca as %s (%s); recording it before failing",
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
                if request.status == TokenizationStatus.REJECTED:
                    ctx.execute(
                        mint.FailAcceptance(reason=f"Mint request rejected by Alpaca; {reason}")
                    )
                    return True
        elif mint.step_of(state) == mint.MintStep.TOKENS_RECEIVED:
            received: mint.TokensReceived = state.value
            if received.approval_raw_tx is not None:
                try:
                    probe = ctx.tx_probe_all(
                        chain=ctx.venues.base, tx_hashes=received.approval_hashes()
                    )
                except ChainError as exc:
                    raise NotFailable(str(mint.step_of(state)), f"cannot tell: {exc}") from exc
                if isinstance(probe, TxPending):
                    # Left behind unmined, it would hold every later transaction's nonce.
                    raise NotFailable(
                        str(mint.step_of(state)),
                        f"vault approval {received.approval_tx_hash} is in the mempool; "
                        "retry later",
                    )
                if probe is None:
                    give_back = received.approval_raw_tx
        elif mint.step_of(state) == mint.MintStep.VAULT_DEPOSIT_SUBMITTED:
            value: mint.VaultDepositSubmitted = state.value
            try:
                probe = ctx.tx_probe_all(chain=ctx.venues.base, tx_hashes=value.deposit_hashes())
            except ChainError as exc:
                raise NotFailable(str(mint.step_of(state)), f"cannot tell: {exc}") from exc
            if isinstance(probe, TxPending):
                raise NotFailable(
                    str(mint.step_of(state)),
                    f"vault deposit {value.deposit_tx_hash} is in the mempool; retry later",
                )
            if isinstance(probe, TxMined) and probe.succeeded:
                ctx.execute(mint.ConfirmVaultDeposit(tx_hash=probe.receipt.tx_hash))
                return True
            if probe is None:
                give_back = value.deposit_raw_tx
        ctx.force_fail(reason=reason, actor=actor)
        if give_back is not None:
            ctx.nonce_give_back(chain=ctx.venues.base, raw_tx=give_back)
        return True

    def reconcile_unknown(self, ctx: StepContext, *, reason: str, operator: str) -> Any | None:
        """The failure an operator may record without asking Alpaca (they looked themselves):
        a requested mint is recorded rejected. None when the state has no unknown outcome."""
        if mint.step_of(ctx.load().state) == mint.MintStep.REQUESTED:
            return mint.RejectMint(reason=f"reconciled by {operator}: {reason}")
        return None

    def reconcile_command(self, ctx: StepContext, *, reason: str, operator: str) -> Any:
        state = ctx.load().state
        if not mint.can_reconcile(state):
            raise NotReconcilable(mint.step_of(state), "no kept inflight to reconcile")
        return mint.ReconcileMint(reason=reason, operator=operator)


WORKFLOW = MintWorkflow()
