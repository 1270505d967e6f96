"""EVM chain client (web3 v8): ERC-20, CCTP V2 TokenMessenger/MessageTransmitter, orderbook vault.

One signer per client; every write is signed locally with it (B10). Writes are two-phase so a
worker can store the signed bytes before anything leaves the process:

    signed = chain.build_erc20_transfer(token=..., to=..., amount_units=..., nonce=n)
    # store signed.raw / signed.tx_hash / signed.nonce in an event, commit
    chain.broadcast(signed)          # idempotent: a rebroadcast of the same bytes is a no-op
    receipt = chain.wait_for_receipt(signed.tx_hash, timeout_s=120)

`build_*` estimates gas with the current chain state (a call that would revert raises
`PreflightReverted` and nothing is signed), unless `gas` is given. Amounts are integer onchain
units (`amount_units`); converting from Decimal is `inventory.domain.units`' job. The order book
vault (Rain `IRaindexV6`: `deposit4`, `withdraw4`, `vaultBalance2`) speaks Rain `Float`s; the
client converts exactly between units and `Float` with the token's own `decimals()`
(`venues.rain_float`). A withdrawal can move less than its target: read what moved from the
receipt's ERC-20 `Transfer` logs (`erc20_transfers_in`), never from the request.

This module imports no Django app. Error messages and `repr` never contain the private key or
the RPC URL's path, query or credentials (API keys usually live there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_utils import is_address, keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError

from venues import cctp
from venues.rain_float import (
    FloatConversionError,
    RainFloat,
    float_from_units,
    float_to_units_floor,
)

logger = logging.getLogger(__name__)

ZERO_BYTES32 = b"\x00" * 32
GAS_MARGIN_PERCENT = 20
# A node accepts a transaction replacing a pending one (same nonce) only when both its fee cap
# and its tip are at least 10% higher (geth, anvil); 12.5% leaves room for rounding.
REPLACEMENT_BUMP_PERCENT = 12.5
SELF_TRANSFER_GAS = 21_000

ERC20_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "balanceOf",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "allowance",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "decimals",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint8"}],
    },
    {
        "type": "function",
        "name": "symbol",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "string"}],
    },
    {
        "type": "function",
        "name": "transfer",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "to", "type": "address"}, {"name": "value", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "approve",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "spender", "type": "address"}, {"name": "value", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "event",
        "name": "Transfer",
        "anonymous": False,
        "inputs": [
            {"name": "from", "type": "address", "indexed": True},
            {"name": "to", "type": "address", "indexed": True},
            {"name": "value", "type": "uint256", "indexed": False},
        ],
    },
]

TOKEN_MESSENGER_V2_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "depositForBurn",
        "stateMutability": "nonpayable",
        "inputs": [
            {"name": "amount", "type": "uint256"},
            {"name": "destinationDomain", "type": "uint32"},
            {"name": "mintRecipient", "type": "bytes32"},
            {"name": "burnToken", "type": "address"},
            {"name": "destinationCaller", "type": "bytes32"},
            {"name": "maxFee", "type": "uint256"},
            {"name": "minFinalityThreshold", "type": "uint32"},
        ],
        "outputs": [],
    },
]

MESSAGE_TRANSMITTER_V2_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "receiveMessage",
        "stateMutability": "nonpayable",
        "inputs": [
            {"name": "message", "type": "bytes"},
            {"name": "attestation", "type": "bytes"},
        ],
        "outputs": [{"name": "success", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "usedNonces",
        "stateMutability": "view",
        "inputs": [{"name": "nonce", "type": "bytes32"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "event",
        "name": "MessageSent",
        "anonymous": False,
        "inputs": [{"name": "message", "type": "bytes", "indexed": False}],
    },
]

# Rain's order book vault interface (IRaindexV6): amounts are Rain `Float`s (`bytes32`, see
# venues.rain_float), every write takes a `TaskV2[]` (we always send none). The simulated order
# book (venues/sim/contracts/OrderBookVault.sol) implements exactly these signatures.
_EVALUABLE_V4: dict[str, Any] = {
    "name": "evaluable",
    "type": "tuple",
    "components": [
        {"name": "interpreter", "type": "address"},
        {"name": "store", "type": "address"},
        {"name": "bytecode", "type": "bytes"},
    ],
}
_SIGNED_CONTEXT_V1: dict[str, Any] = {
    "name": "signedContext",
    "type": "tuple[]",
    "components": [
        {"name": "signer", "type": "address"},
        {"name": "context", "type": "bytes32[]"},
        {"name": "signature", "type": "bytes"},
    ],
}
_TASKS_V2: dict[str, Any] = {
    "name": "tasks",
    "type": "tuple[]",
    "components": [_EVALUABLE_V4, _SIGNED_CONTEXT_V1],
}
# Chainlink's AggregatorV3Interface: the reads a price feed answers (issue 24: ETH/USD).
PRICE_FEED_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "decimals",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint8"}],
    },
    {
        "type": "function",
        "name": "latestRoundData",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [
            {"name": "roundId", "type": "uint80"},
            {"name": "answer", "type": "int256"},
            {"name": "startedAt", "type": "uint256"},
            {"name": "updatedAt", "type": "uint256"},
            {"name": "answeredInRound", "type": "uint80"},
        ],
    },
]


@dataclass(frozen=True)
class PriceRound:
    """One round of a Chainlink-style feed: `answer / 10**decimals` is the price."""

    feed: str
    round_id: int
    answer: int
    decimals: int
    updated_at: int  # unix seconds

    @property
    def price(self) -> Decimal:
        return Decimal(self.answer).scaleb(-self.decimals)


ORDERBOOK_VAULT_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "deposit4",
        "stateMutability": "nonpayable",
        "inputs": [
            {"name": "token", "type": "address"},
            {"name": "vaultId", "type": "bytes32"},
            {"name": "depositAmount", "type": "bytes32"},
            _TASKS_V2,
        ],
        "outputs": [],
    },
    {
        "type": "function",
        "name": "withdraw4",
        "stateMutability": "nonpayable",
        "inputs": [
            {"name": "token", "type": "address"},
            {"name": "vaultId", "type": "bytes32"},
            {"name": "targetAmount", "type": "bytes32"},
            _TASKS_V2,
        ],
        "outputs": [],
    },
    {
        "type": "function",
        "name": "vaultBalance2",
        "stateMutability": "view",
        "inputs": [
            {"name": "owner", "type": "address"},
            {"name": "token", "type": "address"},
            {"name": "vaultId", "type": "bytes32"},
        ],
        "outputs": [{"name": "balance", "type": "bytes32"}],
    },
]

# A shared `RaindexInventory` that owns the vaults ("managed" mode, spec 15.6): writes take the
# order book's own `deposit4` / `withdraw4` (ORDERBOOK_VAULT_ABI) from a wallet holding its
# `OPERATOR_ROLE`; reads go to the order book with the inventory's address as owner.
RAINDEX_INVENTORY_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "OPERATOR_ROLE",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "bytes32"}],
    },
    {
        "type": "function",
        "name": "hasRole",
        "stateMutability": "view",
        "inputs": [
            {"name": "role", "type": "bytes32"},
            {"name": "account", "type": "address"},
        ],
        "outputs": [{"name": "", "type": "bool"}],
    },
]
OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")

# MessageTransmitterV2's revert reason for a message that was already received (real and sim).
NONCE_ALREADY_USED_REASON = "Nonce already used"

TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
MESSAGE_SENT_TOPIC = "0x" + keccak(text="MessageSent(bytes)").hex()

# Node answers to a rebroadcast of a transaction the node already has (geth, anvil, reth,
# nethermind, erigon spell it differently).
_ALREADY_KNOWN_MARKERS = ("already known", "already imported", "known transaction", "alreadyknown")
_NONCE_TOO_LOW_MARKERS = ("nonce too low", "nonce is too low", "oldnonce")


# ---------------------------------------------------------------------------------------------
# Errors


class ChainError(Exception):
    """Root of every chain client error. Messages never carry the key or the RPC URL secrets."""


class ChainRpcError(ChainError):
    """The node could not be reached or answered with an error we do not interpret."""

    def __init__(self, chain: str, method: str, detail: str) -> None:
        self.chain = chain
        self.method = method
        self.detail = detail
        super().__init__(f"{chain}: RPC {method} failed: {detail}")


class InvalidArgument(ChainError):
    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field}={value!r}: {rule}")


class ContractReverted(ChainError):
    """A contract call reverted; `reason` is the decoded revert string when there is one."""

    def __init__(self, message: str, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class PreflightReverted(ContractReverted):
    """Gas estimation reverted while building a transaction: nothing was signed or sent."""

    def __init__(self, chain: str, function: str, reason: str) -> None:
        self.chain = chain
        self.function = function
        super().__init__(f"{chain}: {function} would revert: {reason}", reason)


class TransactionReverted(ContractReverted):
    """A mined transaction has status 0."""

    def __init__(self, tx_hash: str, reason: str) -> None:
        self.tx_hash = tx_hash
        super().__init__(f"transaction {tx_hash} reverted: {reason}", reason)


class BroadcastRejected(ChainError):
    """The node refused the raw transaction (and it is not a rebroadcast of a known one)."""

    def __init__(self, tx_hash: str, reason: str) -> None:
        self.tx_hash = tx_hash
        self.reason = reason
        super().__init__(f"transaction {tx_hash} rejected by the node: {reason}")


class NonceAlreadyUsed(BroadcastRejected):
    """'nonce too low' and this hash is unknown: another transaction consumed the nonce."""


class ReceiptTimeout(ChainError):
    def __init__(self, tx_hash: str, timeout_s: float) -> None:
        self.tx_hash = tx_hash
        self.timeout_s = timeout_s
        super().__init__(f"no receipt for transaction {tx_hash} after {timeout_s}s")


class MessageSentEventNotFound(ChainError):
    def __init__(self, tx_hash: str) -> None:
        self.tx_hash = tx_hash
        super().__init__(f"transaction {tx_hash} emitted no CCTP MessageSent event")


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class SignedTx:
    raw: bytes
    tx_hash: str  # 0x-prefixed
    nonce: int
    chain_id: int

    def __repr__(self) -> str:
        return f"SignedTx(tx_hash={self.tx_hash}, nonce={self.nonce}, chain_id={self.chain_id})"


@dataclass(frozen=True)
class Log:
    address: str
    topics: tuple[str, ...]
    data: bytes
    log_index: int
    block_number: int
    tx_hash: str


@dataclass(frozen=True)
class Receipt:
    tx_hash: str
    status: int  # 1 success, 0 reverted
    block_number: int
    from_: str
    to: str | None
    gas_used: int
    logs: tuple[Log, ...]
    # Wei paid per gas unit (EIP-1559: base fee + priority fee); gas_used * this is the fee.
    effective_gas_price: int = 0

    @property
    def native_fee_wei(self) -> int:
        """What the transaction cost its sender in the chain's native token (wei), exact."""
        return self.gas_used * self.effective_gas_price

    @property
    def succeeded(self) -> bool:
        return self.status == 1


