"""Grants for running the application as a PostgreSQL role that does not own the tables.

    manage.py event_log_grants --role rebalancer_app            # print the SQL
    manage.py event_log_grants --role rebalancer_app --apply    # run it (as the owner)

Run as the owner after every `migrate` (new tables need their grants). The application then
connects as the role: it can append events and their idempotency keys (`inventory_eventkey`:
a removed trade key lets its trade be recorded again) but never UPDATE, DELETE or TRUNCATE
them, and it cannot ALTER or DROP a table or drop or disable a trigger.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from inventory import append_only

_ROLE = re.compile(r"[a-z_][a-z0-9_$]{0,62}")


class Command(BaseCommand):
    help = (
        "Print (or --apply) the PostgreSQL grants for an application role that is not the "
        "tables' owner: the event log and its key table get SELECT and INSERT only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--role", required=True, help="the application's database role")
        parser.add_argument("--apply", action="store_true", help="run the grants now")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args: Any, **options: Any) -> None:
        role = str(options["role"])
        if not _ROLE.fullmatch(role):
            raise CommandError(
                f"role={role!r}: must be a lower-case PostgreSQL identifier "
                "(letters, digits, '_' or '$', at most 63 characters)"
            )
        connection = connections[options["database"]]
        try:
            statements = append_only.app_role_grants(connection, role)
        except NotImplementedError as exc:
            raise CommandError(f"{exc}; this database is {connection.vendor}") from exc
        if not options["apply"]:
            for sql in statements:
                self.stdout.write(sql + ";")
            return
        with transaction.atomic(using=options["database"]), connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
        self.stdout.write(f"granted {role}: {len(statements)} statement(s) applied")
