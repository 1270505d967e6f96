"""Candidate settings (`inventory.domain.candidates`): parsed from `NAME:key=value,...` with
the settings' own parsers, bad input named, and the effective bands over the settings in
force."""

from __future__ import annotations

from decimal import Decimal

import pytest

from inventory.domain.candidates import (
    AS_RUN,
    Candidate,
    as_run,
    candidate_settings,
    candidate_thresholds,
    parse_candidate,
    parse_candidates,
)
from inventory.domain.inventory import ImbalanceThreshold
from inventory.domain.settings import AssetOverride, RebalancingSettings
from inventory.domain.values import USDC_POOL, InvalidValue

D = Decimal

BASE = RebalancingSettings(
    enabled=True,
    paused=False,
    equity_threshold=ImbalanceThreshold(D("0.5"), D("0.2")),
    usdc_threshold=ImbalanceThreshold(D("0.5"), D("0.3")),
    equity_minimum_shares=D(1),
    usdc_minimum=D(10),
    equity_cap_shares=D(100),
    usdc_cap=None,
    assets={
        "AAPL": AssetOverride(True, None, D("0.1")),
        "TSLA": AssetOverride(True, D("0.6"), None),
    },
)


def test_parses_global_and_per_pool_overrides():
    candidate = parse_candidate(
        "wide:equity_deviation=0.3,usdc_deviation=0.45,AAPL.equity_deviation=0.25,usdc_cap="
    )
    assert candidate.name == "wide"
    assert candidate.overrides == {
        "equity_deviation": D("0.3"),
        "usdc_deviation": D("0.45"),
        "usdc_cap": None,
    }
    assert candidate.pools == {"AAPL": {"deviation": D("0.25")}}
    assert parse_candidate(candidate.spec) == candidate


def test_usdc_pool_keys_are_the_global_usdc_settings_and_dotted_symbols_work():
    candidate = parse_candidate("c:USDC.usdc_deviation=0.1,BRK.B.target_ratio=0.4")
    assert candidate.overrides == {"usdc_deviation": D("0.1")}
    assert candidate.pools == {"BRK.B": {"target_ratio": D("0.4")}}


@pytest.mark.parametrize(
    ("text", "field", "why"),
    [
        ("wide", "candidate", "NAME:key=value"),
        ("wide:", "candidate", "overrides no setting"),
        (":equity_deviation=0.3", "candidate name", "letters"),
        ("as-run:equity_deviation=0.3", "candidate name", "settings in force"),
        ("w:equity_deviation", "candidate", "key=value"),
        ("w:equity_deviaton=0.3", "equity_deviaton", "not a rebalancing setting"),
        ("w:equity_deviation=-0.1", "equity_deviation", ">= 0"),
        ("w:equity_deviation=abc", "equity_deviation", "not a decimal"),
        ("w:usdc_target_ratio=1.5", "usdc_target_ratio", "between 0 and 1"),
        ("w:usdc_cap=0", "usdc_cap", "> 0"),
        ("w:AAPL.equity_deviation=x", "AAPL.equity_deviation", "not a decimal"),
        ("w:AAPL.equity_minimum_shares=3", "AAPL.equity_minimum_shares", "equity pool"),
        ("w:aapl.deviation=0.3", "aapl.deviation", "pool 'aapl'"),
        ("w:USDC.equity_deviation=0.3", "USDC.equity_deviation", "for USDC"),
        ("w:AAPL.rebalancing_enabled=maybe", "AAPL.rebalancing_enabled", "true or false"),
        ("w:equity_deviation=0.3,equity_deviation=0.4", "equity_deviation", "twice"),
        ("w:usdc_deviation=0.3,USDC.usdc_deviation=0.4", "USDC.usdc_deviation", "twice"),
        ("w:USDC.usdc_deviation=0.3,usdc_deviation=0.4", "usdc_deviation", "twice"),
        ("w:AAPL.deviation=0.3,AAPL.equity_deviation=0.4", "AAPL.equity_deviation", "twice"),
    ],
)
def test_bad_input_names_the_field_the_value_and_why(text, field, why):
    with pytest.raises(InvalidValue) as caught:
        parse_candidate(text)
    assert caught.value.field == field
    assert why in caught.value.rule


def test_candidate_names_are_unique():
    with pytest.raises(InvalidValue, match="given twice"):
        parse_candidates(["a:equity_deviation=0.3", "a:equity_deviation=0.4"])


def test_as_run_is_the_base_unchanged():
    assert candidate_settings(BASE, as_run()) is BASE
    assert as_run().name == AS_RUN


def test_candidate_values_win_at_every_level():
    thresholds = candidate_thresholds(
        BASE,
        parse_candidate("c:equity_deviation=0.3,TSLA.deviation=0.05,usdc_target_ratio=0.4"),
        ["AAPL", "TSLA", "MSFT", USDC_POOL],
    )
    # AAPL's own 0.1 gives way to the candidate's global 0.3.
    assert thresholds["AAPL"] == ImbalanceThreshold(D("0.5"), D("0.3"))
    # TSLA keeps its base target (0.6: the candidate sets no target) and takes its own band.
    assert thresholds["TSLA"] == ImbalanceThreshold(D("0.6"), D("0.05"))
    assert thresholds["MSFT"] == ImbalanceThreshold(D("0.5"), D("0.3"))
    assert thresholds[USDC_POOL] == ImbalanceThreshold(D("0.4"), D("0.3"))


def test_base_asset_overrides_stay_where_the_candidate_is_silent():
    thresholds = candidate_thresholds(
        BASE, parse_candidate("c:usdc_deviation=0.1"), ["AAPL", "TSLA"]
    )
    assert thresholds["AAPL"] == ImbalanceThreshold(D("0.5"), D("0.1"))
    assert thresholds["TSLA"] == ImbalanceThreshold(D("0.6"), D("0.2"))


def test_minimums_caps_switches_and_pause():
    settings = candidate_settings(
        BASE,
        parse_candidate(
            "c:equity_cap_shares=,usdc_minimum=5,paused=true,AAPL.rebalancing_enabled=false"
        ),
    )
    assert settings.equity_cap_shares is None and settings.usdc_minimum == D(5)
    assert settings.paused and not settings.active
    assert not settings.asset_enabled("AAPL") and settings.asset_enabled("TSLA")
    assert BASE.asset_enabled("AAPL")  # the base is not changed


def test_a_candidate_is_a_value():
    assert Candidate("x", {"usdc_cap": None}) == parse_candidate("x:usdc_cap=")
