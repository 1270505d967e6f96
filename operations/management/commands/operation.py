"""Operator actions on one operation, and the due-operations loop.

manage.py operation retry <id> --actor alice
manage.py operation fail <id> --reason "Alpaca ticket 123" --actor alice
manage.py operation reconcile <id> --reason "settled by hand, ticket 123" --actor alice
manage.py operation resume-pool <pool> --reason "whitelist approved" --actor alice
manage.py operation start KIND POOL AMOUNT --reason "..." --actor alice
manage.py operation cancel <id> --reason "..." --actor alice
manage.py operation due-loop [--interval SECONDS]
"""

from __future__ import annotations

import math

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inventory.domain.values import InvalidValue
from operations.due import due_loop
from operations.operator import (
    OperatorError,
    operator_cancel,
    operator_force_fail,
    operator_reconcile,
    operator_resume_pool,
    operator_retry_now,
    operator_start,
)

MAX_INTERVAL_S = 86_400


class Command(BaseCommand):
    help = "Operator actions on an operation (retry, fail, reconcile) and the due loop."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        retry = sub.add_parser("retry", help="make the operation due now and queue it")
        retry.add_argument("operation_id", type=int)
        retry.add_argument("--actor", required=True)
        start = sub.add_parser(
            "start",
            help="start a mint, redemption or USDC move of a chosen amount for a pool",
        )
        start.add_argument(
            "kind", choices=["mint", "redemption", "usdc_alpaca_to_base", "usdc_base_to_alpaca"]
        )
        start.add_argument("pool", help="an equity symbol, or USDC for the USDC kinds")
        start.add_argument("amount", help="shares, or USDC for the USDC kinds")
        start.add_argument("--reason", required=True)
        start.add_argument("--actor", required=True)
        for name, text in (
            ("cancel", "cancel an operation that has not moved anything yet"),
            ("fail", "force-fail with the failure valid in its state"),
            ("reconcile", "declare kept inflight settled outside the system"),
        ):
            action = sub.add_parser(name, help=text)
            action.add_argument("operation_id", type=int)
            action.add_argument("--reason", required=True)
            action.add_argument("--actor", required=True)
        resume = sub.add_parser(
            "resume-pool",
            help="close a pool's circuit breaker and end its cool-down (after failures)",
        )
        resume.add_argument("pool")
        resume.add_argument("--reason", required=True)
        resume.add_argument("--actor", required=True)
        loop = sub.add_parser("due-loop", help="enqueue due operations, forever")
        loop.add_argument("--interval", type=float, default=None)

    def handle(self, *args: object, **options: object) -> None:
        action = options["action"]
        try:
            if action == "due-loop":
                given = options["interval"]
                if given is not None and not (
                    math.isfinite(given) and 0 < given <= MAX_INTERVAL_S  # type: ignore[operator,arg-type]
                ):
                    raise CommandError(
                        f"--interval {given}: must be a number of seconds above 0 and at most "
                        f"{MAX_INTERVAL_S}"
                    )
                interval = settings.REBALANCING.workers.due_interval_s if given is None else given
                due_loop(interval_s=float(interval))  # type: ignore[arg-type]
                return
            if action == "resume-pool":
                breaker = operator_resume_pool(
                    pool=str(options["pool"]),
                    reason=str(options["reason"]),
                    actor=str(options["actor"]),
                )
                self.stdout.write(f"{breaker.pool}: resumed")
                return
            if action == "start":
                started, estimate = operator_start(
                    kind=str(options["kind"]),
                    pool=str(options["pool"]),
                    amount=str(options["amount"]),
                    reason=str(options["reason"]),
                    actor=str(options["actor"]),
                )
                cost = "not estimated" if estimate is None else f"{estimate} USD"
                self.stdout.write(f"{started} (started; estimated cost {cost})")
                return
            operation_id = int(options["operation_id"])  # type: ignore[arg-type]
            if action == "cancel":
                operation = operator_cancel(
                    operation_id=operation_id,
                    reason=str(options["reason"]),
                    actor=str(options["actor"]),
                )
            elif action == "retry":
                operation = operator_retry_now(
                    operation_id=operation_id, actor=str(options["actor"])
                )
            elif action == "fail":
                operation = operator_force_fail(
                    operation_id=operation_id,
                    reason=str(options["reason"]),
                    actor=str(options["actor"]),
                )
            else:
                operation = operator_reconcile(
                    operation_id=operation_id,
                    reason=str(options["reason"]),
                    actor=str(options["actor"]),
                )
        except (OperatorError, InvalidValue) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{operation} ({action} done)")
