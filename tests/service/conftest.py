"""The simulated venue and its configuration, shared with the workflow tests."""

from tests.operations.conftest import (  # noqa: F401 - fixtures
    sim_assets,
    sim_venue,
    venue_config,
    venues,
    worker_env,
)
