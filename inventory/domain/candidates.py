"""Candidate settings: a name and overrides of the rebalancing settings in force. Pure.

A candidate is written `NAME:key=value,key=value` (the backtest's `--candidate`, the live
challenger's `REBALANCING_CHALLENGERS`). A key is a global rebalancing setting's name in
lower case (`equity_deviation=0.3`, `usdc_cap=` for no cap), or one pool's as
`POOL.setting`: for an equity pool its band (`AAPL.equity_target_ratio`,
`AAPL.equity_deviation`, also written `AAPL.target_ratio`, `AAPL.deviation`) and its switch
(`AAPL.rebalancing_enabled`); for USDC any `usdc_*` setting (`USDC.usdc_deviation`, the same
as `usdc_deviation`). Values go through the settings' own parsers
(`inventory.domain.settings`); bad input raises `InvalidValue` naming the field, the value and
why.

`candidate_settings(base, candidate)` gives the effective settings: a candidate's value wins
over the base's at every level (the candidate's pool value, then its global value, then the
base's asset override, then the base's global value), so `equity_deviation=0.3` is the band
of every equity pool the candidate does not name, whatever overrides the base had.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

from inventory.domain.inventory import ImbalanceThreshold
from inventory.domain.settings import (
    GLOBAL_SETTINGS,
    AssetOverride,
    RebalancingSettings,
    SettingValue,
    parse_bool,
    parse_ratio,
)
from inventory.domain.values import USDC_POOL, InvalidValue, validate_symbol

AS_RUN = "as-run"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Per equity pool: the written key -> the asset override's field.
EQUITY_POOL_SETTINGS: Mapping[str, str] = {
    "equity_target_ratio": "target_ratio",
    "target_ratio": "target_ratio",
    "equity_deviation": "deviation",
    "deviation": "deviation",
    "rebalancing_enabled": "rebalancing_enabled",
}
USDC_POOL_SETTINGS = tuple(sorted(name for name in GLOBAL_SETTINGS if name.startswith("usdc_")))


@dataclass(frozen=True)
class Candidate:
    """`overrides`: global setting -> value; `pools`: equity pool -> asset field -> value
    (`target_ratio`, `deviation`, `rebalancing_enabled`). USDC's are global settings."""

    name: str
    overrides: Mapping[str, SettingValue] = field(default_factory=dict)
    pools: Mapping[str, Mapping[str, SettingValue]] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        """The candidate written back as `NAME:key=value,...` (parses to an equal one)."""
        parts = [f"{key}={_text(value)}" for key, value in sorted(self.overrides.items())]
        for pool, values in sorted(self.pools.items()):
            parts += [f"{pool}.{key}={_text(value)}" for key, value in sorted(values.items())]
        return f"{self.name}:{','.join(parts)}"


def as_run() -> Candidate:
    """The settings in force, unchanged."""
    return Candidate(name=AS_RUN)


