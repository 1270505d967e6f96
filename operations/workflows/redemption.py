"""Redemption workflow (spec 7.2 with stored signed transfers, B4 and B14; spec 15.1: the
tokens come out of the asset's vault first, onchain inventory being the vault).

(no aggregate)   -> amount = to_units(quantity, the asset's decimals) (no such asset,
                    negative/underflow: the operation fails with the reason, the guard is
                    released, others go on); the vault
                    must hold the amount (else the same); sign the order book
                    `withdraw4(token, vault_id, Float amount, [])` with an allocated nonce and
                    record it (SignVaultWithdraw: raw bytes + hash) in one transaction
VaultWithdrawPending -> receipt (of the withdrawal or one it replaced)? success and its
                    Transfer logs moved the whole amount from the order book to our wallet ->
                    ConfirmVaultWithdraw naming the mined one; moved nothing, reverted or
                    dropped -> FailVaultWithdraw (the vault kept the tokens); moved part ->
                    attention; none -> broadcast the same bytes, or after
                    REBALANCER_TX_REPLACE_AFTER_S a bumped-fee replacement stored first
                    (ReplaceTransaction), Wait
WithdrawnFromVault -> sign the ERC-20 transfer to the redemption wallet and record it
                    (SignTransfer: raw bytes + hash) in one transaction
TransferPending  -> receipt (of the transfer or one it replaced)? success -> SendTokens
                    naming the mined one; reverted -> FailTransfer; none -> broadcast the
                    same bytes, or after REBALANCER_TX_REPLACE_AFTER_S a bumped-fee
                    replacement stored first (ReplaceTransaction) (dead: nonce used elsewhere ->
                    FailTransfer, nothing left our wallet; tokens that came out of the vault
                    stay inflight for an operator) then Wait short
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
from inventory.domain.events import TxPurpose
from inventory.domain.units import UnitConversionError, to_units
from inventory.domain.values import DomainError
from inventory.selectors import asset_by_address
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
from venues.chain import ChainError, InvalidArgument, PreflightReverted, erc20_transfers_in

logger = logging.getLogger(__name__)

S = redemption.RedemptionStep


class RedemptionWorkflow:
    spec = redemption.SPEC

    def step(self, ctx: StepContext) -> Outcome:
        state = ctx.load().state
        step = redemption.step_of(state)
        try:
            if step == S.UNINITIALIZED:
                return self._withdraw(ctx)
            if step == S.VAULT_WITHDRAW_PENDING:
                return self._confirm_withdraw(ctx, state.value)
            if step == S.WITHDRAWN_FROM_VAULT:
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

    def _withdraw(self, ctx: StepContext) -> Outcome:
        operation = ctx.operation
        asset = asset_by_address(operation.token_address)
        if asset is None or asset.base_symbol != operation.pool:
            ctx.fail_before_events(
                f"token_address={operation.token_address}: no registered asset {operation.pool} "
                "with this token (its decimals are unknown)"
            )
            return Done("unknown token")
        try:
            amount_units = to_units(operation.amount, asset.decimals)
            if amount_units <= 0:
                raise UnitConversionError(
                    "zero", operation.amount, asset.decimals, "amount must be positive"
                )
        except UnitConversionError as exc:
            ctx.fail_before_events(f"amount={operation.amount}: {exc}")
            return Done("invalid amount")
        orderbook = ctx.venues.config.base_orderbook
        # Writes go to the vaults' owner contract when a RaindexInventory owns them (15.6).
        vault = ctx.venues.vault_writer if orderbook else None
        if not asset.vault_id or not vault:
            ctx.fail_before_events(
                f"symbol={operation.pool}: no vault to withdraw from "
                "(BASE_ORDERBOOK and the asset's vault_id must be set)"
            )
            return Done("no vault")
        base = ctx.venues.base
        token = operation.token_address
        vault_id = asset.vault_id
        assert orderbook is not None
        held = base.vault_balance(
            vault=orderbook,
            owner=ctx.venues.vault_owner,
            token=token,
            vault_id=bytes.fromhex(vault_id.removeprefix("0x")),
        )
        if held < amount_units:
            ctx.fail_before_events(
                f"vault {vault_id} holds {held} units of {token}, less than the "
                f"{amount_units} to redeem"
            )
            return Done("vault short")
        try:
            ctx.sign_and_record(
                chain=base,
                build=lambda nonce: base.build_vault_withdraw(
                    vault=vault,
                    token=token,
                    vault_id=bytes.fromhex(vault_id.removeprefix("0x")),
                    target_amount_units=amount_units,
                    nonce=nonce,
                ),
                command=lambda signed: redemption.SignVaultWithdraw(
                    symbol=operation.pool,
                    quantity=operation.amount,
                    token=token,
                    vault=vault,
                    vault_id=vault_id,
                    amount_units=amount_units,
                    raw_tx=signed.raw,
                    tx_hash=signed.tx_hash,
                ),
                label="vault_withdraw",
            )
        except (PreflightReverted, InvalidArgument) as exc:
            ctx.fail_before_events(f"vault withdraw refused before sending: {exc}")
            return Done("vault withdraw refused")
        except redemption.RedemptionError:
            return Continue("already signed")
        except DomainError as exc:
            ctx.fail_before_events(f"redemption refused: {exc}")
            return Done("invalid redemption")
        return Continue("vault withdraw signed")

    def _confirm_withdraw(
        self, ctx: StepContext, state: redemption.VaultWithdrawPending
    ) -> Outcome:
        base = ctx.venues.base
        status = ctx.tx_resume(
            chain=base, stored=redemption.stored_tx(state, TxPurpose.VAULT_WITHDRAW)
        )
        if isinstance(status, TxPending):
            return ctx.tx_not_mined("vault withdraw", state.tx_hash, state.signed_at)
        if isinstance(status, TxDead):
            ctx.execute(
                redemption.FailVaultWithdraw(
                    reason=f"vault withdraw {state.tx_hash} dropped: nonce {status.nonce} used "
                    "by another transaction; nothing left the vault"
                )
            )
            return Done("vault withdraw dead")
        mined = status.receipt.tx_hash
        if not status.succeeded:
            ctx.execute(
                redemption.FailVaultWithdraw(
                    reason=f"vault withdraw {mined} reverted: {base.revert_reason(mined)}"
                )
            )
            return Done("vault withdraw reverted")
        moved = sum(
            t.amount_units
            for t in erc20_transfers_in(
                status.receipt, token=state.token, from_=state.vault, to=base.address
            )
        )
        if moved == 0:
            ctx.execute(
                redemption.FailVaultWithdraw(
                    reason=f"vault withdraw {mined} moved no tokens (vault empty)"
                )
            )
            return Done("vault empty")
        if moved < state.amount_units:
            raise NeedsAttention(
                f"vault withdraw {mined} moved {moved} of {state.amount_units} units: "
                "the rest stayed in the vault; settle by hand"
            )
        ctx.execute(redemption.ConfirmVaultWithdraw(amount_units=moved, tx_hash=mined))
        return Continue("withdrawn from the vault")

    def _sign(self, ctx: StepContext) -> Outcome:
        operation = ctx.operation
        asset = asset_by_address(operation.token_address)
        if asset is None:
            raise NeedsAttention(
                f"token_address={operation.token_address}: no registered asset (decimals unknown)"
            )
        amount_units = to_units(operation.amount, asset.decimals)
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
            # The tokens are out of the vault, in our wallet: nothing valid to record.
            raise NeedsAttention(f"token transfer refused before sending: {exc}") from exc
        except redemption.RedemptionError:
            return Continue("already signed")
        return Continue("signed")

    def _send(self, ctx: StepContext, state: redemption.TransferPending) -> Outcome:
        status = ctx.tx_resume(
            chain=ctx.venues.base, stored=redemption.stored_tx(state, TxPurpose.TRANSFER)
        )
        if isinstance(status, TxMined):
            mined = status.receipt.tx_hash
            if status.succeeded:
                ctx.execute(
                    redemption.SendTokens(
                        symbol=state.symbol,
                        quantity=state.quantity,
                        redemption_wallet=state.redemption_wallet,
                        tx_hash=mined,
                    )
                )
                return Continue("tokens sent")
            ctx.execute(redemption.FailTransfer(reason=f"transfer {mined} reverted"))
            self._flag_if_kept(ctx, state)
            return Done("transfer reverted")
        if isinstance(status, TxDead):
            ctx.execute(
                redemption.FailTransfer(
                    reason=f"transfer {state.tx_hash} dropped: nonce {status.nonce} was used "
                    "by another transaction; no tokens left the wallet"
                )
            )
            self._flag_if_kept(ctx, state)
            return Done("transfer dead")
        assert isinstance(status, TxPending)
        return ctx.tx_not_mined("transfer", state.tx_hash, state.signed_at)

    def _flag_if_kept(self, ctx: StepContext, state: redemption.TransferPending) -> None:
        if state.withdrawn_from_vault:
            ctx.flag(
                f"transfer {state.tx_hash} failed after the vault withdrawal: the tokens are in "
                "our wallet, inflight kept until reconciled"
            )

    def _detect(self, ctx: StepContext, state: redemption.TokensSent) -> Outcome:
        found = ctx.venues.alpaca.find_redemption_by_tx(
            state.tx_hash, since=ctx.operation.created_at
        )
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
        if request is not None and request.status.is_refusal:
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
        if redemption.step_of(state) == S.VAULT_WITHDRAW_PENDING:
            pending: redemption.VaultWithdrawPending = state.value
            try:
                probe = ctx.tx_probe_all(chain=ctx.venues.base, tx_hashes=pending.all_tx_hashes())
            except ChainError as exc:
                raise NotFailable(S.VAULT_WITHDRAW_PENDING, f"cannot tell: {exc}") from exc
            if isinstance(probe, TxPending):
                raise NotFailable(
                    S.VAULT_WITHDRAW_PENDING,
                    f"vault withdraw {pending.tx_hash} is in the mempool; retry later",
                )
            if isinstance(probe, TxMined) and probe.succeeded:
                raise NotFailable(
                    S.VAULT_WITHDRAW_PENDING,
                    f"vault withdraw {probe.receipt.tx_hash} was mined: the tokens left the "
                    "vault; let the redemption go on",
                )
            if probe is None:
                give_back = pending.raw_tx
        if redemption.step_of(state) == S.TRANSFER_PENDING:
            value: redemption.TransferPending = state.value
            probes: list[tuple[str, TxMined | TxPending | None]] = []
            try:
                for tx_hash in value.all_tx_hashes():
                    probes.append((tx_hash, ctx.tx_probe(chain=ctx.venues.base, tx_hash=tx_hash)))
            except ChainError as exc:
                raise NotFailable(S.TRANSFER_PENDING, f"cannot tell what was sent: {exc}") from exc
            mined = [(h, p) for h, p in probes if isinstance(p, TxMined)]
            pending = [h for h, p in probes if isinstance(p, TxPending)]
            if not mined and pending:
                raise NotFailable(
                    S.TRANSFER_PENDING, f"transfer {pending[0]} is in the mempool; retry later"
                )
            if mined and mined[0][1].succeeded:
                ctx.execute(
                    redemption.SendTokens(
                        symbol=value.symbol,
                        quantity=value.quantity,
                        redemption_wallet=value.redemption_wallet,
                        tx_hash=mined[0][0],
                    )
                )
            elif not mined:
                give_back = value.raw_tx
            state = ctx.load().state
        if redemption.step_of(state) == S.TOKENS_SENT:
            self._detected_before_failing(ctx, state.value)
        ctx.force_fail(reason=reason, actor=actor)
        if give_back is not None:
            ctx.nonce_give_back(chain=ctx.venues.base, raw_tx=give_back)
        return True

    def _detected_before_failing(self, ctx: StepContext, state: redemption.TokensSent) -> None:
        """Tokens sent, detection pending: ask Alpaca before recording "not detected". A
        redeem request it created for our transfer is recorded (the failure then names it and
        keeps the tokens inflight); Alpaca not answering changes nothing, since every failure
        from here keeps the tokens inflight for an operator anyway."""
        try:
            found = ctx.venues.alpaca.find_redemption_by_tx(
                state.tx_hash, since=ctx.operation.created_at
            )
        except AlpacaError as exc:
            logger.warning(
                "operation %s: cannot ask Alpaca about %s before failing: %s",
                ctx.operation_id,
                state.tx_hash,
                exc,
            )
            return
        if found is not None:
            ctx.execute(redemption.Detect(tokenization_request_id=found.tokenization_request_id))

    def reconcile_unknown(self, ctx: StepContext, *, reason: str, operator: str) -> Any | None:
        """Every unknown outcome of a redemption is settled from the chain (`fail`)."""
        return None

    def reconcile_command(self, ctx: StepContext, *, reason: str, operator: str) -> Any:
        state = ctx.load().state
        if not redemption.can_reconcile(state):
            raise NotReconcilable(redemption.step_of(state), "no kept inflight to reconcile")
        return redemption.ReconcileRedemption(reason=reason, operator=operator)


WORKFLOW = RedemptionWorkflow()