@dataclass(frozen=True)
class Erc20Transfer:
    token: str
    from_: str
    to: str
    amount_units: int
    tx_hash: str
    block_number: int
    log_index: int


@dataclass(frozen=True)
class CctpBurn:
    """The MessageSent of a depositForBurn: everything needed to fetch and use an attestation."""

    message: bytes = field(repr=False)
    message_hash: str
    nonce: str  # 0x-prefixed 32 bytes
    source_domain: int
    destination_domain: int
    amount: int  # burned amount, units
    max_fee: int  # units
    mint_recipient: str
    burn_token: str
    tx_hash: str
    block_number: int


# ---------------------------------------------------------------------------------------------
# Protocol


class Chain(Protocol):
    name: str

    @property
    def address(self) -> str: ...
    @property
    def chain_id(self) -> int: ...
    def block_number(self) -> int: ...
    def mined_nonce(self) -> int: ...
    def erc20_balance(self, *, token: str, owner: str) -> int: ...
    def erc20_allowance(self, *, token: str, owner: str, spender: str) -> int: ...
    def erc20_decimals(self, *, token: str) -> int: ...
    def erc20_symbol(self, *, token: str) -> str: ...
    def vault_balance_float(
        self, *, vault: str, owner: str, token: str, vault_id: bytes, block: int | None = None
    ) -> RainFloat: ...
    def vault_balance(self, *, vault: str, owner: str, token: str, vault_id: bytes) -> int: ...
    def has_operator_role(self, *, inventory: str, account: str) -> bool: ...
    def receipt(self, tx_hash: str) -> Receipt | None: ...
    def transaction_known(self, tx_hash: str) -> bool: ...
    def erc20_transfers(
        self,
        *,
        token: str,
        from_block: int,
        to_block: int | None = None,
        to: str | None = None,
        from_: str | None = None,
    ) -> list[Erc20Transfer]: ...
    def build_replacement(self, raw_tx: bytes, *, bump_percent: float = ...) -> SignedTx: ...
    def build_self_transfer(
        self, *, nonce: int, replaces: bytes | None = ..., bump_percent: float = ...
    ) -> SignedTx: ...
    def build_erc20_transfer(
        self, *, token: str, to: str, amount_units: int, nonce: int | None = None
    ) -> SignedTx: ...
    def build_erc20_approve(
        self, *, token: str, spender: str, amount_units: int, nonce: int | None = None
    ) -> SignedTx: ...
    def build_deposit_for_burn(
        self,
        *,
        token_messenger: str,
        burn_token: str,
        amount_units: int,
        destination_domain: int,
        mint_recipient: str,
        max_fee_units: int,
        min_finality_threshold: int = cctp.FINALITY_THRESHOLD_FAST,
        nonce: int | None = None,
    ) -> SignedTx: ...
    def build_receive_message(
        self,
        *,
        message_transmitter: str,
        message: bytes,
        attestation: bytes,
        nonce: int | None = None,
    ) -> SignedTx: ...
    def build_vault_deposit(
        self,
        *,
        vault: str,
        token: str,
        vault_id: bytes,
        amount_units: int,
        nonce: int | None = None,
    ) -> SignedTx: ...
    def build_vault_withdraw(
        self,
        *,
        vault: str,
        token: str,
        vault_id: bytes,
        target_amount_units: int,
        nonce: int | None = None,
    ) -> SignedTx: ...
    def broadcast(self, signed: SignedTx) -> str: ...
    def wait_for_receipt(
        self, tx_hash: str, *, timeout_s: float = 120.0, poll_s: float = 1.0
    ) -> Receipt: ...
    def decode_message_sent(self, receipt: Receipt) -> CctpBurn: ...
    def cctp_nonce_used(self, *, message_transmitter: str, nonce: str) -> bool: ...


