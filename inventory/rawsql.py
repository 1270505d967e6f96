"""Plain SQL for the fill hot path (fill -> event -> projection -> trigger).

Building a query with the ORM costs more than running it (hundreds of microseconds per query
on a small machine, several times the query itself on SQLite). The statements here are
written once per model and database vendor; values still go through each field's own
`get_db_prep_save` and come back through the same converters the ORM applies, so what is
stored and read is exactly what the ORM would store and read.

The statements run on the database driver's own cursor (`_execute`): Django's cursor wrapper
costs more than a SQLite statement on this path (a wrapper object per statement, the
placeholder rewrite by regular expression on every SQLite execute). Errors are still Django's
(`wrap_database_errors`) and a broken transaction is still refused. When something watches the
queries (`CaptureQueriesContext`, `DEBUG`, an `execute_wrapper`), the same statements go
through Django's cursor so they are logged and wrapped as any other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache, lru_cache
from typing import Any, TypeVar

from django.db import connections, models
from django.db.models.base import ModelState
from django.db.models.expressions import Col

M = TypeVar("M", bound=models.Model)

# Fields whose database value is the Python str or int itself (no conversion to skip).
_PLAIN_TYPES = frozenset(
    {
        "CharField",
        "TextField",
        "IntegerField",
        "BigIntegerField",
        "PositiveIntegerField",
        "PositiveBigIntegerField",
        "PositiveSmallIntegerField",
    }
)
_NOTHING = object()

# Rows per INSERT statement (SQLite allows 32,766 bound values; PostgreSQL 65,535).
INSERT_CHUNK = 500


_FORMAT_QMARK = re.compile(r"(?<!%)%s")


@lru_cache(maxsize=4096)
def _qmark(sql: str) -> str:
    """SQLite's placeholders for a `%s` statement (what Django's SQLite cursor rewrites)."""
    return _FORMAT_QMARK.sub("?", sql).replace("%%", "%")


def _execute(connection: Any, sql: str, params: Sequence[Any]) -> Any:
    """Run one statement; returns the cursor (the caller reads it and lets it go)."""
    if connection.queries_logged or connection.execute_wrappers:
        cursor = connection.cursor()
        cursor.execute(sql, params)
        return cursor
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    with connection.wrap_database_errors:
        if connection.vendor == "sqlite":
            cursor = connection.connection.cursor()
            cursor.execute(_qmark(sql), params)
        else:
            cursor = connection.create_cursor()
            cursor.execute(sql, params)
    return cursor


def _quote(connection: Any, name: str) -> str:
    return connection.ops.quote_name(name)


@cache
def _columns(model: type[models.Model]) -> tuple[models.Field, ...]:
    return tuple(model._meta.concrete_fields)


def _converted(model: type[models.Model], connection: Any) -> list[tuple[int, Col, list[Any]]]:
    """(column index, column, converters) of the model's columns that have converters (the
    ORM's: the backend's then the field's), built once per model and database vendor."""
    key = (model, connection.vendor)
    found = _CONVERTED.get(key)
    if found is None:
        found = []
        for index, field in enumerate(_columns(model)):
            column = Col(model._meta.db_table, field)
            functions = connection.ops.get_db_converters(column) + field.get_db_converters(
                connection
            )
            if functions:
                found.append((index, column, functions))
        _CONVERTED[key] = found
    return found


_CONVERTED: dict[tuple[type[models.Model], str], list[tuple[int, Col, list[Any]]]] = {}


@cache
def _select_sql(
    model: type[models.Model], vendor: str, where: str, order_by: str, for_update: bool
) -> str:
    connection = _vendor_connection(vendor)
    names = ", ".join(_quote(connection, f.column) for f in _columns(model))
    sql = f"SELECT {names} FROM {_quote(connection, model._meta.db_table)} WHERE {where}"
    if order_by:
        sql += f" ORDER BY {order_by}"
    if for_update and connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    return sql


_VENDOR_CONNECTIONS: dict[str, Any] = {}


def _vendor_connection(vendor: str) -> Any:
    return _VENDOR_CONNECTIONS[vendor]


def _remember(connection: Any) -> None:
    _VENDOR_CONNECTIONS.setdefault(connection.vendor, connection)


def select_models(
    model: type[M],
    where: str,
    params: Sequence[Any],
    *,
    order_by: str = "",
    for_update: bool = False,
    using: str = "default",
) -> list[M]:
    """Instances of `model` (every concrete field loaded) for `WHERE <where>`; `for_update`
    locks the rows where the database can (PostgreSQL; SQLite's write lock is the
    transaction's). The instances are those `Model.from_db` makes, built without running
    `Model.__init__` (nothing in this project listens to `pre_init`/`post_init`)."""
    connection = connections[using]
    _remember(connection)
    sql = _select_sql(model, connection.vendor, where, order_by, for_update)
    converted = _converted(model, connection)
    attnames = _attnames(model)
    with connection.wrap_database_errors:
        fetched = _execute(connection, sql, list(params)).fetchall()
    result = []
    new = object.__new__
    for raw in fetched:
        values = list(raw)
        for index, column, functions in converted:
            value = values[index]
            for function in functions:
                value = function(value, column, connection)
            values[index] = value
        instance = new(model)
        instance.__dict__.update(zip(attnames, values, strict=True))
        state = ModelState()
        state.adding = False
        state.db = using
        instance._state = state
        result.append(instance)
    return result


@cache
def _attnames(model: type[models.Model]) -> tuple[str, ...]:
    return tuple(f.attname for f in _columns(model))


