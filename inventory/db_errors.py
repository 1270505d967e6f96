"""Which constraint a database error is about, by name or SQLSTATE, never by message text.

PostgreSQL (psycopg 3) says it in the error: `sqlstate` and `diag.constraint_name`. SQLite
says it only in the message ("UNIQUE constraint failed: table.col, table.col"), so that one
message is read here and nowhere else: its table and columns are mapped to the constraint the
models declare on those columns, under the name PostgreSQL gives it.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import DatabaseError

UNIQUE_VIOLATION = "23505"

# "UNIQUE constraint failed: t.a, t.b", possibly followed by " (why)" (the event log's
# append-only trigger raises the same text with its reason).
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: ([\w.]+(?:, [\w.]+)*)")


def sqlstate(error: DatabaseError) -> str | None:
    """The SQLSTATE of a PostgreSQL error (None on SQLite, which has none)."""
    return getattr(error.__cause__, "sqlstate", None)


def unique_violated(error: DatabaseError) -> str | None:
    """The name of the unique constraint (or primary key) `error` violated, else None."""
    cause = error.__cause__
    if hasattr(cause, "sqlstate"):  # psycopg
        if cause.sqlstate != UNIQUE_VIOLATION:
            return None
        return getattr(cause.diag, "constraint_name", None)
    return sqlite_unique_constraint(str(error))


def sqlite_unique_constraint(message: str) -> str | None:
    """The constraint an SQLite "UNIQUE constraint failed" message is about (the one place that
    reads a message): a model's `UniqueConstraint` on those columns (a conditional one too) by
    its name, a primary key as `<table>_pkey` and a `unique=True` field as
    `<table>_<column>_key`, PostgreSQL's names for those two."""
    found = _SQLITE_UNIQUE.search(message)
    if found is None:
        return None
    qualified = [part.strip() for part in found.group(1).split(",")]
    tables = {name.rpartition(".")[0] for name in qualified}
    if len(tables) != 1:
        return None
    table = tables.pop()
    columns = tuple(name.rpartition(".")[2] for name in qualified)
    model = _model_of_table(table)
    if model is None:
        return None
    for constraint in model._meta.constraints:
        fields = getattr(constraint, "fields", ())
        if fields and tuple(model._meta.get_field(f).column for f in fields) == columns:
            return str(constraint.name)
    if len(columns) == 1:
        field = next((f for f in model._meta.concrete_fields if f.column == columns[0]), None)
        if field is not None and field.primary_key:
            return f"{table}_pkey"
        if field is not None and field.unique:
            return f"{table}_{columns[0]}_key"
    return None


def _model_of_table(table: str) -> Any:
    from django.apps import apps

    return next((m for m in apps.get_models() if m._meta.db_table == table), None)
