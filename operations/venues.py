"""The venue clients a worker uses, built from `settings.REBALANCING`.

`Venues` is what workflows receive in their context (`ctx.venues`): the Alpaca client, the Iris
client, and one `EvmChain` per chain signing with our key (B10). Tests build one from a
`RebalancingConfig` for the simulated venue (`Venues.from_config(config)`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

from cachetools import LRUCache, cached
from django.conf import settings

from conf.env import RebalancingConfig, WorkerConfig
from venues.alpaca import AlpacaClient
from venues.chain import EvmChain
from venues.circle import IrisClient
from venues.http import RetryPolicy

# Reads retry briefly inside a step; longer outages are the runner's backoff (a worker must
# not sleep for minutes inside one task: the queue's timeout would kill it).
STEP_READ_RETRY = RetryPolicy(attempts=3, min_delay_s=0.3, max_delay_s=1.0)


class VenuesNotConfigured(Exception):
    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(
            "rebalancing venues are not configured; missing: " + ", ".join(sorted(missing))
        )


@dataclass
class Venues:
    config: RebalancingConfig

    @classmethod
    def from_config(cls, config: RebalancingConfig) -> Venues:
        required = {
            "MARKET_MAKER_WALLET": config.market_maker_wallet,
            "REDEMPTION_WALLET": config.redemption_wallet,
            "ETHEREUM_RPC_URL": config.ethereum_rpc_url,
            "BASE_RPC_URL": config.base_rpc_url,
            "EVM_PRIVATE_KEY": config.evm_private_key,
            "ALPACA_API_KEY": config.alpaca_api_key,
            "ALPACA_API_SECRET": config.alpaca_api_secret,
            "ALPACA_ACCOUNT_ID": config.alpaca_account_id,
        }
        missing = [name for name, value in required.items() if value is None]
        if missing:
            raise VenuesNotConfigured(missing)
        return cls(config=config)

    @property
    def workers(self) -> WorkerConfig:
        return self.config.workers

    @property
    def market_maker_wallet(self) -> str:
        assert self.config.market_maker_wallet is not None
        return self.config.market_maker_wallet

    @property
    def vault_writer(self) -> str:
        """Where vault deposits and withdrawals (and their token approvals) go: the shared
        `RaindexInventory` when one owns the vaults, else the order book (spec 15.6)."""
        writer = self.config.raindex_inventory or self.config.base_orderbook
        assert writer is not None
        return writer

    @property
    def vault_owner(self) -> str:
        """The owner the order book's `vaultBalance2` is read under: the inventory contract
        when one owns the vaults, else our wallet."""
        return self.config.raindex_inventory or self.market_maker_wallet

    @property
    def redemption_wallet(self) -> str:
        assert self.config.redemption_wallet is not None
        return self.config.redemption_wallet

    @cached_property
    def alpaca(self) -> AlpacaClient:
        assert self.config.alpaca_api_key is not None
        assert self.config.alpaca_api_secret is not None
        assert self.config.alpaca_account_id is not None
        return AlpacaClient(
            api_key=self.config.alpaca_api_key.reveal(),
            api_secret=self.config.alpaca_api_secret.reveal(),
            base_url=self.config.alpaca_base_url,
            trading_mode=self.config.alpaca_trading_mode,
            account_id=self.config.alpaca_account_id,
            timeout_s=15.0,
            retry=STEP_READ_RETRY,
        )

    @cached_property
    def iris(self) -> IrisClient:
        return IrisClient(self.config.circle_iris_url, timeout_s=15.0, retry=STEP_READ_RETRY)

    def _chain(self, name: str, rpc_url: object) -> EvmChain:
        assert self.config.evm_private_key is not None
        return EvmChain(
            rpc_url=rpc_url.reveal(),  # type: ignore[attr-defined]
            private_key=self.config.evm_private_key.reveal(),
            name=name,
            request_timeout_s=15.0,
        )

    @cached_property
    def base(self) -> EvmChain:
        return self._chain("base", self.config.base_rpc_url)

    @cached_property
    def ethereum(self) -> EvmChain:
        return self._chain("ethereum", self.config.ethereum_rpc_url)


# Keyed by the config object's identity: the cached `Venues` holds its config, so that object
# lives (and its id stays its own) while it is cached.
@cached(cache=LRUCache(maxsize=1), key=id, lock=threading.Lock())
def _venues_of(config: RebalancingConfig) -> Venues:
    return Venues.from_config(config)


def venues_get() -> Venues:
    """The process's venues for `settings.REBALANCING` (built once per config object)."""
    return _venues_of(settings.REBALANCING)
