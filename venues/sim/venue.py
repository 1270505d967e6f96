"""`SimVenue`: the two simulated chains plus the Alpaca/Iris HTTP server, as one unit.

    with SimVenue(equity_symbols=("AAPL",), positions={"AAPL": Decimal(100)}) as venue:
        venue.env()            # every variable the service needs to run against it
        venue.server.fail_next(KEY_MINT, "5xx_after")

Started chains are owned (stopped with the venue) unless passed in (`chains=`), e.g. the test
session's shared `sim_chains`.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from types import TracebackType
from typing import Any

from eth_account import Account
from eth_utils import keccak

from venues.sim.chain import SimAccount, SimChains
from venues.sim.server import ChainSide, SimKnobs, SimVenueServer, SimWorld

__all__ = ["SimKnobs", "SimVenue"]

logger = logging.getLogger(__name__)

DEFAULT_API_KEY = "sim-api-key"
DEFAULT_API_SECRET = "sim-api-secret"
DEFAULT_ACCOUNT_ID = "00000000-0000-4000-8000-0000000000a1"
# Deterministic ids and addresses, derived from labels so every run shows the same values.
USDC_VAULT_ID = "0x" + keccak(text="rebalancer sim usdc vault").hex()
DEPOSIT_ADDRESS = str(Account.from_key(keccak(text="rebalancer sim alpaca deposit")).address)


def token_symbol_for(symbol: str) -> str:
    """The onchain token of an underlying equity in the simulation: `AAPL` -> `tAAPL`."""
    return f"t{symbol}"


def equity_vault_id(symbol: str) -> str:
    return "0x" + keccak(text=f"rebalancer sim vault {symbol}").hex()


class SimVenue:
    def __init__(
        self,
        *,
        knobs: SimKnobs | None = None,
        chains: SimChains | None = None,
        equity_symbols: tuple[str, ...] = ("AAPL",),
        positions: dict[str, Decimal] | None = None,
        cash_usd: Decimal = Decimal(0),
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        api_secret: str = DEFAULT_API_SECRET,
        account_id: str = DEFAULT_ACCOUNT_ID,
    ) -> None:
        self._knobs = knobs or SimKnobs()
        self._given_chains = chains
        self._chains: SimChains | None = chains
        self.equity_symbols = tuple(equity_symbols)
        self._positions = dict(positions or {})
        self._cash_usd = cash_usd
        self._host = host
        self._port = port
        self.api_key = api_key
        self.api_secret = api_secret
        self.account_id = account_id
        self._server: SimVenueServer | None = None
        self.equity_tokens: dict[str, str] = {}

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"SimVenue({state}, symbols={self.equity_symbols!r})"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> SimVenue:
        if self._server is not None:
            return self
        owned = self._given_chains is None
        chains = self._given_chains or SimChains.start()
        self._chains = chains
        try:
            self.equity_tokens = {
                symbol: chains.equity_token(token_symbol_for(symbol))
                for symbol in self.equity_symbols
            }
            world = SimWorld(
                ethereum=_side(chains, "ethereum"),
                base=_side(chains, "base"),
                equity_tokens=dict(self.equity_tokens),
                minter_key=chains.alpaca_tokenization.private_key,
                usdc_funder_key=chains.deployer.private_key,
                attester_key=chains.attester.private_key,
                hot_wallet_key=chains.alpaca_wallet.private_key,
                deposit_address=DEPOSIT_ADDRESS,
                redemption_wallet=chains.redemption_wallet.address,
                market_maker_wallet=chains.market_maker.address,
                api_key=self.api_key,
                api_secret=self.api_secret,
                account_id=self.account_id,
            )
            server = SimVenueServer(
                world,
                knobs=self._knobs,
                host=self._host,
                port=self._port,
                positions=self._positions,
                cash_usd=self._cash_usd,
            )
            server.start()
        except BaseException:
            if owned:
                chains.stop()
                self._chains = None
            raise
        self._server = server
        logger.info("simulated venue up at %s", server.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._given_chains is None and self._chains is not None:
            self._chains.stop()
            self._chains = None

    def __enter__(self) -> SimVenue:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what a configuration needs --------------------------------------------------------

    @property
    def server(self) -> SimVenueServer:
        if self._server is None:
            raise RuntimeError("SimVenue is not started")
        return self._server

    @property
    def chains(self) -> SimChains:
        if self._chains is None:
            raise RuntimeError("SimVenue is not started")
        return self._chains

    @property
    def alpaca_url(self) -> str:
        return self.server.url

    @property
    def iris_url(self) -> str:
        return self.server.url

    @property
    def market_maker(self) -> SimAccount:
        return self.chains.market_maker

    @property
    def redemption_wallet(self) -> str:
        return self.chains.redemption_wallet.address

    @property
    def deposit_address(self) -> str:
        return DEPOSIT_ADDRESS

    @property
    def vault(self) -> str:
        vault = self.chains.base.vault
        if vault is None:
            raise RuntimeError("base vault is not deployed")
        return vault

    @property
    def usdc_vault_id(self) -> str:
        return USDC_VAULT_ID

    def assets(self) -> list[dict[str, Any]]:
        """One entry per equity: what `asset_register` needs."""
        return [
            {
                "base_symbol": symbol,
                "token_address": address,
                "token_symbol": token_symbol_for(symbol),
                "vault_id": equity_vault_id(symbol),
                "decimals": 18,
            }
            for symbol, address in self.equity_tokens.items()
        ]

    def env(self) -> dict[str, str]:
        """Environment variables for running the service against this venue."""
        values = dict(self.chains.env())
        values.update(
            {
                "REBALANCING_MODE": "on",
                "USDC_VAULT_ID": USDC_VAULT_ID,
                "ALPACA_BASE_URL": self.alpaca_url,
                "ALPACA_API_KEY": self.api_key,
                "ALPACA_API_SECRET": self.api_secret,
                "ALPACA_ACCOUNT_ID": self.account_id,
                "ALPACA_TRADING_MODE": "paper",
                "CIRCLE_IRIS_URL": self.iris_url,
                "SIM_ALPACA_DEPOSIT_ADDRESS": DEPOSIT_ADDRESS,
                "SIM_CCTP_TOKEN_MESSENGER_ETHEREUM": self.chains.ethereum.token_messenger,
                "SIM_CCTP_MESSAGE_TRANSMITTER_ETHEREUM": self.chains.ethereum.message_transmitter,
            }
        )
        for asset in self.assets():
            symbol = asset["base_symbol"]
            values[f"SIM_EQUITY_TOKEN_{symbol}"] = asset["token_address"]
            values[f"SIM_EQUITY_VAULT_ID_{symbol}"] = asset["vault_id"]
        return values


def _side(chains: SimChains, name: str) -> ChainSide:
    chain = chains.chain(name)
    return ChainSide(
        name=chain.name,
        rpc_url=chain.rpc_url,
        domain=chain.domain,
        usdc=chain.usdc,
        message_transmitter=chain.message_transmitter,
    )
