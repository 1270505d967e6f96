"""Session-scoped local chains for every test that needs them.

Use the fixtures by name (pytest finds this conftest for tests under tests/venues; other
packages can import them in their own conftest with
`from tests.venues.conftest import sim_chains, ethereum_client, base_client, scratch_account`).

- `sim_chains`: one `venues.sim.chain.SimChains` (two anvils, contracts deployed) for the whole
  session (per xdist worker). Mark chain tests `@pytest.mark.chain` and
  `@pytest.mark.xdist_group("chain")` so `--dist loadgroup` keeps them on one worker and the
  chains start once.
- `ethereum_client` / `base_client`: `EvmChain` clients signing as the market maker.
- `scratch_account`: a fresh funded account per test (use it when a test needs a clean
  balance/allowance/nonce history; the market maker's state is shared by the session).

The chains are shared: assert on balance deltas or fresh accounts, never on absolute balances
of shared accounts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from venues.chain import EvmChain
from venues.sim.chain import SimAccount, SimChains


@pytest.fixture(scope="session")
def sim_chains() -> Iterator[SimChains]:
    chains = SimChains.start()
    try:
        yield chains
    finally:
        chains.stop()


@pytest.fixture(scope="session")
def ethereum_client(sim_chains: SimChains) -> EvmChain:
    return sim_chains.client(sim_chains.ethereum, "market_maker")


@pytest.fixture(scope="session")
def base_client(sim_chains: SimChains) -> EvmChain:
    return sim_chains.client(sim_chains.base, "market_maker")


@pytest.fixture
def scratch_account(sim_chains: SimChains) -> SimAccount:
    return sim_chains.new_account()
