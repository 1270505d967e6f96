from pathlib import Path

import pytest
from django.db import connection

from inventory import append_only


@pytest.fixture(autouse=True)
def _append_only_event_log(request):
    """Keep the event log's append-only triggers in place for every database test.

    Transactional tests end with a flush that empties every table; the triggers would refuse
    it, so they are dropped at teardown (before the flush) and installed again at the next
    test's setup. Tests inside a transaction get them installed and rolled back with it.
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = bool(
        (marker and marker.kwargs.get("transaction"))
        or "transactional_db" in request.fixturenames
        or "live_server" in request.fixturenames
    )
    if marker is None and "db" not in request.fixturenames and not transactional:
        yield
        return
    request.getfixturevalue("transactional_db" if transactional else "db")
    append_only.install(connection)
    yield
    if transactional:
        append_only.uninstall(connection)


def pytest_report_header(config):
    shots = Path(__file__).resolve().parent.parent / "var" / "screenshots" / "console"
    return [f"console screenshots: {shots}"]
