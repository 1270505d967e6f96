"""Two local anvil chains (Ethereum-sim and Base-sim) with our contracts deployed.

    with SimChains.start() as chains:
        chains.ethereum.rpc_url, chains.base.usdc, chains.base.vault, chains.equity_token("tAAPL")
        chains.mint(chains.base, token, to, amount_units)
        message, attestation = chains.attest(burn.message, fee_executed_units=5)

Each chain runs `anvil` from the npm package `@foundry-rs/anvil` (platform sub-package
`@foundry-rs/anvil-<os>-<arch>/bin/anvil`; `ANVIL_BIN` overrides) on a free loopback port,
automining every transaction. Everything is local; nothing needs the internet.

Accounts are anvil's public deterministic dev keys (mnemonic "test test ... junk"); they are
NOT secrets and must never hold real funds. Roles by derivation index:
    0 deployer     owns every contract, minter of every token, vault operator (simulateTake)
    1 market_maker our bot's signer (EVM_PRIVATE_KEY in simulation)
    2 attester     the simulated Circle Iris attester key
    3 alpaca_wallet Alpaca's USDC hot wallet on Ethereum (withdrawals come from it; it is also
                   the USDC deposit address)
    4 alpaca_tokenization the tokenization issuer on Base (minter of equity tokens)
    5 redemption_wallet where redemptions are sent on Base
    6 fee_recipient receives CCTP `feeExecuted`

Contracts per chain: USDC (MintableERC20, 6 decimals), MessageTransmitterV2 and
TokenMessengerV2 (CCTP domains 0 and 6, linked to each other, USDC pairs linked), and on Base
the OrderBookVault plus tokenized equities (MintableERC20, 18 decimals) created on demand.
The deploy order is the same on both chains, so the CCTP and USDC contracts share an address on
both, as Circle's do on mainnet.

Writes by the venue accounts are serialised by a lock per (chain, account), so the simulated
server's threads can share one `SimChains`. `describe()`/`attach()` let another process use
chains started elsewhere (it then does not own, and never stops, the anvil processes).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import Web3

from venues import cctp
from venues.chain import EvmChain, Receipt, TransactionReverted, receipt_from_web3
from venues.rain_float import RainFloat, float_from_units, float_to_units

logger = logging.getLogger(__name__)


def loopback_session() -> Any:
    """A requests session for our local chains that ignores proxy variables: the chains are on
    loopback, and reading the environment from a background thread races with whoever edits
    it (pytest sets and deletes PYTEST_CURRENT_TEST around every test: a KeyError seen in the
    settlement thread)."""
    import requests

    session = requests.Session()
    session.trust_env = False
    return session


REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = Path(__file__).resolve().parent / "contracts" / "build"
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
ETHEREUM_SIM_CHAIN_ID = 900_001
BASE_SIM_CHAIN_ID = 908_453
USDC_DECIMALS = 6
EQUITY_DECIMALS = 18
# The simulated ETH/USD feed's answer (8 decimals): 3,000 USD per ETH.
SIM_ETH_USD_ANSWER = 3_000 * 10**8
DEFAULT_ALPACA_USDC_UNITS = 10_000_000 * 10**USDC_DECIMALS
ROLE_INDEXES = {
    "deployer": 0,
    "market_maker": 1,
    "attester": 2,
    "alpaca_wallet": 3,
    "alpaca_tokenization": 4,
    "redemption_wallet": 5,
    "fee_recipient": 6,
}


class SimChainError(Exception):
    """The simulated chains could not be started, deployed or used."""


@dataclass(frozen=True)
class SimAccount:
    """An anvil dev account (public test key, never a secret worth protecting)."""

    role: str
    address: str
    private_key: str = field(repr=False)


@dataclass
class SimChain:
    name: str  # "ethereum" | "base"
    chain_id: int
    domain: int  # CCTP domain
    rpc_url: str
    usdc: str = ""
    message_transmitter: str = ""
    token_messenger: str = ""
    vault: str | None = None  # Base only
    equity_tokens: dict[str, str] = field(default_factory=dict)  # symbol -> address (Base)
    eth_usd_aggregator: str | None = None  # Base only: a Chainlink-style ETH/USD feed


def anvil_path() -> str:
    """The anvil binary: $ANVIL_BIN, else node_modules' platform package, else PATH."""
    override = os.environ.get("ANVIL_BIN")
    if override:
        return override
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = {"linux": "linux", "darwin": "darwin", "win32": "win32"}.get(sys.platform, "")
    name = "anvil.exe" if system == "win32" else "anvil"
    candidate = REPO_ROOT / "node_modules" / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("anvil")
    if found:
        return found
    raise SimChainError(
        f"anvil binary not found at {candidate} or on PATH: run `npm ci` (bin/setup) "
        "or set ANVIL_BIN"
    )


