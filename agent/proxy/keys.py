"""Customer-key columns: which result columns hold configured customer identifiers, and their keyed hashes.

A RowDescription names each column's table by OID and attribute number, not by name. The proxy learns the
OID of a configured table from results of statements that read that table alone, then recognises the key
column by (OID, attnum) however a later query aliases it; until learned, a column named like a key column, in a
statement that reads the key's table, counts as the key. (An aliased key column read before any plain read of
its table is missed: the proxy never queries the catalog on its own.)

Values are hashed as HMAC-SHA256 over the value's text form normalised by `agent.customer_keys` (the one
normalisation custos has), so hashes from the proxy, the tailers and business events link.
"""

from __future__ import annotations

import hmac
import uuid
import weakref
from collections.abc import Iterable
from typing import Protocol
from dataclasses import dataclass

from agent.customer_keys import CustomerKeyError, normalise_customer_id
from agent.proxy.analysis import Analysis
from agent.proxy.pgwire import Column

_INT_TYPES = {20: 8, 21: 2, 23: 4}  # int8, int2, int4 → width
_TEXT_TYPES = {25, 1043, 1042, 19, 18}  # text, varchar, bpchar, name, char
_UUID = 2950


def hash_key(secret: bytes, value: str) -> str:
    """The same hash `CustomerKeyHasher(secret).hash(value)` gives; a value that is empty once normalised is
    hashed as it is (it cannot collide with a real identifier)."""
    try:
        text = normalise_customer_id(value)
    except CustomerKeyError:
        text = value
    return hmac.digest(secret, text.encode("utf-8"), "sha256").hex()


class Learner(Protocol):
    def keys_learned(self) -> None: ...


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """Where the key values sit in one result: column indexes and how to read each one."""

    indexes: tuple[int, ...]
    readers: tuple[tuple[int, int], ...]  # (type oid, format) per index


class KeyMatcher:
    def __init__(self, columns: Iterable[str], secret: bytes, cap: int = 1000) -> None:
        self.keys: dict[str, str] = {}  # column name → schema.table
        for full in columns:
            table, _, col = full.lower().rpartition(".")
            if "." not in table:
                table = f"public.{table}"
            self.keys[col] = table
        self.secret = secret
        self.cap = cap
        self._table_oids: dict[tuple[str, int], str] = {}  # (database, oid) → schema.table, learned
        self._key_attrs: set[tuple[str, int, int]] = set()  # (database, table oid, attnum) of key columns
        self.unreadable = 0  # values in a format this reader does not know
        self._owners = frozenset(self.keys.values())
        self._watchers: weakref.WeakSet[Learner] = weakref.WeakSet()

    @property
    def active(self) -> bool:
        return bool(self.keys) and bool(self.secret)

    def may_return(self, analysis: Analysis) -> bool:
        """Whether a statement's results may hold key columns: it reads or writes (RETURNING) a key's table,
        names a column called like a key, or was not fully understood. When False, `plan` finds no key column in
        any result of it: a column counts only if its table is the key's (a view's columns carry the view's
        OID) or the key's table is read."""
        if analysis.unknown:
            return True
        owners = self._owners
        if any(t in owners for t in analysis.tables_read) or any(t in owners for t in analysis.tables_written):
            return True
        names = self.keys
        return any(c.rpartition(".")[2] in names for c in analysis.columns)

    def may_hold(self, database: str, columns: tuple[Column, ...]) -> bool:
        """Whether a result with these columns may hold key values, now or once more is learned: a column named
        like a key, or one already known as a key column (under any alias). When False, `plan` finds none."""
        names, attrs = self.keys, self._key_attrs
        return any(c.table_oid and (c.name in names or (database, c.table_oid, c.attnum) in attrs) for c in columns)

    def watch(self, session: Learner) -> None:
        """Call `session.keys_learned()` when a key column is learned (an alias of it then counts): plans and
        lane templates made before must be made again. Sessions are held weakly."""
        self._watchers.add(session)

    def _learned(self) -> None:
        for session in list(self._watchers):
            session.keys_learned()

    def plan(self, database: str, columns: tuple[Column, ...], data: Analysis | None,
             formats: tuple[int, ...] | None = None) -> KeyPlan | None:
        """The key columns of a result, or None when it has none."""
        if not columns or not self.keys:
            return None
        tables = data.tables_read if data is not None else ()
        if len(tables) == 1:
            for c in columns:
                if c.table_oid:
                    if len(self._table_oids) < 100_000:
                        self._table_oids.setdefault((database, c.table_oid), tables[0])
                    break  # one table read: every column with an OID comes from it (or a view of it)
        idx: list[int] = []
        readers: list[tuple[int, int]] = []
        for i, c in enumerate(columns):
            if not c.table_oid:
                continue
            if (database, c.table_oid, c.attnum) not in self._key_attrs:
                owner = self.keys.get(c.name)
                if owner is None:
                    continue
                known = self._table_oids.get((database, c.table_oid))
                if known is not None and known != owner:
                    continue
                if known is None and owner not in tables:
                    continue
                if known == owner and len(self._key_attrs) < 100_000:
                    self._key_attrs.add((database, c.table_oid, c.attnum))
                    if self._watchers:
                        self._learned()
            idx.append(i)
            fmt = c.fmt if formats is None else (formats[i] if len(formats) > 1 else (formats[0] if formats else 0))
            readers.append((c.type_oid, fmt))
        return KeyPlan(tuple(idx), tuple(readers)) if idx else None

    def text(self, raw: bytes, type_oid: int, fmt: int) -> str | None:
        if fmt == 0:
            return raw.decode("utf-8", "replace")
        width = _INT_TYPES.get(type_oid)
        if width is not None and len(raw) == width:
            return str(int.from_bytes(raw, "big", signed=True))
        if type_oid in _TEXT_TYPES:
            return raw.decode("utf-8", "replace")
        if type_oid == _UUID and len(raw) == 16:
            return str(uuid.UUID(bytes=raw))
        self.unreadable += 1
        return None
