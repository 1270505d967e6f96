"""The asset table for scripts: add, list, enable, disable (each change audited)."""

from __future__ import annotations

import io
import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.table import Table

from inventory.domain.values import InvalidValue
from inventory.models import Asset
from inventory.selectors import asset_by_symbol, assets_list
from inventory.services import asset_register, setting_change

BY = "manage.py asset"


def asset_row(asset: Asset) -> dict[str, Any]:
    return {
        "base_symbol": asset.base_symbol,
        "token_symbol": asset.token_symbol,
        "token_address": asset.token_address,
        "decimals": asset.decimals,
        "vault_id": asset.vault_id,
        "rebalancing_enabled": asset.rebalancing_enabled,
        "target_ratio": None if asset.target_ratio is None else format(asset.target_ratio, "f"),
        "deviation": None if asset.deviation is None else format(asset.deviation, "f"),
    }


class Command(BaseCommand):
    help = (
        "Tokenized equities the rebalancer trades. `add SYMBOL --token-address 0x.. "
        "--token-symbol tSYMBOL --vault-id 0x..`; `list [--json]`; `enable SYMBOL`; "
        "`disable SYMBOL` (rebalancing of that asset). Every change is an audited event."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="register an asset")
        add.add_argument("symbol", help="base ticker, e.g. AAPL")
        add.add_argument("--token-address", required=True)
        add.add_argument("--token-symbol", required=True, help="e.g. tAAPL, AAPL0x, AAPLs1")
        add.add_argument("--vault-id", required=True, help="0x + 64 hex digits")
        add.add_argument("--decimals", type=int, default=18)
        add.add_argument("--disabled", action="store_true", help="register with rebalancing off")
        add.add_argument("--by", default=BY)
        listing = actions.add_parser("list", help="list the assets")
        listing.add_argument("--json", action="store_true")
        for name in ("enable", "disable"):
            switch = actions.add_parser(name, help=f"{name} rebalancing of an asset")
            switch.add_argument("symbol")
            switch.add_argument("--by", default=BY)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "add":
                asset = asset_register(
                    base_symbol=options["symbol"],
                    token_address=options["token_address"],
                    token_symbol=options["token_symbol"],
                    vault_id=options["vault_id"],
                    decimals=options["decimals"],
                    rebalancing_enabled=not options["disabled"],
                    changed_by=options["by"],
                    token_reader=self._token_reader(),
                )
                self.stdout.write(f"registered {asset}")
            elif action in ("enable", "disable"):
                self._switch(options["symbol"], action == "enable", options["by"])
            else:
                self._list(as_json=options["json"])
        except InvalidValue as error:
            raise CommandError(f"{error.field} {error.value!r}: {error.rule}") from None

    def _token_reader(self) -> Any:
        """The Base chain client, to check the token's decimals() and symbol() (None when
        no Base RPC is configured: then the registration says it was not checked)."""
        config = settings.REBALANCING
        if config.base_rpc_url is None or config.evm_private_key is None:
            self.stderr.write(
                "BASE_RPC_URL is not set: the token's decimals() and symbol() were not checked"
            )
            return None
        from venues.chain import EvmChain

        return EvmChain(
            rpc_url=config.base_rpc_url.reveal(),
            private_key=config.evm_private_key.reveal(),
            name="base",
            request_timeout_s=15.0,
        )

    def _switch(self, symbol: str, enabled: bool, by: str) -> None:
        if asset_by_symbol(symbol) is None:
            raise CommandError(f"no asset is registered as {symbol!r} (see `asset list`)")
        changed = setting_change(
            scope=symbol, setting="rebalancing_enabled", new_value=enabled, changed_by=by
        )
        state = "enabled" if enabled else "disabled"
        if changed is None:
            self.stdout.write(f"rebalancing of {symbol} was already {state}")
        else:
            self.stdout.write(f"rebalancing of {symbol} {state}")

    def _list(self, *, as_json: bool) -> None:
        rows = [asset_row(asset) for asset in assets_list()]
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        table = Table("symbol", "token", "address", "decimals", "vault", "rebalancing")
        for row in rows:
            table.add_row(
                row["base_symbol"],
                row["token_symbol"],
                row["token_address"],
                str(row["decimals"]),
                row["vault_id"][:10] + "…",
                "enabled" if row["rebalancing_enabled"] else "disabled",
            )
        buffer = io.StringIO()
        Console(file=buffer, width=140).print(table)
        self.stdout.write(buffer.getvalue(), ending="")