def prep_save(field: models.Field, value: Any, connection: Any) -> Any:
    """`field.get_db_prep_save(value, connection)`, with two shortcuts that give the same
    result (held equal by `tests/inventory/test_rawsql.py`): a JSON value on SQLite is
    `json.dumps` of it (what Django's `JSONField` with no encoder stores there), and an aware
    datetime of a `DateTimeField` is prepared once per instant (one fill stamps several rows
    with the same moment)."""
    kind = _prep_kinds.get(field)
    if kind is None:
        kind = _prep_kinds[field] = _prep_kind(field)
    if value is None:
        return field.get_db_prep_save(value, connection)
    if kind == _JSON and connection.vendor == "sqlite":
        return json.dumps(value)
    if kind == _DATETIME and isinstance(value, datetime) and value.tzinfo is not None:
        key = (field, connection.vendor, value)
        found = _datetimes.get(key, _NOTHING)
        if found is _NOTHING:
            if len(_datetimes) >= 1024:
                _datetimes.clear()
            found = _datetimes[key] = field.get_db_prep_save(value, connection)
        return found
    return field.get_db_prep_save(value, connection)


_OTHER, _JSON, _DATETIME = 0, 1, 2
_prep_kinds: dict[models.Field, int] = {}
_datetimes: dict[tuple[models.Field, str, datetime], Any] = {}


def _prep_kind(field: models.Field) -> int:
    cls = type(field)
    if cls is models.JSONField and field.encoder is None:  # type: ignore[attr-defined]
        return _JSON
    if cls is models.DateTimeField:
        return _DATETIME
    return _OTHER


@cache
def _fields_named(model: type[models.Model], names: tuple[str, ...]) -> tuple[models.Field, ...]:
    return tuple(model._meta.get_field(name) for name in names)


@cache
def _plain_fields(model: type[models.Model], names: tuple[str, ...]) -> tuple[bool, ...]:
    return tuple(f.get_internal_type() in _PLAIN_TYPES for f in _fields_named(model, names))


@cache
def _update_sql(model: type[models.Model], vendor: str, names: tuple[str, ...]) -> str:
    connection = _vendor_connection(vendor)
    meta = model._meta
    assignments = ", ".join(f"{_quote(connection, meta.get_field(n).column)} = %s" for n in names)
    return (
        f"UPDATE {_quote(connection, meta.db_table)} SET {assignments} "
        f"WHERE {_quote(connection, meta.pk.column)} = %s"
    )


def update_fields(row: models.Model, names: Iterable[str], *, using: str = "default") -> None:
    """`UPDATE ... SET <names> WHERE pk = row.pk` with the row's current values (what
    `row.save(update_fields=names)` writes, without its query building and signals)."""
    names = tuple(names)
    if not names:
        return
    connection = connections[using]
    _remember(connection)
    fields = _fields_named(type(row), names)
    values = [prep_save(f, getattr(row, f.attname), connection) for f in fields]
    _execute(connection, _update_sql(type(row), connection.vendor, names), [*values, row.pk])


@cache
def _insert_sql(
    model: type[models.Model], vendor: str, names: tuple[str, ...], rows: int, returning: bool
) -> str:
    connection = _vendor_connection(vendor)
    meta = model._meta
    columns = ", ".join(_quote(connection, meta.get_field(n).column) for n in names)
    one = "(" + ", ".join(["%s"] * len(names)) + ")"
    sql = (
        f"INSERT INTO {_quote(connection, meta.db_table)} ({columns}) "
        f"VALUES {', '.join([one] * rows)}"
    )
    if returning:
        sql += f" RETURNING {_quote(connection, meta.pk.column)}"
    return sql


def insert_rows(
    model: type[models.Model],
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    returning_pk: bool = False,
    using: str = "default",
) -> list[Any]:
    """Insert `rows` (values in the order of `names`, Python values) in multi-row INSERTs
    of up to `INSERT_CHUNK` rows, in order; returns the new primary keys in the same order
    when `returning_pk` (both databases number the rows of one statement in VALUES order,
    as Django's bulk_create relies on)."""
    if not rows:
        return []
    connection = connections[using]
    _remember(connection)
    names = tuple(names)
    fields = _fields_named(model, names)
    plain = _plain_fields(model, names)
    # The same object in every row (the batch's `now`, its metadata) is prepared once.
    last: list[tuple[Any, Any]] = [(_NOTHING, None)] * len(fields)

    def prepared(index: int, value: Any) -> Any:
        if plain[index] and type(value) in (str, int):
            return value
        seen, result = last[index]
        if value is seen:
            return result
        result = prep_save(fields[index], value, connection)
        last[index] = (value, result)
        return result

    keys: list[Any] = []
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        params: list[Any] = []
        for row in chunk:
            params.extend(prepared(i, v) for i, v in enumerate(row))
        sql = _insert_sql(model, connection.vendor, names, len(chunk), returning_pk)
        cursor = _execute(connection, sql, params)
        if returning_pk:
            # One statement's rows are numbered in VALUES order, whatever order RETURNING
            # lists them in.
            with connection.wrap_database_errors:
                keys.extend(sorted(r[0] for r in cursor.fetchall()))
    return keys


def fetch(sql: str, params: Sequence[Any], *, using: str = "default") -> list[tuple[Any, ...]]:
    connection = connections[using]
    with connection.wrap_database_errors:
        return list(_execute(connection, sql, list(params)).fetchall())


def execute(sql: str, params: Sequence[Any], *, using: str = "default") -> int:
    return int(_execute(connections[using], sql, list(params)).rowcount)


def placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)
