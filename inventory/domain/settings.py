"""RebalancingSettings aggregate: audited operator changes (aggregate id = scope).

Pure. The scope is "global" (switches, thresholds, minimums and caps) or a base symbol (that
asset's switch, registration and threshold overrides). The current values live in database
rows; every change is also a `SettingChanged{scope, setting, old, new, changed_by}` event,
appended in the same transaction, so the event log is the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from inventory.domain import events as ev
from inventory.domain.aggregate import AggregateSpec
from inventory.domain.inventory import ImbalanceThreshold
from inventory.domain.lifecycle import Lifecycle, lifecycle_apply
from inventory.domain.values import (
    SHARE_DECIMALS,
    USDC_DECIMALS,
    USDC_POOL,
    InvalidValue,
    validate_quantity,
    validate_symbol,
)

GLOBAL_SCOPE = "global"

SettingValue = Decimal | bool | str | None
# Amounts of USDC (6 decimals); every other decimal setting is shares or a ratio (18).
USDC_AMOUNT_SETTINGS = frozenset({"usdc_minimum", "usdc_cap"})


def _decimal(setting: str, raw: Any) -> Decimal:
    if isinstance(raw, bool | float):
        raise InvalidValue(setting, raw, "must be a decimal given as str, int or Decimal")
    try:
        number = Decimal(str(raw).strip()) if not isinstance(raw, Decimal) else raw
    except InvalidOperation:
        raise InvalidValue(setting, raw, "not a decimal number") from None
    if not number.is_finite():
        raise InvalidValue(setting, raw, "must be finite")
    # Within the domain's bounds (at most 1e15, the unit's decimals): a value every later
    # computation on it stays exact with.
    decimals = USDC_DECIMALS if setting in USDC_AMOUNT_SETTINGS else SHARE_DECIMALS
    try:
        return validate_quantity(
            setting, number, allow_zero=True, allow_negative=True, decimals=decimals
        )
    except InvalidValue as error:
        raise InvalidValue(setting, raw, error.rule) from None


def parse_ratio(setting: str, raw: Any) -> Decimal:
    number = _decimal(setting, raw)
    if not Decimal(0) <= number <= Decimal(1):
        raise InvalidValue(setting, raw, "must be between 0 and 1 inclusive")
    return number


def parse_non_negative(setting: str, raw: Any) -> Decimal:
    number = _decimal(setting, raw)
    if number < 0:
        raise InvalidValue(setting, raw, "must be >= 0")
    return number


def parse_cap(setting: str, raw: Any) -> Decimal | None:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    number = _decimal(setting, raw)
    if number <= 0:
        raise InvalidValue(setting, raw, "must be > 0, or empty for no cap")
    return number


def parse_optional_ratio(setting: str, raw: Any) -> Decimal | None:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    return parse_ratio(setting, raw)


def parse_optional_non_negative(setting: str, raw: Any) -> Decimal | None:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    return parse_non_negative(setting, raw)


def parse_bool(setting: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(raw, str) and raw.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise InvalidValue(setting, raw, "must be true or false")


Parser = Callable[[str, Any], SettingValue]

GLOBAL_SETTINGS: Mapping[str, Parser] = {
    "paused": parse_bool,
    "equity_target_ratio": parse_ratio,
    "equity_deviation": parse_non_negative,
    "usdc_target_ratio": parse_ratio,
    "usdc_deviation": parse_non_negative,
    "equity_minimum_shares": parse_non_negative,
    "usdc_minimum": parse_non_negative,
    "equity_cap_shares": parse_cap,
    "usdc_cap": parse_cap,
}

ASSET_SETTINGS: Mapping[str, Parser] = {
    "rebalancing_enabled": parse_bool,
    "target_ratio": parse_optional_ratio,
    "deviation": parse_optional_non_negative,
}

# Registration of an asset is audited under the asset's scope with this setting name.
ASSET_REGISTERED = "asset"
# A pool's circuit breaker (failures do not loop) is audited under the global scope as
# `circuit_breaker:<pool>` with the values "open" and "closed"; the system opens it, an
# operator closes it. Like registration it has no settings-row value to parse.
CIRCUIT_BREAKER_PREFIX = "circuit_breaker:"
BREAKER_OPEN = "open"
BREAKER_CLOSED = "closed"


def circuit_breaker_setting(pool: str) -> str:
    return f"{CIRCUIT_BREAKER_PREFIX}{pool}"


def is_audit_only(setting: str) -> bool:
    """Settings recorded for the audit trail only (no value in a settings row)."""
    return setting == ASSET_REGISTERED or (
        setting.startswith(CIRCUIT_BREAKER_PREFIX) and len(setting) > len(CIRCUIT_BREAKER_PREFIX)
    )


def validate_scope(scope: str) -> str:
    if scope == GLOBAL_SCOPE:
        return scope
    return validate_symbol(scope)


def parse_setting(scope: str, setting: str, raw: Any) -> SettingValue:
    """Validate one setting value for a scope; raises `InvalidValue` naming field and rule."""
    validate_scope(scope)
    table = GLOBAL_SETTINGS if scope == GLOBAL_SCOPE else ASSET_SETTINGS
    parser = table.get(setting)
    if parser is None:
        raise InvalidValue("setting", setting, f"expected one of {', '.join(sorted(table))}")
    return parser(setting, raw)


def format_setting(value: SettingValue) -> str | None:
    """The audit text of a value: None stays None, booleans are "true"/"false"."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class SettingsState:
    # setting -> newest audited value text
    values: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class ChangeSetting:
    scope: str
    setting: str
    old_value: str | None
    new_value: str | None
    changed_by: str


