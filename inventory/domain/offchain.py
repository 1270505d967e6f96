"""What of the USDC pool's offchain side can actually leave Alpaca (spec 15.5). Pure.

Alpaca holds two USD-valued balances: USD cash and USDC (the `USDCUSD` crypto position). The
USDC pool counts their sum at Alpaca, but an Alpaca-to-Base move can only spend
- USDC held, and
- cash that may leave now (`cash_withdrawable`: unsettled T+1 proceeds excluded), converted
  to USDC by a `USDCUSD` buy,
less a configured cash reserve that is never planned away, and less what the hedges still
pending at the brokerage may spend (a buy hedge pays from cash). The pool's offchain
available (which later hedge fills have moved since the snapshot) bounds it too: a sell
since the snapshot is unsettled cash, a buy has already spent it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

USDC_UNIT = Decimal("0.000001")
ZERO = Decimal(0)


@dataclass(frozen=True)
class OffchainLeavable:
    """The inputs and the result, so a log line or a page can show why."""

    pool_available: Decimal
    cash: Decimal
    cash_withdrawable: Decimal | None
    usdc: Decimal
    reserve: Decimal
    hedge_spend: Decimal

    @property
    def withdrawable_seen(self) -> Decimal:
        """What the last Alpaca read could send: withdrawable cash (cash when the read did
        not carry `cash_withdrawable`) plus USDC held."""
        cash = self.cash if self.cash_withdrawable is None else self.cash_withdrawable
        return cash + self.usdc

    @property
    def amount(self) -> Decimal:
        """What an Alpaca-to-Base move may take now, floored to USDC's 6 decimals, >= 0."""
        bound = min(self.pool_available, self.withdrawable_seen)
        left = bound - self.reserve - self.hedge_spend
        if left <= 0:
            return ZERO
        return left.quantize(USDC_UNIT, rounding=ROUND_DOWN)

    def describe(self) -> str:
        shown = "cash" if self.cash_withdrawable is None else "cash_withdrawable"
        withdrawable = self.cash if self.cash_withdrawable is None else self.cash_withdrawable
        return (
            f"min(pool offchain available {self.pool_available}, {shown} {withdrawable} + "
            f"USDC held {self.usdc}) - reserve {self.reserve} - pending hedges "
            f"{self.hedge_spend} = {self.amount}"
        )
