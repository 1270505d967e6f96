"""`manage.py operation due-loop --interval`: a bad interval is a CommandError, not a traceback."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("interval", ["-1", "0", "nan", "inf", "1e9"])
def test_due_loop_refuses_an_interval_that_is_not_a_positive_number_of_seconds(interval):
    with pytest.raises(CommandError, match=r"--interval .*: must be a number of seconds above 0"):
        call_command("operation", "due-loop", "--interval", interval)
