"""Statements run for many rows at once, the way each backend does that fastest.

The store's writer applies a whole group commit in a few statements: these classes turn
"this statement, for these N rows" into SQLAlchemy ``executemany`` (PostgreSQL: asyncpg
pipelines it) or, on SQLite, into a few multi-row statements handed to the driver as they
are. Split from ``store.py``, which decides *what* to write; this module only knows *how*.
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter
from typing import Any, Iterable

from sqlalchemy import Connection, and_, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite

def _column_default(column) -> Any:
    """The value an insert of whole rows puts in a column a row leaves out."""
    d = column.default
    if column.server_default is not None or (d is not None and not getattr(d, "is_scalar", False)):
        # Bulk inserts name every column; a server-side or computed default would need them
        # to leave that column out instead.
        raise TypeError(f"{column}: only plain scalar defaults are supported by the bulk insert")
    return d.arg if d is not None else None


_SQLITE_MAX_PARAMS = 32766
_SQLITE_MAX_ROWS = 256


def _ladder(n: int, cap: int) -> list[int]:
    """Row counts to run ``n`` rows in: full chunks of ``cap``, then the binary digits of
    the rest — few distinct statement texts (the driver caches prepared statements by
    text), few statements per batch."""
    sizes = [cap] * (n // cap)
    rest, bit = n % cap, cap
    while rest:
        bit >>= 1
        if rest & bit:
            sizes.append(bit)
            rest -= bit
    return sizes


class Bulk:
    """One kind of statement run for many rows, given as tuples in the order of ``names``.

    Elsewhere than SQLite: SQLAlchemy's ``executemany`` of a Core statement (with each
    driver's own parameter handling; asyncpg pipelines it). On SQLite: multi-row statements
    handed to the driver as they are (no per-row SQLAlchemy processing, none is needed for
    the types stored there), a few statements per batch rather than one per row. That
    matters beyond the statement overhead: the sqlite3 module lets go of the GIL around
    every step, i.e. for every row of an ``executemany``, and on the writer thread each of
    those is a chance to wait for the event loop's thread to hand the GIL back.
    """

    __slots__ = ("stmt", "names", "_sql", "_cap")

    def __init__(self, stmt, names: tuple[str, ...]) -> None:
        self.stmt = stmt
        self.names = names
        self._sql: dict[int, str] = {}
        cap = _SQLITE_MAX_ROWS
        while cap * len(names) > _SQLITE_MAX_PARAMS:
            cap >>= 1
        self._cap = cap

    def run(self, conn: Connection, rows: list[tuple]) -> None:
        if not rows:
            return
        if conn.dialect.name != "sqlite":
            names = self.names
            conn.execute(self.stmt, [dict(zip(names, row)) for row in rows])
            return
        rows = self._sqlite_rows(rows)
        i = 0
        for size in _ladder(len(rows), self._cap):
            sql = self._sql.get(size)
            if sql is None:
                sql = self._sql[size] = self._sqlite_sql(size)
            chunk = rows[i : i + size]
            i += size
            conn.exec_driver_sql(sql, tuple(chain.from_iterable(chunk)))

    def _sqlite_rows(self, rows: list[tuple]) -> list[tuple]:
        return rows

    def _sqlite_sql(self, n: int) -> str:
        raise NotImplementedError


def quote(name: str) -> str:
    return sqlite.dialect().identifier_preparer.quote(name)


def _values(n: int, width: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return ", ".join([row] * n)


class BulkInsert(Bulk):
    """Whole rows into ``table`` (columns in table order), optionally skipping rows whose
    ``skip_conflicts_on`` key exists."""

    __slots__ = ("table", "defaults", "conflict", "_get")

    def __init__(self, table, skip_conflicts_on: tuple[str, ...] = ()) -> None:
        super().__init__(table.insert(), tuple(c.name for c in table.columns))
        self.table = table
        self.defaults = tuple(_column_default(c) for c in table.columns)
        self.conflict = skip_conflicts_on
        names = self.names
        self._get = itemgetter(*names) if len(names) > 1 else (lambda d: (d[names[0]],))

    def statement_for(self, dialect_name: str):
        if not self.conflict:
            return self.stmt
        insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
        return insert(self.table).on_conflict_do_nothing(index_elements=list(self.conflict))

    def run(self, conn: Connection, rows: list[tuple]) -> None:
        if self.conflict and conn.dialect.name != "sqlite":
            if rows:
                conn.execute(self.statement_for(conn.dialect.name), [dict(zip(self.names, r)) for r in rows])
            return
        super().run(conn, rows)

    def rows(self, dicts: Iterable[dict]) -> list[tuple]:
        # Rows usually name every column: one C-level itemgetter call per row. A row that
        # leaves a column out (its default applies) takes the per-column path.
        get, names, defaults = self._get, self.names, self.defaults
        out = []
        append = out.append
        for d in dicts:
            try:
                append(get(d))
            except KeyError:
                append(tuple([d.get(n, dv) for n, dv in zip(names, defaults)]))
        return out

    def _sqlite_sql(self, n: int) -> str:
        sql = (
            f"INSERT INTO {quote(self.table.name)} ({', '.join(quote(c) for c in self.names)}) "
            f"VALUES {_values(n, len(self.names))}"
        )
        if self.conflict:
            sql += f" ON CONFLICT ({', '.join(quote(c) for c in self.conflict)}) DO NOTHING"
        return sql


class BulkUpdate(Bulk):
    """``UPDATE table SET set_cols WHERE key_cols`` with values per row; rows are
    ``(*set values, *key values)``. When a key comes twice, its last row wins (as it would
    with one statement per row, in order)."""

    __slots__ = ("table", "set_cols", "key_cols")

    def __init__(self, table, set_cols: tuple[str, ...], key_cols: tuple[str, ...]) -> None:
        stmt = (
            update(table)
            .where(and_(*(table.c[k] == bindparam("k_" + k) for k in key_cols)))
            .values({c: bindparam("v_" + c) for c in set_cols})
        )
        super().__init__(stmt, (*("v_" + c for c in set_cols), *("k_" + k for k in key_cols)))
        self.table = table
        self.set_cols = set_cols
        self.key_cols = key_cols

    def _sqlite_rows(self, rows: list[tuple]) -> list[tuple]:
        nset = len(self.set_cols)
        last = {row[nset:]: row for row in rows}
        return rows if len(last) == len(rows) else list(last.values())

    def _sqlite_sql(self, n: int) -> str:
        # UPDATE … FROM (VALUES …): each row finds its target through the primary key. (A
        # row-value "(a, b) IN (VALUES …)" would scan the whole table instead.)
        t = quote(self.table.name)
        nset = len(self.set_cols)
        sets = ", ".join(f"{quote(c)} = v.column{i + 1}" for i, c in enumerate(self.set_cols))
        keys = " AND ".join(f"{t}.{quote(k)} = v.column{nset + i + 1}" for i, k in enumerate(self.key_cols))
        return f"UPDATE {t} SET {sets} FROM (VALUES {_values(n, len(self.names))}) AS v WHERE {keys}"


class BulkById(Bulk):
    """A statement on rows picked by id: ``DELETE`` or a fixed ``SET``; rows are ``(id,)``."""

    __slots__ = ("table", "set_sql")

    def __init__(self, table, stmt, set_sql: str | None = None) -> None:
        super().__init__(stmt, ("k_id",))
        self.table = table
        self.set_sql = set_sql

    def _sqlite_sql(self, n: int) -> str:
        t = quote(self.table.name)
        head = f"DELETE FROM {t}" if self.set_sql is None else f"UPDATE {t} SET {self.set_sql}"
        return f"{head} WHERE {quote('id')} IN ({', '.join('?' * n)})"


class Many(Bulk):
    """One statement per row (``executemany``) on SQLite too: for the rare ones."""

    __slots__ = ("_compiled",)

    def __init__(self, stmt, names: tuple[str, ...]) -> None:
        super().__init__(stmt, names)
        self._compiled: tuple[str, tuple[int, ...] | None] | None = None

    def run(self, conn: Connection, rows: list[tuple]) -> None:
        if not rows or conn.dialect.name != "sqlite":
            super().run(conn, rows)
            return
        if self._compiled is None:
            c = self.stmt.compile(dialect=conn.dialect)
            order = tuple(c.positiontup or ())
            if sorted(order) != sorted(self.names):
                raise RuntimeError(f"statement parameters {order} are not {self.names}")
            perm = None if order == self.names else tuple(self.names.index(n) for n in order)
            self._compiled = (c.string, perm)
        sql, perm = self._compiled
        if perm is not None:
            rows = [tuple(row[i] for i in perm) for row in rows]
        conn.exec_driver_sql(sql, rows)
