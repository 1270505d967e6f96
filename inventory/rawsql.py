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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
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
    """Run one statement; returns the cursor (the caller reads it and lets it go).

    Statements deferred on this connection (`defer`) go first, in the same round trip."""
    queued = _deferred(connection)
    if queued:
        return _send(connection, queued, sql, params)
    return _execute_one(connection, sql, params)


def _execute_one(connection: Any, sql: str, params: Sequence[Any]) -> Any:
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
    fetched = _prefetched(connection, sql, params)
    if fetched is None:
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


def update_fields(
    row: models.Model, names: Iterable[str], *, using: str = "default", deferred: bool = False
) -> None:
    """`UPDATE ... SET <names> WHERE pk = row.pk` with the row's current values (what
    `row.save(update_fields=names)` writes, without its query building and signals).
    `deferred`: sent with the next round trip (`defer`); a value may be an `EventRef`."""
    names = tuple(names)
    if not names:
        return
    connection = connections[using]
    _remember(connection)
    fields = _fields_named(type(row), names)
    raw = [getattr(row, f.attname) for f in fields]
    sql = _update_sql(type(row), connection.vendor, names)
    if any(type(v) is EventRef for v in raw):
        meta = type(row)._meta
        assignments = ", ".join(
            f"{_quote(connection, f.column)} = " + (EventRef.SQL if type(v) is EventRef else "%s")
            for f, v in zip(fields, raw, strict=True)
        )
        sql = (
            f"UPDATE {_quote(connection, meta.db_table)} SET {assignments} "
            f"WHERE {_quote(connection, meta.pk.column)} = %s"
        )
    values: list[Any] = []
    for f, v in zip(fields, raw, strict=True):
        if type(v) is EventRef:
            values.extend(v.params())
        else:
            values.append(prep_save(f, v, connection))
    if deferred:
        defer(sql, [*values, row.pk], using=using)
    else:
        _execute(connection, sql, [*values, row.pk])


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
    deferred: bool = False,
) -> list[Any]:
    """Insert `rows` (values in the order of `names`, Python values) in multi-row INSERTs
    of up to `INSERT_CHUNK` rows, in order; returns the new primary keys in the same order
    when `returning_pk` (both databases number the rows of one statement in VALUES order,
    as Django's bulk_create relies on). `deferred`: sent with the next round trip (`defer`),
    the returned list filled with the keys once it is sent; a value may be an `EventRef`."""
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
        if type(value) is EventRef:
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
        if any(type(v) is EventRef for v in params):
            sql, params = _with_refs(sql, params)
        if deferred:
            # The keys arrive when the round trip is sent (`keys` is filled then).
            defer(
                sql,
                params,
                on_result=(lambda rows: keys.extend(sorted(r[0] for r in rows)))
                if returning_pk
                else None,
                using=using,
            )
            continue
        cursor = _execute(connection, sql, params)
        if returning_pk:
            # One statement's rows are numbered in VALUES order, whatever order RETURNING
            # lists them in.
            with connection.wrap_database_errors:
                keys.extend(sorted(r[0] for r in cursor.fetchall()))
    return keys


def _with_refs(sql: str, params: Sequence[Any]) -> tuple[str, list[Any]]:
    """`sql` with each `%s` whose value is an `EventRef` replaced by its sub-select."""
    parts = sql.split("%s")
    out = [parts[0]]
    values: list[Any] = []
    for part, value in zip(parts[1:], params, strict=True):
        if type(value) is EventRef:
            out.append(EventRef.SQL)
            values.extend(value.params())
        else:
            out.append("%s")
            values.append(value)
        out.append(part)
    return "".join(out), values


def select_statement(
    model: type[models.Model],
    where: str,
    params: Sequence[Any],
    *,
    order_by: str = "",
    for_update: bool = False,
    using: str = "default",
) -> tuple[str, list[Any]]:
    """The statement `select_models` runs for these arguments (to `prefetch` it)."""
    connection = connections[using]
    _remember(connection)
    return _select_sql(model, connection.vendor, where, order_by, for_update), list(params)


def fetch(sql: str, params: Sequence[Any], *, using: str = "default") -> list[tuple[Any, ...]]:
    connection = connections[using]
    kept = _prefetched(connection, sql, params)
    if kept is not None:
        return list(kept)
    with connection.wrap_database_errors:
        return list(_execute(connection, sql, list(params)).fetchall())


def execute(sql: str, params: Sequence[Any], *, using: str = "default") -> int:
    return int(_execute(connections[using], sql, list(params)).rowcount)


def placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


# ---------------------------------------------------------------------------------------------
# Pipelining (PostgreSQL): several statements in one round trip.
#
# Django's psycopg cursor binds parameters on the client, so one `execute` may carry several
# statements separated by semicolons: the server runs them in order, in the transaction, and
# returns one result per statement (`cursor.nextset()`); the first error stops the rest and is
# raised as the statement's own error. Two uses on the fill path:
#
# - `defer(sql, params)` queues a statement whose result nobody waits for (a write, or a lock
#   that only has to be taken before what follows); it is sent in front of the next statement
#   this module runs on the connection, or by `flush()`. A deferred statement may hand its
#   rows to `on_result` (an INSERT ... RETURNING).
# - `prefetch(reads)` runs several reads (after whatever is deferred) in one round trip and
#   keeps their rows; `fetch` and `select_models` of the same statement and parameters in the
#   same transaction take the kept rows instead of asking again (once each).
#
# Where the database is not PostgreSQL with client-side binding, `defer` runs the statement at
# once and `prefetch` does nothing: SQLite is embedded, a statement is not a round trip.
# ---------------------------------------------------------------------------------------------


