"""API tokens: create (prints the secret once), list, revoke."""

from __future__ import annotations

import io
import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.table import Table

from inventory.domain.values import InvalidValue
from inventory.models import ApiTokenScope
from inventory.selectors import api_tokens_list
from inventory.services import api_token_create, api_token_revoke


class Command(BaseCommand):
    help = (
        "Bearer tokens of the HTTP API. `create NAME --scope ingest [--scope read]` prints "
        "the token once (only its hash is stored); `list [--json]`; `revoke NAME`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="create a token and print it once")
        create.add_argument("name")
        create.add_argument(
            "--scope",
            action="append",
            required=True,
            choices=ApiTokenScope.values,
            help="repeat for several scopes",
        )
        create.add_argument("--by", default="manage.py api_token", help="who creates it")
        listing = actions.add_parser("list", help="list tokens (never their secrets)")
        listing.add_argument("--json", action="store_true")
        revoke = actions.add_parser("revoke", help="revoke a token by name")
        revoke.add_argument("name")
        revoke.add_argument("--by", default="manage.py api_token", help="who revokes it")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "create":
                token, secret = api_token_create(
                    name=options["name"], scopes=options["scope"], created_by=options["by"]
                )
                sys.stderr.write(
                    f"created token {token.name!r} (scopes: {token.scopes}); "
                    "store it now, it is not shown again:\n"
                )
                self.stdout.write(secret)
            elif action == "revoke":
                token = api_token_revoke(name=options["name"], revoked_by=options["by"])
                self.stdout.write(f"revoked token {token.name!r}")
            else:
                self._list(as_json=options["json"])
        except InvalidValue as error:
            raise CommandError(f"{error.field} {error.value!r}: {error.rule}") from None

    def _list(self, *, as_json: bool) -> None:
        rows = [
            {
                "name": token.name,
                "scopes": token.scope_list,
                "prefix": token.prefix,
                "created_at": token.created_at.isoformat(),
                "created_by": token.created_by,
                "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
            }
            for token in api_tokens_list()
        ]
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        table = Table("name", "scopes", "prefix", "created", "revoked")
        for row in rows:
            table.add_row(
                row["name"],
                " ".join(row["scopes"]),
                row["prefix"] + "…",
                row["created_at"],
                row["revoked_at"] or "",
            )
        buffer = io.StringIO()
        Console(file=buffer, width=120).print(table)
        self.stdout.write(buffer.getvalue(), ending="")