def _advance(state: SettingsState, event: ev.SettingChanged) -> SettingsState:
    return SettingsState(values={**state.values, event.setting: event.new_value})


def apply(state: Lifecycle[SettingsState], event: Any) -> Lifecycle[SettingsState]:
    return lifecycle_apply(
        state,
        event,
        apply_transition=_advance,
        from_event=lambda e: _advance(SettingsState(), e),
    )


def handle(
    state: Lifecycle[SettingsState], command: ChangeSetting, now: datetime
) -> list[ev.SettingChanged]:
    """One audited change; nothing when the value does not change."""
    state.current()
    validate_scope(command.scope)
    if not isinstance(command.changed_by, str) or not command.changed_by.strip():
        raise InvalidValue("changed_by", command.changed_by, "must name who made the change")
    if not is_audit_only(command.setting):
        parse_setting(command.scope, command.setting, command.new_value)
    elif command.setting.startswith(CIRCUIT_BREAKER_PREFIX) and (
        command.scope != GLOBAL_SCOPE or command.new_value not in (BREAKER_OPEN, BREAKER_CLOSED)
    ):
        raise InvalidValue(
            command.setting,
            command.new_value,
            f"a circuit breaker is {BREAKER_OPEN!r} or {BREAKER_CLOSED!r}, in the global scope",
        )
    if command.old_value == command.new_value:
        return []
    return [
        ev.SettingChanged(
            scope=command.scope,
            setting=command.setting,
            old_value=command.old_value,
            new_value=command.new_value,
            changed_by=command.changed_by,
            changed_at=now,
        )
    ]


SPEC = AggregateSpec(
    aggregate_type=ev.SETTINGS, apply=apply, handle=handle, event_classes=(ev.SettingChanged,)
)


# --- the settings the trigger reads (the rows' values, frozen at one moment) ---------------


@dataclass(frozen=True)
class AssetOverride:
    rebalancing_enabled: bool
    target_ratio: Decimal | None
    deviation: Decimal | None
    # The token's decimals (read from its contract at registration).
    decimals: int = SHARE_DECIMALS


@dataclass(frozen=True)
class RebalancingSettings:
    """The settings the trigger reads, frozen at one moment.

    `enabled` is the deployment switch (environment, REBALANCING_ENABLED); `paused` the
    operator's switch in the database. Rebalancing runs when `active`.
    """

    enabled: bool
    paused: bool
    equity_threshold: ImbalanceThreshold
    usdc_threshold: ImbalanceThreshold
    equity_minimum_shares: Decimal
    usdc_minimum: Decimal
    equity_cap_shares: Decimal | None
    usdc_cap: Decimal | None
    assets: dict[str, AssetOverride]

    @property
    def active(self) -> bool:
        return self.enabled and not self.paused

    def asset_enabled(self, base_symbol: str) -> bool:
        """Only registered assets with rebalancing enabled are rebalanced (#840)."""
        asset = self.assets.get(base_symbol)
        return asset is not None and asset.rebalancing_enabled

    def decimals_for(self, pool_key: str) -> int:
        """Onchain decimals of a pool's amounts: USDC's, else the asset's token's."""
        if pool_key == USDC_POOL:
            return USDC_DECIMALS
        asset = self.assets.get(pool_key)
        return SHARE_DECIMALS if asset is None else asset.decimals

    def threshold_for(self, pool_key: str) -> ImbalanceThreshold:
        """USDC -> the USDC threshold; an equity -> its overrides over the global one."""
        if pool_key == USDC_POOL:
            return self.usdc_threshold
        asset = self.assets.get(pool_key)
        if asset is None or (asset.target_ratio is None and asset.deviation is None):
            return self.equity_threshold
        return ImbalanceThreshold(
            target=(
                asset.target_ratio
                if asset.target_ratio is not None
                else self.equity_threshold.target
            ),
            deviation=(
                asset.deviation if asset.deviation is not None else self.equity_threshold.deviation
            ),
        )