class EventRef:
    """The id of an event inserted earlier in the same round trip, by its unique (aggregate
    type, aggregate id, sequence): written as a sub-select wherever a value may go in
    `insert_rows` and `update_fields`."""

    __slots__ = ("aggregate_type", "aggregate_id", "sequence")

    SQL = (
        '(SELECT "id" FROM "inventory_event" WHERE "aggregate_type" = %s '
        'AND "aggregate_id" = %s AND "sequence" = %s)'
    )

    def __init__(self, aggregate_type: str, aggregate_id: str, sequence: int) -> None:
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        self.sequence = sequence

    def params(self) -> tuple[str, str, int]:
        return (self.aggregate_type, self.aggregate_id, self.sequence)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EventRef) and self.params() == other.params()

    def __hash__(self) -> int:
        return hash(self.params())

    def __repr__(self) -> str:
        return f"EventRef{self.params()}"


Deferred = tuple[str, list[Any], Any]  # sql, params, on_result (callable or None)


def pipelining(using: str = "default") -> bool:
    """Whether statements of this connection can share a round trip."""
    connection = connections[using]
    return connection.vendor == "postgresql" and (
        connection.settings_dict.get("OPTIONS", {}).get("server_side_binding") is not True
    )


def _deferred(connection: Any) -> list[Deferred]:
    return connection.__dict__.get("_rawsql_deferred") or []


def defer(
    sql: str, params: Sequence[Any], *, on_result: Any = None, using: str = "default"
) -> None:
    """Queue a statement for the next round trip (run it now where there is no pipelining)."""
    connection = connections[using]
    if not pipelining(using):
        cursor = _execute(connection, sql, list(params))
        if on_result is not None:
            with connection.wrap_database_errors:
                on_result(cursor.fetchall())
        return
    connection.__dict__.setdefault("_rawsql_deferred", []).append((sql, list(params), on_result))


def _send(connection: Any, queued: list[Deferred], sql: str | None, params: Sequence[Any]) -> Any:
    """One round trip: the queued statements, then `sql` (when given); the cursor is left on
    the last statement's result."""
    connection.__dict__["_rawsql_deferred"] = []
    statements = [q[0] for q in queued] + ([sql] if sql is not None else [])
    values: list[Any] = [v for q in queued for v in q[1]]
    if sql is not None:
        values.extend(params)
    cursor = _execute_one(connection, ";\n".join(statements), values)
    with connection.wrap_database_errors:
        for index, (_, _, on_result) in enumerate(queued):
            if on_result is not None:
                on_result(cursor.fetchall())
            if index < len(statements) - 1:
                cursor.nextset()
    return cursor


def flush(using: str = "default") -> None:
    """Send the deferred statements now (one round trip; nothing when none is queued)."""
    connection = connections[using]
    queued = _deferred(connection)
    if queued:
        _send(connection, queued, None, ())


def prefetch(reads: Sequence[tuple[str, Sequence[Any]]], *, using: str = "default") -> None:
    """Run the deferred statements and `reads` in one round trip and keep the reads' rows for
    `fetch` / `select_models` of the same statements (no-op without pipelining)."""
    if not reads or not pipelining(using):
        return
    connection = connections[using]
    kept: dict[tuple[str, tuple[Any, ...]], list[Any]] = connection.__dict__.setdefault(
        "_rawsql_prefetched", {}
    )
    queued = list(_deferred(connection))
    for sql, params in reads[:-1]:
        key = (sql, tuple(params))
        queued.append((sql, list(params), lambda rows, key=key: kept.__setitem__(key, rows)))
    last_sql, last_params = reads[-1]
    connection.__dict__["_rawsql_deferred"] = []
    cursor = _send(connection, queued, last_sql, last_params)
    with connection.wrap_database_errors:
        kept[(last_sql, tuple(last_params))] = cursor.fetchall()


@contextmanager
def prefetched(
    reads: Sequence[tuple[str, Sequence[Any]]], *, using: str = "default"
) -> Iterator[None]:
    """`prefetch(reads)`; rows not taken by the end of the block are dropped."""
    prefetch(reads, using=using)
    try:
        yield
    finally:
        kept = connections[using].__dict__.get("_rawsql_prefetched")
        if kept:
            for sql, params in reads:
                kept.pop((sql, tuple(params)), None)


def _prefetched(connection: Any, sql: str, params: Sequence[Any]) -> list[Any] | None:
    kept = connection.__dict__.get("_rawsql_prefetched")
    if not kept:
        return None
    return kept.pop((sql, tuple(params)), None)


def pipeline_reset(using: str = "default", *, keep_prefetched: bool = False) -> None:
    """Drop what is deferred (and, unless `keep_prefetched`, kept) on the connection: the
    transaction ended, or a savepoint rolled back."""
    connection = connections[using]
    connection.__dict__.pop("_rawsql_deferred", None)
    if not keep_prefetched:
        connection.__dict__.pop("_rawsql_prefetched", None)


def pipeline_pending(using: str = "default") -> bool:
    connection = connections[using]
    return bool(_deferred(connection) or connection.__dict__.get("_rawsql_prefetched"))
