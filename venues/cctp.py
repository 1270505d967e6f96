"""Circle CCTP V2 message layout helpers (pure: no network, no settings).

Message (V2):
    version(4) sourceDomain(4) destinationDomain(4) nonce(32) sender(32) recipient(32)
    destinationCaller(32) minFinalityThreshold(4) finalityThresholdExecuted(4)   = 148 bytes
followed by the burn-message body:
    version(4) burnToken(32) mintRecipient(32) amount(32) messageSender(32) maxFee(32)
    feeExecuted(32) expirationBlock(32) hookData(...)                               >= 228 bytes

Circle's attester (Iris) fills in the nonce, `finalityThresholdExecuted` and `feeExecuted`
before signing keccak256(message); `with_attested_fields` does the same for the simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from eth_utils import keccak, to_checksum_address

DOMAIN_ETHEREUM = 0
DOMAIN_BASE = 6
FINALITY_THRESHOLD_FAST = 1000
FINALITY_THRESHOLD_STANDARD = 2000
MESSAGE_VERSION = 1
BURN_MESSAGE_VERSION = 1
HEADER_LENGTH = 148
BURN_BODY_MIN_LENGTH = 228
ZERO_BYTES32 = b"\x00" * 32

# Header offsets
_SOURCE_DOMAIN = slice(4, 8)
_DESTINATION_DOMAIN = slice(8, 12)
_NONCE = slice(12, 44)
_SENDER = slice(44, 76)
_RECIPIENT = slice(76, 108)
_DESTINATION_CALLER = slice(108, 140)
_MIN_FINALITY = slice(140, 144)
_FINALITY_EXECUTED = slice(144, 148)
# Body offsets (relative to the body start)
_BODY_BURN_TOKEN = slice(4, 36)
_BODY_MINT_RECIPIENT = slice(36, 68)
_BODY_AMOUNT = slice(68, 100)
_BODY_MESSAGE_SENDER = slice(100, 132)
_BODY_MAX_FEE = slice(132, 164)
_BODY_FEE_EXECUTED = slice(164, 196)
_BODY_EXPIRATION = slice(196, 228)


class CctpMessageError(ValueError):
    """A CCTP message or argument breaks a layout rule; names the field, value and rule."""

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field}={value!r}: {rule}")


@dataclass(frozen=True)
class BurnMessage:
    version: int
    burn_token: str  # checksummed address on the source chain
    mint_recipient: str  # checksummed address on the destination chain
    amount_units: int
    message_sender: str
    max_fee_units: int
    fee_executed_units: int
    expiration_block: int
    hook_data: bytes


@dataclass(frozen=True)
class CctpMessage:
    version: int
    source_domain: int
    destination_domain: int
    nonce: str  # 0x-prefixed 32-byte hex
    sender: str  # bytes32 as 0x hex (the source TokenMessenger)
    recipient: str  # bytes32 as 0x hex (the destination TokenMessenger)
    destination_caller: str  # bytes32 as 0x hex; zero means anyone may relay
    min_finality_threshold: int
    finality_threshold_executed: int
    body: BurnMessage


def _uint(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _address_of(word: bytes) -> str:
    return to_checksum_address(word[12:])


def _as_bytes(message: bytes | str) -> bytes:
    if isinstance(message, str):
        text = message[2:] if message.startswith(("0x", "0X")) else message
        try:
            return bytes.fromhex(text)
        except ValueError as exc:
            raise CctpMessageError("message", message[:20], "must be hex") from exc
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    raise CctpMessageError("message", type(message).__name__, "must be bytes or a hex string")


def parse_message(message: bytes | str) -> CctpMessage:
    """Parse a V2 message carrying a burn-message body."""
    raw = _as_bytes(message)
    if len(raw) < HEADER_LENGTH + BURN_BODY_MIN_LENGTH:
        raise CctpMessageError(
            "message",
            f"{len(raw)} bytes",
            f"must be at least {HEADER_LENGTH + BURN_BODY_MIN_LENGTH} bytes (header + burn body)",
        )
    body = raw[HEADER_LENGTH:]
    return CctpMessage(
        version=_uint(raw[0:4]),
        source_domain=_uint(raw[_SOURCE_DOMAIN]),
        destination_domain=_uint(raw[_DESTINATION_DOMAIN]),
        nonce="0x" + raw[_NONCE].hex(),
        sender="0x" + raw[_SENDER].hex(),
        recipient="0x" + raw[_RECIPIENT].hex(),
        destination_caller="0x" + raw[_DESTINATION_CALLER].hex(),
        min_finality_threshold=_uint(raw[_MIN_FINALITY]),
        finality_threshold_executed=_uint(raw[_FINALITY_EXECUTED]),
        body=BurnMessage(
            version=_uint(body[0:4]),
            burn_token=_address_of(body[_BODY_BURN_TOKEN]),
            mint_recipient=_address_of(body[_BODY_MINT_RECIPIENT]),
            amount_units=_uint(body[_BODY_AMOUNT]),
            message_sender=_address_of(body[_BODY_MESSAGE_SENDER]),
            max_fee_units=_uint(body[_BODY_MAX_FEE]),
            fee_executed_units=_uint(body[_BODY_FEE_EXECUTED]),
            expiration_block=_uint(body[_BODY_EXPIRATION]),
            hook_data=body[BURN_BODY_MIN_LENGTH:],
        ),
    )


def message_hash(message: bytes | str) -> str:
    """keccak256(message) as 0x hex: the key Iris V1 attestations are looked up by."""
    return "0x" + keccak(_as_bytes(message)).hex()


def nonce_u64(nonce: str) -> int:
    """The last 8 bytes of the 32-byte nonce as a big-endian integer (the legacy `cctp_nonce`)."""
    raw = _as_bytes(nonce)
    if len(raw) != 32:
        raise CctpMessageError("nonce", nonce, "must be 32 bytes")
    return _uint(raw[24:])


def max_fee(amount_units: int, fee_bps: Decimal) -> int:
    """ceil(amount × fee_bps / 10000) in exact integer arithmetic (fee_bps may be fractional)."""
    if isinstance(amount_units, bool) or not isinstance(amount_units, int) or amount_units < 0:
        raise CctpMessageError("amount_units", amount_units, "must be a non-negative int")
    if not isinstance(fee_bps, Decimal) or not fee_bps.is_finite() or fee_bps < 0:
        raise CctpMessageError("fee_bps", fee_bps, "must be a finite non-negative Decimal")
    numerator, denominator = fee_bps.as_integer_ratio()
    return -(-amount_units * numerator // (denominator * 10000))


def bytes32(address: str) -> bytes:
    """A 20-byte address left-padded to 32 bytes (CCTP `mintRecipient`, `sender`, ...)."""
    raw = _as_bytes(address)
    if len(raw) != 20:
        raise CctpMessageError("address", address, "must be a 20-byte hex address")
    return b"\x00" * 12 + raw


def with_attested_fields(
    message: bytes | str,
    *,
    fee_executed_units: int,
    finality_threshold_executed: int = FINALITY_THRESHOLD_FAST,
) -> bytes:
    """The message as the attester signs it: `finalityThresholdExecuted` and `feeExecuted` set.

    `fee_executed_units` must not exceed the message's `maxFee` (Circle never charges more).
    """
    raw = bytearray(_as_bytes(message))
    parsed = parse_message(bytes(raw))
    if not 0 <= fee_executed_units <= parsed.body.max_fee_units:
        raise CctpMessageError(
            "fee_executed_units",
            fee_executed_units,
            f"must be between 0 and maxFee {parsed.body.max_fee_units}",
        )
    raw[_FINALITY_EXECUTED] = finality_threshold_executed.to_bytes(4, "big")
    start = HEADER_LENGTH + _BODY_FEE_EXECUTED.start
    raw[start : start + 32] = fee_executed_units.to_bytes(32, "big")
    return bytes(raw)