# ---------------------------------------------------------------------------------------------
# Helpers


def _hex(value: bytes | str) -> str:
    if isinstance(value, str):
        return value if value.startswith("0x") else "0x" + value
    return "0x" + bytes(value).hex()


def _address(field: str, value: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise InvalidArgument(field, value, "must be a 20-byte hex address")
    return to_checksum_address(value)


def _units(field: str, value: int, *, positive: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, value, "must be an int in onchain units")
    if value < 0 or (positive and value == 0):
        raise InvalidArgument(field, value, "must be positive" if positive else "must be >= 0")
    if value >= 2**256:
        raise InvalidArgument(field, value, "must fit in uint256")
    return value


def _non_negative(field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(field, value, "must be a non-negative integer")
    return value


def _bytes32(field: str, value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise InvalidArgument(field, value, "must be exactly 32 bytes")
    return bytes(value)


def _topic_address(address: str) -> str:
    return "0x" + "00" * 12 + to_checksum_address(address)[2:].lower()


def redact_url(url: str) -> str:
    """scheme://host[:port] only: userinfo, path and query often hold API keys."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    suffix = "/…" if (parts.path not in ("", "/") or parts.query or parts.username) else ""
    return f"{parts.scheme}://{host}{port}{suffix}"


def receipt_from_web3(raw: Any) -> Receipt:
    logs = tuple(
        Log(
            address=to_checksum_address(entry["address"]),
            topics=tuple(_hex(bytes(t)) for t in entry["topics"]),
            data=bytes(entry["data"]),
            log_index=int(entry["logIndex"]),
            block_number=int(entry["blockNumber"]),
            tx_hash=_hex(bytes(entry["transactionHash"])),
        )
        for entry in raw["logs"]
    )
    return Receipt(
        tx_hash=_hex(bytes(raw["transactionHash"])),
        status=int(raw["status"]),
        block_number=int(raw["blockNumber"]),
        from_=to_checksum_address(raw["from"]),
        to=to_checksum_address(raw["to"]) if raw.get("to") else None,
        gas_used=int(raw["gasUsed"]),
        logs=logs,
        effective_gas_price=int(raw.get("effectiveGasPrice") or 0),
    )


def _transfer_from_log(log: Log) -> Erc20Transfer | None:
    if len(log.topics) != 3 or log.topics[0] != TRANSFER_TOPIC or len(log.data) != 32:
        return None
    return Erc20Transfer(
        token=log.address,
        from_=to_checksum_address(bytes.fromhex(log.topics[1][2:])[12:]),
        to=to_checksum_address(bytes.fromhex(log.topics[2][2:])[12:]),
        amount_units=int.from_bytes(log.data, "big"),
        tx_hash=log.tx_hash,
        block_number=log.block_number,
        log_index=log.log_index,
    )


def erc20_transfers_in(
    receipt: Receipt, *, token: str, to: str | None = None, from_: str | None = None
) -> list[Erc20Transfer]:
    """The `Transfer` logs of `token` in one receipt, optionally filtered by recipient/sender."""
    token = _address("token", token)
    to = _address("to", to) if to is not None else None
    from_ = _address("from_", from_) if from_ is not None else None
    found = []
    for log in receipt.logs:
        if log.address != token:
            continue
        transfer = _transfer_from_log(log)
        if transfer is None:
            continue
        if to is not None and transfer.to != to:
            continue
        if from_ is not None and transfer.from_ != from_:
            continue
        found.append(transfer)
    return found


def signed_fields(raw_tx: bytes) -> dict[str, Any]:
    """The fields of a signed typed transaction (nonce, to, value, data, gas, fees...)."""
    try:
        return dict(TypedTransaction.from_bytes(HexBytes(bytes(raw_tx))).as_dict())
    except Exception as exc:
        raise InvalidArgument(
            "raw_tx", _hex(bytes(raw_tx))[:20] + "...", f"unreadable: {exc}"
        ) from None


def decode_message_sent(receipt: Receipt) -> CctpBurn:
    """Decode the CCTP V2 `MessageSent(bytes)` log of a depositForBurn receipt."""
    for log in receipt.logs:
        if log.topics and log.topics[0] == MESSAGE_SENT_TOPIC:
            offset = int.from_bytes(log.data[0:32], "big")
            length = int.from_bytes(log.data[offset : offset + 32], "big")
            message = log.data[offset + 32 : offset + 32 + length]
            parsed = cctp.parse_message(message)
            return CctpBurn(
                message=message,
                message_hash=cctp.message_hash(message),
                nonce=parsed.nonce,
                source_domain=parsed.source_domain,
                destination_domain=parsed.destination_domain,
                amount=parsed.body.amount_units,
                max_fee=parsed.body.max_fee_units,
                mint_recipient=parsed.body.mint_recipient,
                burn_token=parsed.body.burn_token,
                tx_hash=receipt.tx_hash,
                block_number=receipt.block_number,
            )
    raise MessageSentEventNotFound(receipt.tx_hash)


# ---------------------------------------------------------------------------------------------
# Client


class EvmChain:
    """web3 client for one EVM chain with one signing key (HTTP JSON-RPC)."""

    def __init__(
        self,
        *,
        rpc_url: str,
        private_key: str,
        name: str,
        expected_chain_id: int | None = None,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self._rpc_url = rpc_url
        try:
            self._account = Account.from_key(private_key)
        except Exception:  # never echo the key
            raise InvalidArgument(
                "private_key", "<redacted>", "must be a 32-byte hex key"
            ) from None
        url = urlsplit(rpc_url)
        if url.scheme not in ("http", "https"):
            # web3 v8's only WebSocket provider is async; this client is synchronous.
            raise InvalidArgument("rpc_url", redact_url(rpc_url), "must be an http(s) JSON-RPC URL")
        candidates = (
            private_key,
            private_key.removeprefix("0x"),
            rpc_url,
            url.path if url.path not in ("", "/") else "",
            url.query,
            url.password or "",
        )
        self._secrets = tuple(s for s in candidates if s)
        self._w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout_s}))
        self._expected_chain_id = expected_chain_id
        self._chain_id: int | None = None
        self._erc20 = self._w3.eth.contract(abi=ERC20_ABI)
        self._messenger = self._w3.eth.contract(abi=TOKEN_MESSENGER_V2_ABI)
        self._transmitter = self._w3.eth.contract(abi=MESSAGE_TRANSMITTER_V2_ABI)
        self._vault = self._w3.eth.contract(abi=ORDERBOOK_VAULT_ABI)
        self._inventory = self._w3.eth.contract(abi=RAINDEX_INVENTORY_ABI)
        self._price_feed = self._w3.eth.contract(abi=PRICE_FEED_ABI)
        self._token_decimals: dict[str, int] = {}

    def __repr__(self) -> str:
        return (
            f"EvmChain(name={self.name!r}, address={self.address}, "
            f"rpc={redact_url(self._rpc_url)}, private_key=<redacted>)"
        )

    # -- plumbing -------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "<redacted>")
        return text

    def _rpc(self, method: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except ChainError:
            raise
        except ContractLogicError:
            raise
        except Exception as exc:
            detail = self._redact(f"{type(exc).__name__}: {exc}")
            raise ChainRpcError(self.name, method, detail) from None

    @property
    def address(self) -> str:
        return str(self._account.address)

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            chain_id = int(self._rpc("eth_chainId", lambda: self._w3.eth.chain_id))
            if self._expected_chain_id is not None and chain_id != self._expected_chain_id:
                raise ChainError(
                    f"{self.name}: chain_id={chain_id}: expected {self._expected_chain_id}"
                )
            self._chain_id = chain_id
        return self._chain_id

    def _call(
        self, contract: Any, address: str, function: str, *args: Any, block: int | None = None
    ) -> Any:
        bound = contract(address=address).functions[function](*args)
        identifier: Any = "latest" if block is None else _non_negative("block", block)
        try:
            return self._rpc(f"eth_call {function}", bound.call, block_identifier=identifier)
        except ContractLogicError as exc:
            raise ContractReverted(
                f"{self.name}: {function} call reverted: {self._reason(exc)}", self._reason(exc)
            ) from None

    @staticmethod
    def _reason(exc: ContractLogicError) -> str:
        message = str(exc.args[0]) if exc.args else str(exc)
        return message.removeprefix("execution reverted: ").removeprefix("execution reverted")

    # -- reads ----------------------------------------------------------------------------

    def block_number(self) -> int:
        return int(self._rpc("eth_blockNumber", lambda: self._w3.eth.block_number))

    def pending_nonce(self) -> int:
        return int(
            self._rpc(
                "eth_getTransactionCount",
                self._w3.eth.get_transaction_count,
                self._account.address,
                "pending",
            )
        )

    def native_balance(self, owner: str | None = None) -> int:
        """The chain's native balance (wei) of `owner`, by default our signer (its gas)."""
        address = self._account.address if owner is None else _address("owner", owner)
        return int(self._rpc("eth_getBalance", self._w3.eth.get_balance, address))

    def mined_nonce(self) -> int:
        """How many of our transactions are mined (the next nonce a block can include)."""
        return int(
            self._rpc(
                "eth_getTransactionCount",
                self._w3.eth.get_transaction_count,
                self._account.address,
                "latest",
            )
        )

    def gas_price_now(self) -> int:
        """What a transaction pays per gas now (wei): the latest block's base fee plus the
        priority fee (the effective gas price a receipt would show)."""
        latest = self._rpc("eth_getBlockByNumber", self._w3.eth.get_block, "latest")
        base_fee = int(latest.get("baseFeePerGas") or 0)
        priority = int(self._rpc("eth_maxPriorityFeePerGas", lambda: self._w3.eth.max_priority_fee))
        return base_fee + priority

    def price_feed_latest(self, *, feed: str) -> PriceRound:
        """The latest round of a Chainlink-style price feed (`latestRoundData`, `decimals`)."""
        address = _address("feed", feed)
        decimals = int(self._call(self._price_feed, address, "decimals"))
        round_id, answer, _started, updated_at, _answered = self._call(
            self._price_feed, address, "latestRoundData"
        )
        if int(answer) <= 0:
            raise ChainError(f"{self.name}: price feed {address} answered {answer}")
        return PriceRound(
            feed=address,
            round_id=int(round_id),
            answer=int(answer),
            decimals=decimals,
            updated_at=int(updated_at),
        )

    def erc20_balance(self, *, token: str, owner: str) -> int:
        return int(
            self._call(self._erc20, _address("token", token), "balanceOf", _address("owner", owner))
        )

    def erc20_allowance(self, *, token: str, owner: str, spender: str) -> int:
        return int(
            self._call(
                self._erc20,
                _address("token", token),
                "allowance",
                _address("owner", owner),
                _address("spender", spender),
            )
        )

    def erc20_decimals(self, *, token: str) -> int:
        """The token's `decimals()`, read once per token (an ERC-20's decimals never change)."""
        token = _address("token", token)
        if token not in self._token_decimals:
            self._token_decimals[token] = int(self._call(self._erc20, token, "decimals"))
        return self._token_decimals[token]

    def erc20_symbol(self, *, token: str) -> str:
        return str(self._call(self._erc20, _address("token", token), "symbol"))

    def has_operator_role(self, *, inventory: str, account: str) -> bool:
        """Whether `account` holds the `RaindexInventory`'s `OPERATOR_ROLE` (`hasRole`)."""
        return bool(
            self._call(
                self._inventory,
                _address("inventory", inventory),
                "hasRole",
                OPERATOR_ROLE,
                _address("account", account),
            )
        )

    def vault_balance_float(
        self, *, vault: str, owner: str, token: str, vault_id: bytes, block: int | None = None
    ) -> RainFloat:
        """`vaultBalance2(owner, token, vaultId)`: the balance as the order book holds it;
        `block` pins the read to that block (one poll reads every vault at one block)."""
        raw = self._call(
            self._vault,
            _address("vault", vault),
            "vaultBalance2",
            _address("owner", owner),
            _address("token", token),
            _bytes32("vault_id", vault_id),
            block=block,
        )
        try:
            return RainFloat.unpack(bytes(raw))
        except FloatConversionError as exc:
            raise InvalidArgument(exc.field, exc.value, exc.rule) from None

    def vault_balance(self, *, vault: str, owner: str, token: str, vault_id: bytes) -> int:
        """The vault's balance in whole token units: what a withdrawal can pay (trades can leave
        a Float finer than the token's decimals; the order book pays whole units only)."""
        balance = self.vault_balance_float(vault=vault, owner=owner, token=token, vault_id=vault_id)
        try:
            return float_to_units_floor(
                balance, self.erc20_decimals(token=token), field="vault balance"
            )
        except FloatConversionError as exc:
            raise InvalidArgument(exc.field, exc.value, exc.rule) from None

    def _vault_amount(self, field: str, units: int, token: str) -> bytes:
        """`units` of `token` as the packed Float the order book takes (coefficient `units`,
        exponent minus the token's decimals as the chain reports them)."""
        units = _units(field, units, positive=True)
        try:
            return float_from_units(units, self.erc20_decimals(token=token)).pack()
        except FloatConversionError as exc:
            raise InvalidArgument(field, units, exc.rule) from None

    def cctp_nonce_used(self, *, message_transmitter: str, nonce: str) -> bool:
        """True once `receiveMessage` consumed this nonce on this chain (already minted)."""
        raw = bytes.fromhex(nonce.removeprefix("0x"))
        return (
            int(
                self._call(
                    self._transmitter,
                    _address("message_transmitter", message_transmitter),
                    "usedNonces",
                    _bytes32("nonce", raw),
                )
            )
            != 0
        )

    def receipt(self, tx_hash: str) -> Receipt | None:
        """The receipt, or None while the transaction is unknown or not yet mined."""
        try:
            raw = self._w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return None
        except Exception as exc:
            raise ChainRpcError(
                self.name, "eth_getTransactionReceipt", self._redact(f"{type(exc).__name__}: {exc}")
            ) from None
        if raw is None:
            return None
        return receipt_from_web3(raw)

    def transaction_known(self, tx_hash: str) -> bool:
        """True if the node has the transaction (pending or mined)."""
        try:
            return self._w3.eth.get_transaction(tx_hash) is not None  # type: ignore[arg-type]
        except TransactionNotFound:
            return False
        except Exception as exc:
            raise ChainRpcError(
                self.name,
                "eth_getTransactionByHash",
                self._redact(f"{type(exc).__name__}: {exc}"),
            ) from None

    def erc20_transfers(
        self,
        *,
        token: str,
        from_block: int,
        to_block: int | None = None,
        to: str | None = None,
        from_: str | None = None,
    ) -> list[Erc20Transfer]:
        """`Transfer` logs of `token` in [from_block, to_block] (latest if None), oldest first.

        Used to verify an arrival and, on resume, to find an earlier send before sending again.
        """
        topics: list[Any] = [
            TRANSFER_TOPIC,
            _topic_address(_address("from_", from_)) if from_ is not None else None,
            _topic_address(_address("to", to)) if to is not None else None,
        ]
        while topics and topics[-1] is None:
            topics.pop()
        params: dict[str, Any] = {
            "address": _address("token", token),
            "fromBlock": from_block,
            "toBlock": to_block if to_block is not None else "latest",
            "topics": topics,
        }
        raw_logs = self._rpc("eth_getLogs", self._w3.eth.get_logs, params)
        transfers = []
        for entry in raw_logs:
            log = Log(
                address=to_checksum_address(entry["address"]),
                topics=tuple(_hex(bytes(t)) for t in entry["topics"]),
                data=bytes(entry["data"]),
                log_index=int(entry["logIndex"]),
                block_number=int(entry["blockNumber"]),
                tx_hash=_hex(bytes(entry["transactionHash"])),
            )
            transfer = _transfer_from_log(log)
            if transfer is not None:
                transfers.append(transfer)
        transfers.sort(key=lambda t: (t.block_number, t.log_index))
        return transfers

    # -- writes: build (sign) ---------------------------------------------------------------

    def _build(
        self,
        *,
        contract: Any,
        address: str,
        function: str,
        args: Sequence[Any],
        nonce: int | None,
        gas: int | None,
    ) -> SignedTx:
        data = contract.encode_abi(function, args=list(args))
        tx: dict[str, Any] = {
            "from": self._account.address,
            "to": address,
            "data": data,
            "value": 0,
            "chainId": self.chain_id,
        }
        if gas is None:
            try:
                estimate = self._rpc(f"eth_estimateGas {function}", self._w3.eth.estimate_gas, tx)
            except ContractLogicError as exc:
                raise PreflightReverted(self.name, function, self._reason(exc)) from None
            gas = int(estimate) * (100 + GAS_MARGIN_PERCENT) // 100
        latest = self._rpc("eth_getBlockByNumber", self._w3.eth.get_block, "latest")
        base_fee = int(latest.get("baseFeePerGas") or 0)
        priority = int(self._rpc("eth_maxPriorityFeePerGas", lambda: self._w3.eth.max_priority_fee))
        tx.update(
            {
                "gas": gas,
                "nonce": self.pending_nonce() if nonce is None else nonce,
                "maxPriorityFeePerGas": priority,
                "maxFeePerGas": 2 * base_fee + priority,
                "type": 2,
            }
        )
        del tx["from"]
        signed = self._account.sign_transaction(tx)
        result = SignedTx(
            raw=bytes(signed.raw_transaction),
            tx_hash=_hex(bytes(signed.hash)),
            nonce=int(tx["nonce"]),
            chain_id=int(tx["chainId"]),
        )
        logger.info(
            "%s: signed %s tx %s nonce %d", self.name, function, result.tx_hash, result.nonce
        )
        return result

    def _fees(self) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas) as `_build` picks them today."""
        latest = self._rpc("eth_getBlockByNumber", self._w3.eth.get_block, "latest")
        base_fee = int(latest.get("baseFeePerGas") or 0)
        priority = int(self._rpc("eth_maxPriorityFeePerGas", lambda: self._w3.eth.max_priority_fee))
        return 2 * base_fee + priority, priority

    def _sign_fields(self, tx: dict[str, Any], what: str) -> SignedTx:
        signed = self._account.sign_transaction(tx)
        result = SignedTx(
            raw=bytes(signed.raw_transaction),
            tx_hash=_hex(bytes(signed.hash)),
            nonce=int(tx["nonce"]),
            chain_id=int(tx["chainId"]),
        )
        logger.info("%s: signed %s tx %s nonce %d", self.name, what, result.tx_hash, result.nonce)
        return result

    def _bumped_fees(self, fields: dict[str, Any], bump_percent: float) -> tuple[int, int]:
        """Fees for a transaction replacing `fields` (a decoded signed tx): at least
        `bump_percent` above the old ones, and never below what `_build` would pick today."""
        if bump_percent < 10:
            raise InvalidArgument("bump_percent", bump_percent, "must be >= 10 (node rule)")
        factor = 1000 + int(bump_percent * 10)
        old_fee = int(fields["maxFeePerGas"])
        old_tip = int(fields["maxPriorityFeePerGas"])
        fee_now, tip_now = self._fees()
        tip = max(-(-old_tip * factor // 1000), old_tip + 1, tip_now)
        fee = max(-(-old_fee * factor // 1000), old_fee + 1, fee_now, tip)
        return fee, tip

    def build_replacement(
        self, raw_tx: bytes, *, bump_percent: float = REPLACEMENT_BUMP_PERCENT
    ) -> SignedTx:
        """The same transaction (nonce, recipient, value, data, gas) re-signed with fees raised
        by `bump_percent` over its own (and at least today's), so a node accepts it in place
        of the pending one. Only our own EIP-1559 transactions on this chain."""
        fields = signed_fields(raw_tx)
        self._check_ours(fields, raw_tx)
        fee, tip = self._bumped_fees(fields, bump_percent)
        tx = {
            "to": to_checksum_address(bytes(fields["to"])),
            "value": int(fields["value"]),
            "data": bytes(fields["data"]),
            "gas": int(fields["gas"]),
            "nonce": int(fields["nonce"]),
            "chainId": int(fields["chainId"]),
            "accessList": fields.get("accessList") or (),
            "maxFeePerGas": fee,
            "maxPriorityFeePerGas": tip,
            "type": 2,
        }
        return self._sign_fields(tx, "replacement")

    def build_self_transfer(
        self,
        *,
        nonce: int,
        replaces: bytes | None = None,
        bump_percent: float = REPLACEMENT_BUMP_PERCENT,
    ) -> SignedTx:
        """A zero-value transfer to ourselves at `nonce`: it uses up a nonce whose transaction
        we will never send (so later ones are not stuck behind a gap). With `replaces` (the
        signed transaction it stands in for) its fees outbid that one's."""
        if isinstance(nonce, bool) or not isinstance(nonce, int) or nonce < 0:
            raise InvalidArgument("nonce", nonce, "must be an int >= 0")
        if replaces is not None:
            fields = signed_fields(replaces)
            self._check_ours(fields, replaces)
            if int(fields["nonce"]) != nonce:
                raise InvalidArgument("replaces", fields["nonce"], f"must have nonce {nonce}")
            fee, tip = self._bumped_fees(fields, bump_percent)
        else:
            fee, tip = self._fees()
        tx = {
            "to": self._account.address,
            "value": 0,
            "data": b"",
            "gas": SELF_TRANSFER_GAS,
            "nonce": nonce,
            "chainId": self.chain_id,
            "maxFeePerGas": fee,
            "maxPriorityFeePerGas": tip,
            "type": 2,
        }
        return self._sign_fields(tx, "self-transfer")

    def _check_ours(self, fields: dict[str, Any], raw_tx: bytes) -> None:
        if int(fields.get("type", 0)) != 2:
            raise InvalidArgument("raw_tx", fields.get("type"), "must be an EIP-1559 (type 2) tx")
        if int(fields["chainId"]) != self.chain_id:
            raise InvalidArgument(
                "raw_tx.chainId", fields["chainId"], f"must be {self.name} chain {self.chain_id}"
            )
        sender = Account.recover_transaction(raw_tx)
        if sender != self._account.address:
            raise InvalidArgument("raw_tx.from", sender, f"must be our signer {self.address}")

    def build_erc20_transfer(
        self,
        *,
        token: str,
        to: str,
        amount_units: int,
        nonce: int | None = None,
        gas: int | None = None,
    ) -> SignedTx:
        return self._build(
            contract=self._erc20,
            address=_address("token", token),
            function="transfer",
            args=[_address("to", to), _units("amount_units", amount_units, positive=True)],
            nonce=nonce,
            gas=gas,
        )

    def build_erc20_approve(
        self,
        *,
        token: str,
        spender: str,
        amount_units: int,
        nonce: int | None = None,
        gas: int | None = None,
    ) -> SignedTx:
        return self._build(
            contract=self._erc20,
            address=_address("token", token),
            function="approve",
            args=[
                _address("spender", spender),
                _units("amount_units", amount_units, positive=False),
            ],
            nonce=nonce,
            gas=gas,
        )

    def build_deposit_for_burn(
        self,
        *,
        token_messenger: str,
        burn_token: str,
        amount_units: int,
        destination_domain: int,
        mint_recipient: str,
        max_fee_units: int,
        min_finality_threshold: int = cctp.FINALITY_THRESHOLD_FAST,
        destination_caller: bytes = ZERO_BYTES32,
        nonce: int | None = None,
        gas: int | None = None,
    ) -> SignedTx:
        amount_units = _units("amount_units", amount_units, positive=True)
        max_fee_units = _units("max_fee_units", max_fee_units, positive=False)
        if max_fee_units >= amount_units:
            raise InvalidArgument(
                "max_fee_units", max_fee_units, f"must be less than amount_units {amount_units}"
            )
        return self._build(
            contract=self._messenger,
            address=_address("token_messenger", token_messenger),
            function="depositForBurn",
            args=[
                amount_units,
                destination_domain,
                cctp.bytes32(_address("mint_recipient", mint_recipient)),
                _address("burn_token", burn_token),
                _bytes32("destination_caller", destination_caller),
                max_fee_units,
                min_finality_threshold,
            ],
            nonce=nonce,
            gas=gas,
        )

    def build_receive_message(
        self,
        *,
        message_transmitter: str,
        message: bytes,
        attestation: bytes,
        nonce: int | None = None,
        gas: int | None = None,
    ) -> SignedTx:
        return self._build(
            contract=self._transmitter,
            address=_address("message_transmitter", message_transmitter),
            function="receiveMessage",
            args=[bytes(message), bytes(attestation)],
            nonce=nonce,
            gas=gas,
        )

    def build_vault_deposit(
        self,
        *,
        vault: str,
        token: str,
        vault_id: bytes,
        amount_units: int,
        nonce: int | None = None,
        gas: int | None = None,
    ) -> SignedTx:
        return self._build(
            contract=self._vault,
            address=_address("vault", vault),
            function="deposit4",
            args=[
                _address("token", token),
                _bytes32("vault_id", vault_id),
                self._vault_amount("amount_units", amount_units, token),
                [],
            ],
            nonce=nonce,
            gas=gas,
        )

    def build_vault_withdraw(
        self,
        *,
        vault: str,
        token: str,
        vault_id: bytes,
        target_amount_units: int,
        nonce: int | None = None,
        gas: int | None = None,
    ) -> SignedTx:
        return self._build(
            contract=self._vault,
            address=_address("vault", vault),
            function="withdraw4",
            args=[
                _address("token", token),
                _bytes32("vault_id", vault_id),
                self._vault_amount("target_amount_units", target_amount_units, token),
                [],
            ],
            nonce=nonce,
            gas=gas,
        )

    # -- writes: send -----------------------------------------------------------------------

    def broadcast(self, signed: SignedTx) -> str:
        """Send the signed bytes; idempotent. Returns the transaction hash.

        A node that already has the transaction ("already known") or has mined it ("nonce too
        low" with a receipt or a known transaction for this hash) counts as success.
        """
        if signed.chain_id != self.chain_id:
            raise InvalidArgument(
                "signed.chain_id", signed.chain_id, f"must match {self.name} chain {self.chain_id}"
            )
        try:
            self._w3.eth.send_raw_transaction(signed.raw)
        except Web3RPCError as exc:
            text = self._redact(str(exc))
            lowered = text.lower()
            if any(marker in lowered for marker in _ALREADY_KNOWN_MARKERS):
                logger.info("%s: tx %s already known to the node", self.name, signed.tx_hash)
                return signed.tx_hash
            if any(marker in lowered for marker in _NONCE_TOO_LOW_MARKERS):
                if self.transaction_known(signed.tx_hash):
                    logger.info("%s: tx %s already mined", self.name, signed.tx_hash)
                    return signed.tx_hash
                raise NonceAlreadyUsed(signed.tx_hash, text) from None
            raise BroadcastRejected(signed.tx_hash, text) from None
        except Exception as exc:
            raise ChainRpcError(
                self.name, "eth_sendRawTransaction", self._redact(f"{type(exc).__name__}: {exc}")
            ) from None
        logger.info("%s: broadcast tx %s nonce %d", self.name, signed.tx_hash, signed.nonce)
        return signed.tx_hash

    def revert_reason(self, tx_hash: str) -> str:
        """Replay a mined transaction with eth_call on its parent block to recover the reason."""
        try:
            tx = self._w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
            call = {
                "from": tx["from"],
                "to": tx["to"],
                "data": tx["input"],
                "value": tx["value"],
                "gas": tx["gas"],
            }
            self._w3.eth.call(call, int(tx["blockNumber"]) - 1)  # type: ignore[arg-type]
        except ContractLogicError as exc:
            return self._reason(exc) or "reverted without a reason"
        except Exception as exc:
            return self._redact(f"reason unavailable ({type(exc).__name__})")
        return "reason unavailable (replay succeeded; likely out of gas or state changed)"

    def require_success(self, receipt: Receipt) -> Receipt:
        if not receipt.succeeded:
            raise TransactionReverted(receipt.tx_hash, self.revert_reason(receipt.tx_hash))
        return receipt

    def wait_for_receipt(
        self, tx_hash: str, *, timeout_s: float = 120.0, poll_s: float = 1.0
    ) -> Receipt:
        """Poll until mined; raises `TransactionReverted` for status 0, `ReceiptTimeout`."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.receipt(tx_hash)
            if found is not None:
                return self.require_success(found)
            if time.monotonic() >= deadline:
                raise ReceiptTimeout(tx_hash, timeout_s)
            time.sleep(poll_s)

    def send(self, signed: SignedTx, *, timeout_s: float = 120.0, poll_s: float = 0.5) -> Receipt:
        """broadcast + wait_for_receipt, for callers that do not store the signed bytes first."""
        self.broadcast(signed)
        return self.wait_for_receipt(signed.tx_hash, timeout_s=timeout_s, poll_s=poll_s)

    def decode_message_sent(self, receipt: Receipt) -> CctpBurn:
        return decode_message_sent(receipt)


def is_already_received(error: BaseException) -> bool:
    """True when a receiveMessage reverted because the message was already received."""
    return isinstance(error, ContractReverted) and NONCE_ALREADY_USED_REASON in error.reason
