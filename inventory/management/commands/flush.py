"""`manage.py flush`, refused while the event log is append-only.

Django's flush empties every table (DELETE on SQLite, TRUNCATE on PostgreSQL). The event log
is the truth: emptying it is never an application operation, so this command refuses with a
message saying why, before touching any table. The triggers are absent only while a test's
teardown empties the database (tests/conftest.py uninstalls them first) or before migrate.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError
from django.core.management.commands.flush import Command as DjangoFlush
from django.db import DEFAULT_DB_ALIAS, connections

from inventory import append_only


class Command(DjangoFlush):
    help = DjangoFlush.help + " Refused while the event log's append-only triggers are installed."

    def handle(self, **options: Any) -> None:
        connection = connections[options.get("database") or DEFAULT_DB_ALIAS]
        if append_only.installed(connection):
            raise CommandError(
                f"flush refused: {append_only.TABLE} is the append-only event log (the truth "
                "every balance is rebuilt from) and its triggers refuse DELETE and TRUNCATE. "
                "Nothing was changed. To start from nothing, create a new database and run "
                "migrate."
            )
        super().handle(**options)
