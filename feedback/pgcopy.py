"""Bulk writes through PostgreSQL COPY, for the intake's hot path.

A multi-row INSERT of a few thousand rows carries tens of thousands of bind
parameters, which psycopg rewrites and PostgreSQL parses on every batch: in
a profile of ``import_feedback`` that cost more than the rows themselves.
COPY streams the same rows without parameters. Rows that must skip or merge
with stored ones go through a temporary staging table and one
``INSERT ... SELECT ... ON CONFLICT``, so dedup and the rollup arithmetic
stay in the database exactly as with plain INSERTs.

Only for ``connection.vendor == "postgresql"``; callers keep their INSERT
path for SQLite. ``in_values`` also serves SQLite, with a plain list.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from django.db import connection, models
from django.db.models.expressions import RawSQL
from psycopg.types.json import Jsonb, JsonbBinaryDumper
from django.db.models.fields import AutoFieldMixin


def copy_rows(
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence],
    *,
    binary_types: Sequence[str] = (),
) -> None:
    """COPY rows into a table; a conflict raises, as a plain INSERT would.

    With ``binary_types`` (PostgreSQL type names such as ``int8`` or
    ``timestamptz``, one per column) the rows travel in the binary format,
    which both psycopg and the server convert faster than text. The types
    must be the columns' own: binary input is not cast.
    """
    quote = connection.ops.quote_name
    column_list = ", ".join(quote(column) for column in columns)
    statement = f"COPY {quote(table)} ({column_list}) FROM STDIN"
    if binary_types:
        statement += " (FORMAT BINARY)"
    with connection.cursor() as cursor:
        if "jsonb" in binary_types:
            # Only this cursor's adapters change, and only for the jsonb
            # columns named in ``binary_types``.
            cursor.cursor.adapters.register_dumper(None, _EncodedJsonbBinaryDumper)
        with cursor.cursor.copy(statement) as copy:
            if binary_types:
                copy.set_types(list(binary_types))
            write = copy.write_row
            for row in rows:
                write(row)


def in_values(values: Iterable, *, sql_type: str):
    """Return what a ``__in`` lookup should compare with for a batch of values.

    On PostgreSQL the values travel as one array (``SELECT unnest(%s::type[])``)
    rather than one bind parameter each, which psycopg would interpolate and
    PostgreSQL parse on every batch. Other databases get the list as it is.
    """
    values = list(values)
    if connection.vendor != "postgresql":
        return values
    return RawSQL(f"SELECT unnest(%s::{sql_type}[])", [values])


def json_encoded(text: str | bytes) -> Jsonb:
    """Wrap JSON text that is already encoded for a jsonb column of COPY."""
    return _EncodedJsonb(text, dumps=_as_is)


def _as_is(text: str | bytes) -> str | bytes:
    return text


class _EncodedJsonb(Jsonb):
    __slots__ = ()


class _EncodedJsonbBinaryDumper(JsonbBinaryDumper):
    """Send the text of ``json_encoded`` values as it is.

    psycopg's own dumper (3.3) checks the wrapper and calls its ``dumps``
    function on every value. This one only adds the jsonb version byte, and
    passes other values to psycopg's dumper.
    """

    def dump(self, obj: Any) -> bytes | None:
        if obj.__class__ is not _EncodedJsonb:
            return super().dump(obj)
        text = obj.obj
        return b"\x01" + (text if text.__class__ is bytes else text.encode())


_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def json_bytes(value: Any) -> bytes:
    """Encode a value as UTF-8 JSON for a jsonb column.

    The text means the same as ``json.dumps(value, ensure_ascii=False,
    default=str)`` and is written by orjson, several times faster. Values
    that orjson rejects go through ``json`` instead: integers past 64 bits,
    nesting deeper than 254 levels, keys that are not strings and lone
    surrogates. So do NaN and the infinities, which orjson writes as null
    and PostgreSQL rejects in jsonb, so that their chunk fails as before.
    NOTE: an Enum member that is not also a str or an int comes out as its
    value, where ``json`` would write ``str(member)``.
    """
    try:
        data = orjson.dumps(value, default=str, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return _JSON_ENCODER.encode(value).encode()
    if b"null" in data:
        # A real null, or NaN or an infinity, which only json distinguishes.
        return _JSON_ENCODER.encode(value).encode()
    return data


def copy_model_rows(
    model: type[models.Model], rows: Iterable[Mapping[str, Any]]
) -> None:
    """COPY rows given as ``{attname: value}`` into the model's table.

    A column that a row leaves out gets the field's Python default, read
    once per call, and the auto primary key comes from its sequence. Values
    go to psycopg as given, except that JSONField values other than None
    are serialised with ``json.dumps`` and the field's encoder. None stays
    SQL NULL, as in the ORM. So pass values that psycopg adapts: numbers,
    strings, aware datetimes, None. Skips ``get_db_prep_save`` and model
    instances, which cost more than the COPY itself in a profile of the
    SLA sweep.
    """
    fields = [
        field
        for field in model._meta.concrete_fields
        if not isinstance(field, AutoFieldMixin)
    ]
    defaults = [(field.attname, field.get_default()) for field in fields]
    json_encoders = [
        (position, field.encoder)
        for position, field in enumerate(fields)
        if isinstance(field, models.JSONField)
    ]

    def ordered(row: Mapping[str, Any]) -> list:
        values = [row.get(attname, default) for attname, default in defaults]
        for position, encoder in json_encoders:
            if values[position] is not None:
                values[position] = json.dumps(values[position], cls=encoder)
        return values

    copy_rows(
        model._meta.db_table,
        [field.column for field in fields],
        (ordered(row) for row in rows),
    )


def copy_insert(
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence],
    *,
    on_conflict: str,
    returning: str = "",
) -> list[tuple]:
    """Insert rows through a staging table with an ON CONFLICT clause.

    ``on_conflict`` is the clause after ``ON CONFLICT``, for example
    ``(source, external_id) DO NOTHING``. Rows go into the target in the
    order given, so ids follow the input order and concurrent writers that
    sort their rows lock them in the same order. Must run inside a
    transaction: the staging table is dropped at commit. Returns the
    ``RETURNING`` rows, if any.
    """
    quote = connection.ops.quote_name
    staging = quote(f"{table}_staging")
    column_list = ", ".join(quote(column) for column in columns)
    with connection.cursor() as cursor:
        # The staging table copies the column types and nothing else: no
        # constraints, indexes or defaults to check on the way in.
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DROP AS "
            f"SELECT 0::integer AS staging_position, {column_list} "
            f"FROM {quote(table)} WITH NO DATA"
        )
        # A second call in the same transaction finds the table still there.
        cursor.execute(f"TRUNCATE {staging}")
        with cursor.cursor.copy(
            f"COPY {staging} (staging_position, {column_list}) FROM STDIN"
        ) as copy:
            for position, row in enumerate(rows):
                copy.write_row((position, *row))
        statement = (
            f"INSERT INTO {quote(table)} ({column_list}) "
            f"SELECT {column_list} FROM {staging} ORDER BY staging_position "
            f"ON CONFLICT {on_conflict}"
        )
        if returning:
            statement += f" RETURNING {returning}"
        cursor.execute(statement)
        return cursor.fetchall() if returning else []