def load_artifact(contract_name: str) -> dict[str, Any]:
    path = BUILD_DIR / f"{contract_name}.json"
    artifact: dict[str, Any] = json.loads(path.read_text())
    return artifact


def dev_account(role: str) -> SimAccount:
    Account.enable_unaudited_hdwallet_features()
    index = ROLE_INDEXES[role]
    account = Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return SimAccount(
        role=role, address=str(account.address), private_key="0x" + bytes(account.key).hex()
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM the anvil child if the process that started it dies (no orphans)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class _AnvilProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int


def _start_anvil(*, chain_id: int, log_dir: Path, name: str, timeout_s: float) -> _AnvilProcess:
    log_path = log_dir / f"anvil-{name}.log"
    binary = anvil_path()
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                binary,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--chain-id",
                str(chain_id),
                "--mnemonic",
                ANVIL_MNEMONIC,
                "--accounts",
                str(len(ROLE_INDEXES)),
                "--balance",
                "10000",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            # Its own session: a terminal's Ctrl-C (SIGINT to the foreground process group)
            # must not kill the chain under a day that is ending; its owner stops it last.
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    pattern = re.compile(rb"Listening on 127\.0\.0\.1:(\d+)")
    while time.monotonic() < deadline:
        match = pattern.search(log_path.read_bytes())
        if match:
            return _AnvilProcess(process=process, log_path=log_path, port=int(match.group(1)))
        if process.poll() is not None:
            break
        time.sleep(0.02)
    tail = log_path.read_bytes()[-2000:].decode(errors="replace")
    _stop_process(process)
    raise SimChainError(f"anvil {name} (chain {chain_id}) did not start: {tail}")


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


class SimChains:
    """Ethereum-sim and Base-sim with deployed contracts; stop() ends the anvil processes."""

    def __init__(
        self,
        *,
        ethereum: SimChain,
        base: SimChain,
        processes: list[_AnvilProcess] | None = None,
        temp_dir: tempfile.TemporaryDirectory[str] | None = None,
    ) -> None:
        self.ethereum = ethereum
        self.base = base
        self._processes = processes or []
        self._temp_dir = temp_dir
        self.accounts = {role: dev_account(role) for role in ROLE_INDEXES}
        self._web3 = {
            chain.name: Web3(
                Web3.HTTPProvider(
                    chain.rpc_url, request_kwargs={"timeout": 30}, session=loopback_session()
                )
            )
            for chain in (ethereum, base)
        }
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._tokens_guard = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        log_dir: Path | None = None,
        alpaca_usdc_units: int = DEFAULT_ALPACA_USDC_UNITS,
        market_maker_usdc_ethereum_units: int = 0,
        market_maker_usdc_base_units: int = 0,
        equity_symbols: tuple[str, ...] = (),
        start_timeout_s: float = 15.0,
    ) -> SimChains:
        """Start both anvil processes, deploy and link the contracts, fund the venue accounts."""
        temp_dir = None
        if log_dir is None:
            temp_dir = tempfile.TemporaryDirectory(prefix="sim-chains-")
            log_dir = Path(temp_dir.name)
        log_dir.mkdir(parents=True, exist_ok=True)
        processes: list[_AnvilProcess] = []
        try:
            for name, chain_id in (
                ("ethereum", ETHEREUM_SIM_CHAIN_ID),
                ("base", BASE_SIM_CHAIN_ID),
            ):
                processes.append(
                    _start_anvil(
                        chain_id=chain_id, log_dir=log_dir, name=name, timeout_s=start_timeout_s
                    )
                )
            ethereum = SimChain(
                name="ethereum",
                chain_id=ETHEREUM_SIM_CHAIN_ID,
                domain=cctp.DOMAIN_ETHEREUM,
                rpc_url=f"http://127.0.0.1:{processes[0].port}",
            )
            base = SimChain(
                name="base",
                chain_id=BASE_SIM_CHAIN_ID,
                domain=cctp.DOMAIN_BASE,
                rpc_url=f"http://127.0.0.1:{processes[1].port}",
            )
            chains = cls(ethereum=ethereum, base=base, processes=processes, temp_dir=temp_dir)
            chains._wait_ready(timeout_s=start_timeout_s)
            chains._deploy()
            if alpaca_usdc_units:
                chains.mint_usdc(ethereum, chains.alpaca_wallet.address, alpaca_usdc_units)
            if market_maker_usdc_ethereum_units:
                chains.mint_usdc(
                    ethereum, chains.market_maker.address, market_maker_usdc_ethereum_units
                )
            if market_maker_usdc_base_units:
                chains.mint_usdc(base, chains.market_maker.address, market_maker_usdc_base_units)
            for symbol in equity_symbols:
                chains.equity_token(symbol)
        except BaseException:
            for started in processes:
                _stop_process(started.process)
            if temp_dir is not None:
                temp_dir.cleanup()
            raise
        logger.info(
            "sim chains up: ethereum %s (chain %d), base %s (chain %d)",
            ethereum.rpc_url,
            ethereum.chain_id,
            base.rpc_url,
            base.chain_id,
        )
        return chains

    @classmethod
    def attach(cls, description: dict[str, Any]) -> SimChains:
        """Use chains another process started (from `describe()`); this object owns nothing."""
        return cls(
            ethereum=SimChain(**description["ethereum"]), base=SimChain(**description["base"])
        )

    def describe(self) -> dict[str, Any]:
        """JSON-able description (rpc urls, chain ids, addresses) for `attach()`."""
        with self._tokens_guard:
            return {"ethereum": asdict(self.ethereum), "base": asdict(self.base)}

    def exited(self) -> list[str]:
        """The chains whose anvil process has ended, e.g. `base (anvil pid 12, exit -2)`."""
        names = {self.ethereum.rpc_url: "ethereum", self.base.rpc_url: "base"}
        return [
            f"{names.get(f'http://127.0.0.1:{started.port}', 'a chain')} "
            f"(anvil pid {started.process.pid}, exit {started.process.returncode})"
            for started in self._processes
            if started.process.poll() is not None
        ]

    def stop(self) -> None:
        for started in self._processes:
            _stop_process(started.process)
        self._processes = []
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
            self._temp_dir = None

    def __enter__(self) -> SimChains:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"SimChains(ethereum={self.ethereum.rpc_url} chain {self.ethereum.chain_id}, "
            f"base={self.base.rpc_url} chain {self.base.chain_id})"
        )

    # -- accounts and clients ----------------------------------------------------------------

    @property
    def deployer(self) -> SimAccount:
        return self.accounts["deployer"]

    @property
    def market_maker(self) -> SimAccount:
        return self.accounts["market_maker"]

    @property
    def attester(self) -> SimAccount:
        return self.accounts["attester"]

    @property
    def alpaca_wallet(self) -> SimAccount:
        return self.accounts["alpaca_wallet"]

    @property
    def alpaca_tokenization(self) -> SimAccount:
        return self.accounts["alpaca_tokenization"]

    @property
    def redemption_wallet(self) -> SimAccount:
        return self.accounts["redemption_wallet"]

    @property
    def fee_recipient(self) -> SimAccount:
        return self.accounts["fee_recipient"]

    def chain(self, key: str | int) -> SimChain:
        """By name ("ethereum"/"base"), CCTP domain (0/6) or chain id."""
        for chain in (self.ethereum, self.base):
            if key in (chain.name, chain.domain, chain.chain_id):
                return chain
        raise SimChainError(f"chain={key!r}: not ethereum/base, domain 0/6 or a sim chain id")

    def client(
        self, chain: SimChain | str | int, signer: str | SimAccount = "market_maker"
    ) -> EvmChain:
        """A real `EvmChain` client for `chain` signing as `signer` (a role name or account)."""
        sim_chain = chain if isinstance(chain, SimChain) else self.chain(chain)
        account = self.accounts[signer] if isinstance(signer, str) else signer
        return EvmChain(
            rpc_url=sim_chain.rpc_url,
            private_key=account.private_key,
            name=f"{sim_chain.name}-sim",
            expected_chain_id=sim_chain.chain_id,
        )

    def new_account(self, role: str = "scratch", *, eth_wei: int = 10**21) -> SimAccount:
        """A fresh random account with `eth_wei` of gas money on both chains (test isolation)."""
        account = Account.create()
        created = SimAccount(
            role=role, address=str(account.address), private_key="0x" + bytes(account.key).hex()
        )
        for chain in (self.ethereum, self.base):
            self.fund_eth(chain, created.address, eth_wei)
        return created

    def fund_eth(self, chain: SimChain, address: str, wei: int) -> None:
        """Set the native balance of `address` (anvil_setBalance)."""
        response = self._web3[chain.name].provider.make_request(
            "anvil_setBalance",  # type: ignore[arg-type]
            [to_checksum_address(address), hex(wei)],
        )
        if "error" in response:
            raise SimChainError(f"{chain.name}: anvil_setBalance failed: {response['error']}")

    def next_base_fee_set(self, chain: SimChain, wei: int) -> None:
        """Set the next block's base fee (anvil_setNextBlockBaseFeePerGas): a gas spike."""
        response = self.web3(chain).provider.make_request(
            "anvil_setNextBlockBaseFeePerGas",  # type: ignore[arg-type]
            [hex(wei)],
        )
        if "error" in response:
            raise SimChainError(f"{chain.name}: base fee not set: {response['error']}")

    def web3(self, chain: SimChain) -> Web3:
        return self._web3[chain.name]

    def env(self) -> dict[str, str]:
        """Environment for running the service against these chains (sim dev keys)."""
        return {
            "ETHEREUM_RPC_URL": self.ethereum.rpc_url,
            "BASE_RPC_URL": self.base.rpc_url,
            "EVM_PRIVATE_KEY": self.market_maker.private_key,
            "MARKET_MAKER_WALLET": self.market_maker.address,
            "REDEMPTION_WALLET": self.redemption_wallet.address,
            "BASE_ORDERBOOK": self.base.vault or "",
            "USDC_ETHEREUM": self.ethereum.usdc,
            "USDC_BASE": self.base.usdc,
            "CCTP_TOKEN_MESSENGER": self.base.token_messenger,
            "CCTP_MESSAGE_TRANSMITTER": self.base.message_transmitter,
            **(
                {"ETH_USD_AGGREGATOR": self.base.eth_usd_aggregator}
                if self.base.eth_usd_aggregator
                else {}
            ),
        }

    # -- low-level transactions --------------------------------------------------------------

    def _lock(self, chain: SimChain, address: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((chain.name, address), threading.Lock())

    def transact(
        self,
        chain: SimChain,
        account: SimAccount,
        *,
        to: str | None,
        data: str | bytes,
        gas: int = 3_000_000,
    ) -> Receipt:
        """Sign and send one transaction from a dev account; waits for the (automined) receipt.

        Raises `TransactionReverted` on status 0. Uses a fixed gas limit so a revert is mined
        (and visible) instead of failing at estimation.
        """
        w3 = self._web3[chain.name]
        data_hex = data if isinstance(data, str) else "0x" + data.hex()
        with self._lock(chain, account.address):
            nonce = w3.eth.get_transaction_count(account.address, "pending")  # type: ignore[arg-type]
            base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas") or 0)
            tx: dict[str, Any] = {
                "chainId": chain.chain_id,
                "nonce": nonce,
                "gas": gas,
                "maxPriorityFeePerGas": 1,
                "maxFeePerGas": 2 * base_fee + 1,
                "value": 0,
                "data": data_hex,
                "type": 2,
            }
            if to is not None:
                tx["to"] = to
            signed = Account.from_key(account.private_key).sign_transaction(tx)
            tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
            raw = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)
        receipt = receipt_from_web3(raw)
        if not receipt.succeeded:
            raise TransactionReverted(receipt.tx_hash, self._revert_reason(chain, receipt))
        return receipt

    def _revert_reason(self, chain: SimChain, receipt: Receipt) -> str:
        client = self.client(chain, "deployer")
        return client.revert_reason(receipt.tx_hash)

    def encode(self, contract_name: str, function: str, *args: Any) -> str:
        """ABI-encoded call data for `function` of one of our contracts (for `transact`)."""
        contract = self._web3[self.ethereum.name].eth.contract(
            abi=load_artifact(contract_name)["abi"]
        )
        encoded: str = contract.encode_abi(function, args=list(args))
        return encoded

    def _deploy_contract(
        self, chain: SimChain, contract_name: str, *args: Any, account: SimAccount | None = None
    ) -> str:
        artifact = load_artifact(contract_name)
        w3 = self._web3[chain.name]
        factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        data = factory.constructor(*args).data_in_transaction
        receipt_obj = self.transact(
            chain, account or self.deployer, to=None, data=data, gas=6_000_000
        )
        raw = w3.eth.get_transaction_receipt(receipt_obj.tx_hash)  # type: ignore[arg-type]
        address = raw["contractAddress"]
        if not address:
            raise SimChainError(f"{chain.name}: deploying {contract_name} returned no address")
        return str(to_checksum_address(address))

    def call(
        self, chain: SimChain, contract_name: str, address: str, function: str, *args: Any
    ) -> Any:
        contract = self._web3[chain.name].eth.contract(
            address=to_checksum_address(address), abi=load_artifact(contract_name)["abi"]
        )
        return contract.functions[function](*args).call()

    # -- deployment --------------------------------------------------------------------------

    def _wait_ready(self, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for chain in (self.ethereum, self.base):
            while True:
                try:
                    if self._web3[chain.name].eth.chain_id == chain.chain_id:
                        break
                except Exception as exc:
                    if time.monotonic() > deadline:
                        raise SimChainError(f"{chain.name}: anvil not answering: {exc}") from exc
                time.sleep(0.05)

    def _deploy(self) -> None:
        for chain in (self.ethereum, self.base):
            chain.usdc = self._deploy_contract(chain, "MintableERC20", "USD Coin", "USDC", 6)
            chain.message_transmitter = self._deploy_contract(
                chain, "MessageTransmitterV2", chain.domain, self.attester.address
            )
            chain.token_messenger = self._deploy_contract(
                chain, "TokenMessengerV2", chain.message_transmitter, self.fee_recipient.address
            )
            self.transact(
                chain,
                self.deployer,
                to=chain.usdc,
                data=self.encode("MintableERC20", "configureMinter", chain.token_messenger, True),
            )
        for local, remote in ((self.ethereum, self.base), (self.base, self.ethereum)):
            self.transact(
                local,
                self.deployer,
                to=local.token_messenger,
                data=self.encode(
                    "TokenMessengerV2",
                    "addRemoteTokenMessenger",
                    remote.domain,
                    cctp.bytes32(remote.token_messenger),
                ),
            )
            self.transact(
                local,
                self.deployer,
                to=local.token_messenger,
                data=self.encode(
                    "TokenMessengerV2",
                    "linkTokenPair",
                    local.usdc,
                    remote.domain,
                    cctp.bytes32(remote.usdc),
                ),
            )
        self.base.vault = self._deploy_contract(self.base, "OrderBookVault")
        # ETH/USD with 8 decimals, as Chainlink's feeds; the price the cost ledger reads.
        self.base.eth_usd_aggregator = self._deploy_contract(
            self.base, "PriceAggregator", 8, "ETH / USD", SIM_ETH_USD_ANSWER
        )

    # -- tokens ------------------------------------------------------------------------------

    def equity_token(self, symbol: str, *, name: str | None = None) -> str:
        """The Base address of the tokenized equity `symbol` (e.g. "tAAPL"), deployed on demand.

        18 decimals; minters are the deployer and the Alpaca tokenization account.
        """
        with self._tokens_guard:
            existing = self.base.equity_tokens.get(symbol)
            if existing:
                return existing
            address = self._deploy_contract(
                self.base,
                "MintableERC20",
                name or f"{symbol} tokenized equity (sim)",
                symbol,
                EQUITY_DECIMALS,
            )
            self.transact(
                self.base,
                self.deployer,
                to=address,
                data=self.encode(
                    "MintableERC20", "configureMinter", self.alpaca_tokenization.address, True
                ),
            )
            self.base.equity_tokens[symbol] = address
            logger.info("sim base: deployed equity token %s at %s", symbol, address)
            return address

    def mint(self, chain: SimChain, token: str, to: str, amount_units: int) -> Receipt:
        """Mint `amount_units` of `token` to `to` (signed by the deployer, a minter of all)."""
        return self.transact(
            chain,
            self.deployer,
            to=token,
            data=self.encode("MintableERC20", "mint", to_checksum_address(to), amount_units),
        )

    def eth_usd_set(self, answer: int) -> Receipt:
        """Set the Base ETH/USD feed's answer (8 decimals); a new round."""
        assert self.base.eth_usd_aggregator is not None
        return self.transact(
            self.base,
            self.deployer,
            to=self.base.eth_usd_aggregator,
            data=self.encode("PriceAggregator", "setAnswer", answer),
        )

    def base_fee(self, chain: SimChain) -> int:
        """The latest block's base fee (wei per gas): what a gas price read sees now."""
        return int(self._web3[chain.name].eth.get_block("latest").get("baseFeePerGas") or 0)

    def base_fee_set(self, chain: SimChain, wei: int) -> int:
        """Make `wei` the chain's base fee now, as a busy (or a quiet) network would: the next
        block's base fee (`anvil_setNextBlockBaseFeePerGas`), mined at once as an empty block
        (`evm_mine`) so the latest block carries it. Later blocks follow EIP-1559 from there
        (each block below its gas target lowers it by up to 12.5%). Returns the new base fee."""
        if wei < 0:
            raise SimChainError(f"wei={wei}: a base fee cannot be negative")
        provider = self._web3[chain.name].provider
        for method, params in (
            ("anvil_setNextBlockBaseFeePerGas", [hex(wei)]),
            ("evm_mine", []),
        ):
            response = provider.make_request(method, params)  # type: ignore[arg-type]
            if "error" in response:
                raise SimChainError(f"{chain.name}: {method} failed: {response['error']}")
        return self.base_fee(chain)

    def mint_usdc(self, chain: SimChain, to: str, amount_units: int) -> Receipt:
        return self.mint(chain, chain.usdc, to, amount_units)

    def transfer(
        self, chain: SimChain, token: str, sender: SimAccount | str, to: str, amount_units: int
    ) -> Receipt:
        """ERC-20 transfer from a venue dev account (by role name or SimAccount)."""
        account = self.accounts[sender] if isinstance(sender, str) else sender
        return self.transact(
            chain,
            account,
            to=token,
            data=self.encode("MintableERC20", "transfer", to_checksum_address(to), amount_units),
        )

    def burn_from(self, chain: SimChain, token: str, holder: str, amount_units: int) -> Receipt:
        """Retire tokens held by `holder` (e.g. redeemed tokens at the redemption wallet)."""
        return self.transact(
            chain,
            self.deployer,
            to=token,
            data=self.encode(
                "MintableERC20", "burnFrom", to_checksum_address(holder), amount_units
            ),
        )

    def balance(self, chain: SimChain, token: str, owner: str) -> int:
        return int(
            self.call(chain, "MintableERC20", token, "balanceOf", to_checksum_address(owner))
        )

    def eth_balance(self, chain: SimChain, owner: str) -> int:
        return int(self._web3[chain.name].eth.get_balance(to_checksum_address(owner)))

    def vault_balance(self, owner: str, token: str, vault_id: bytes) -> int:
        """The vault's balance in token units (`vaultBalance2`'s Float, converted exactly)."""
        if self.base.vault is None:
            raise SimChainError("base vault is not deployed")
        raw = self.call(
            self.base,
            "OrderBookVault",
            self.base.vault,
            "vaultBalance2",
            to_checksum_address(owner),
            to_checksum_address(token),
            vault_id,
        )
        decimals = int(self.call(self.base, "MintableERC20", token, "decimals"))
        return float_to_units(RainFloat.unpack(bytes(raw)), decimals)

    def vault_deposit(
        self, account: SimAccount, token: str, vault_id: bytes, amount_units: int
    ) -> Receipt:
        """`account` approves the vault and deposits `amount_units` of `token` (`deposit4`)."""
        if self.base.vault is None:
            raise SimChainError("base vault is not deployed")
        self.transact(
            self.base,
            account,
            to=token,
            data=self.encode("MintableERC20", "approve", self.base.vault, amount_units),
        )
        decimals = int(self.call(self.base, "MintableERC20", token, "decimals"))
        amount = float_from_units(amount_units, decimals).pack()
        return self.transact(
            self.base,
            account,
            to=self.base.vault,
            data=self.encode(
                "OrderBookVault", "deposit4", to_checksum_address(token), vault_id, amount, []
            ),
        )

    def deploy_inventory(self, *, operators: tuple[str, ...] = ()) -> str:
        """A `RaindexInventory` over the order book ("managed" vaults, spec 15.6), with
        OPERATOR_ROLE granted to `operators`; returns its address."""
        if self.base.vault is None:
            raise SimChainError("base vault is not deployed")
        inventory = self._deploy_contract(self.base, "RaindexInventory", self.base.vault)
        role = keccak(text="OPERATOR_ROLE")
        for operator in operators:
            self.transact(
                self.base,
                self.deployer,
                to=inventory,
                data=self.encode(
                    "RaindexInventory", "grantRole", role, to_checksum_address(operator)
                ),
            )
        return inventory

    def simulate_take(
        self,
        *,
        owner: str,
        vault_id: bytes,
        input_token: str,
        input_units: int,
        output_token: str,
        output_units: int,
    ) -> Receipt:
        """A taker fills `owner`'s order: `input_units` of `input_token` go into the owner's
        vault, `output_units` of `output_token` leave it (the deployer plays the taker; the
        input tokens are minted to it first)."""
        if self.base.vault is None:
            raise SimChainError("base vault is not deployed")
        if input_units:
            self.mint(self.base, input_token, self.deployer.address, input_units)
            self.transact(
                self.base,
                self.deployer,
                to=input_token,
                data=self.encode("MintableERC20", "approve", self.base.vault, input_units),
            )
        return self.transact(
            self.base,
            self.deployer,
            to=self.base.vault,
            data=self.encode(
                "OrderBookVault",
                "simulateTake",
                to_checksum_address(owner),
                vault_id,
                to_checksum_address(input_token),
                input_units,
                to_checksum_address(output_token),
                output_units,
            ),
        )

    # -- CCTP attester -----------------------------------------------------------------------

    def sign_attestation(self, message: bytes) -> bytes:
        """The attester's 65-byte signature (r, s, v) over keccak256(message), no prefix."""
        signed = Account.unsafe_sign_hash(keccak(message), self.attester.private_key)
        r, s, v = int(signed.r), int(signed.s), int(signed.v)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])

    def attest(
        self,
        message: bytes,
        *,
        fee_executed_units: int = 0,
        finality_threshold_executed: int = cctp.FINALITY_THRESHOLD_FAST,
    ) -> tuple[bytes, bytes]:
        """What Iris returns for a burn: the message with `feeExecuted` and
        `finalityThresholdExecuted` set, and the attester's signature over it."""
        attested = cctp.with_attested_fields(
            message,
            fee_executed_units=fee_executed_units,
            finality_threshold_executed=finality_threshold_executed,
        )
        return attested, self.sign_attestation(attested)

    def nonce_used(self, chain: SimChain, nonce: str) -> bool:
        raw = bytes.fromhex(nonce.removeprefix("0x"))
        return (
            int(
                self.call(
                    chain, "MessageTransmitterV2", chain.message_transmitter, "usedNonces", raw
                )
            )
            != 0
        )