def _text(value: SettingValue) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def validate_candidate_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidValue(
            "candidate name",
            name,
            "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
    if name == AS_RUN:
        raise InvalidValue("candidate name", name, f"{AS_RUN!r} is the settings in force")
    return name


def parse_candidate(text: object) -> Candidate:
    """`NAME:key=value,key=value` -> Candidate; raises `InvalidValue` (field, value, why)."""
    if not isinstance(text, str):
        raise InvalidValue("candidate", text, "must be text NAME:key=value,...")
    name, colon, body = text.strip().partition(":")
    if not colon:
        raise InvalidValue("candidate", text, "expected NAME:key=value,key=value")
    name = validate_candidate_name(name.strip())
    overrides: dict[str, SettingValue] = {}
    pools: dict[str, dict[str, SettingValue]] = {}
    seen: set[str] = set()
    items = [item.strip() for item in body.split(",")]
    if items == [""]:
        raise InvalidValue("candidate", text, "overrides no setting (expected key=value)")
    for item in items:
        key, equals, raw = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise InvalidValue("candidate", item, "expected key=value")
        if key in seen:
            raise InvalidValue(key, raw, "given twice")
        seen.add(key)
        raw = raw.strip()
        pool, dot, setting = key.rpartition(".")
        if not dot:
            if key in overrides:
                raise InvalidValue(key, raw, f"given twice (also as USDC.{key})")
            overrides[key] = _parse_global(key, key, raw)
        elif pool == USDC_POOL:
            if setting not in USDC_POOL_SETTINGS:
                raise InvalidValue(
                    key, raw, f"for USDC expected one of {', '.join(USDC_POOL_SETTINGS)}"
                )
            if setting in overrides:
                raise InvalidValue(key, raw, f"given twice (also as {setting})")
            overrides[setting] = _parse_global(key, setting, raw)
        else:
            _parse_pool(pools, key, pool, setting, raw)
    return Candidate(name=name, overrides=overrides, pools=pools)


def _parse_global(key: str, setting: str, raw: str) -> SettingValue:
    parser = GLOBAL_SETTINGS.get(setting)
    if parser is None:
        raise InvalidValue(
            key,
            raw,
            f"not a rebalancing setting: expected one of {', '.join(sorted(GLOBAL_SETTINGS))}, "
            "or POOL.setting",
        )
    try:
        return parser(setting, raw)
    except InvalidValue as error:
        raise InvalidValue(key, raw, error.rule) from None


def _parse_pool(
    pools: dict[str, dict[str, SettingValue]], key: str, pool: str, setting: str, raw: str
) -> None:
    try:
        symbol = validate_symbol(pool)
    except InvalidValue as error:
        raise InvalidValue(key, raw, f"pool {pool!r}: {error.rule}") from None
    target = EQUITY_POOL_SETTINGS.get(setting)
    if target is None:
        raise InvalidValue(
            key, raw, f"for an equity pool expected one of {', '.join(EQUITY_POOL_SETTINGS)}"
        )
    values = pools.setdefault(symbol, {})
    if target in values:
        raise InvalidValue(key, raw, f"given twice (also as another name of {target})")
    try:
        if target == "rebalancing_enabled":
            values[target] = parse_bool(setting, raw)
        elif target == "target_ratio":
            values[target] = parse_ratio(setting, raw)
        else:
            values[target] = GLOBAL_SETTINGS["equity_deviation"](setting, raw)
    except InvalidValue as error:
        raise InvalidValue(key, raw, error.rule) from None


def parse_candidates(texts: Iterable[str]) -> list[Candidate]:
    """Several candidates, names unique; `as-run` is not among them (it is always run)."""
    found: list[Candidate] = []
    for text in texts:
        candidate = parse_candidate(text)
        if any(other.name == candidate.name for other in found):
            raise InvalidValue("candidate name", candidate.name, "given twice")
        found.append(candidate)
    return found


def candidate_settings(base: RebalancingSettings, candidate: Candidate) -> RebalancingSettings:
    """The settings `candidate` runs with over `base` (see the module's precedence)."""
    if not candidate.overrides and not candidate.pools:
        return base
    over = candidate.overrides

    def value(name: str, current: SettingValue) -> SettingValue:
        return over.get(name, current)

    equity = ImbalanceThreshold(
        target=_dec(value("equity_target_ratio", base.equity_threshold.target)),
        deviation=_dec(value("equity_deviation", base.equity_threshold.deviation)),
    )
    usdc = ImbalanceThreshold(
        target=_dec(value("usdc_target_ratio", base.usdc_threshold.target)),
        deviation=_dec(value("usdc_deviation", base.usdc_threshold.deviation)),
    )
    assets: dict[str, AssetOverride] = {}
    for symbol, asset in base.assets.items():
        mine = candidate.pools.get(symbol, {})
        target = asset.target_ratio if "equity_target_ratio" not in over else None
        deviation = asset.deviation if "equity_deviation" not in over else None
        assets[symbol] = replace(
            asset,
            target_ratio=_opt(mine["target_ratio"]) if "target_ratio" in mine else target,
            deviation=_opt(mine["deviation"]) if "deviation" in mine else deviation,
            rebalancing_enabled=bool(mine["rebalancing_enabled"])
            if "rebalancing_enabled" in mine
            else asset.rebalancing_enabled,
        )
    return replace(
        base,
        paused=bool(value("paused", base.paused)),
        equity_threshold=equity,
        usdc_threshold=usdc,
        equity_minimum_shares=_dec(value("equity_minimum_shares", base.equity_minimum_shares)),
        usdc_minimum=_dec(value("usdc_minimum", base.usdc_minimum)),
        equity_cap_shares=_opt(value("equity_cap_shares", base.equity_cap_shares)),
        usdc_cap=_opt(value("usdc_cap", base.usdc_cap)),
        assets=assets,
    )


def candidate_thresholds(
    base: RebalancingSettings, candidate: Candidate, pools: Iterable[str]
) -> dict[str, ImbalanceThreshold]:
    """The band of each pool under `candidate` over `base`."""
    settings = candidate_settings(base, candidate)
    return {key: settings.threshold_for(key) for key in pools}


def _dec(value: SettingValue) -> Decimal:
    assert isinstance(value, Decimal), value
    return value


def _opt(value: SettingValue) -> Decimal | None:
    return None if value is None else _dec(value)
