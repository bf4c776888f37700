"""What the analyser knows about the database: which columns hold which class of customer data, which columns
each table has, and how an unqualified table name is qualified.

Names are compared case-insensitively (configuration is written by people; PostgreSQL folds unquoted names to
lower case and MySQL column names ignore case).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.errors import ConfigError

_CLASS = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _split(name: str, parts: int, what: str) -> tuple[str, ...]:
    pieces = tuple(p.strip().strip('"`').lower() for p in name.split("."))
    if len(pieces) != parts or not all(pieces):
        shape = "schema.table.column" if parts == 3 else "schema.table"
        raise ConfigError(f"{what} {name!r} must be written as {shape} (for MySQL: database in place of schema)")
    return pieces


@dataclass(frozen=True, eq=False)
class SensitiveMap:
    """`schema.table.column` → data class (id_number, bank_card, phone, name, address, …).

    Build it with `SensitiveMap.of({...})`; identity is what caches key on, so build it once per configuration.
    """

    classes: Mapping[str, str] = field(default_factory=dict)
    # table → {column: class}; and for MySQL statements without a current database, table name alone → same.
    by_table: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)
    by_bare_table: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, mapping: Mapping[str, str]) -> SensitiveMap:
        classes: dict[str, str] = {}
        by_table: dict[str, dict[str, str]] = {}
        by_bare: dict[str, dict[str, str]] = {}
        for name, data_class in mapping.items():
            schema, table, column = _split(name, 3, "sensitive column")
            if not isinstance(data_class, str) or not _CLASS.match(data_class):
                raise ConfigError(
                    f"sensitive class {data_class!r} for {name!r} must be lower-case letters, digits and _ "
                    "(for example id_number, bank_card, phone, name, address)"
                )
            classes[f"{schema}.{table}.{column}"] = data_class
            by_table.setdefault(f"{schema}.{table}", {})[column] = data_class
            by_bare.setdefault(table, {})[column] = data_class
        return cls(classes, by_table, by_bare)

    def columns_of(self, table: str) -> Mapping[str, str]:
        """{column: class} of a qualified table (or of a bare table name when no schema could be known)."""
        key = table.lower()
        if "." in key:
            return self.by_table.get(key, {})
        return self.by_bare_table.get(key, {})

    def class_of(self, table: str, column: str) -> str | None:
        return self.columns_of(table).get(column.lower())


@dataclass(frozen=True, eq=False)
class Catalogue:
    """The full column list of some tables, so `SELECT *` can be expanded and unqualified columns placed."""

    tables: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, tables: Mapping[str, Iterable[str]]) -> Catalogue:
        out: dict[str, tuple[str, ...]] = {}
        for name, columns in tables.items():
            schema, table = _split(name, 2, "catalogue table")
            out[f"{schema}.{table}"] = tuple(c.strip().lower() for c in columns)
        return cls(out)

    def columns_of(self, table: str) -> tuple[str, ...] | None:
        key = table.lower()
        if "." in key:
            return self.tables.get(key)
        for name, columns in self.tables.items():  # a bare MySQL table name: the first database that has it
            if name.split(".", 1)[1] == key:
                return columns
        return None


EMPTY_SENSITIVE = SensitiveMap()
EMPTY_CATALOGUE = Catalogue()


@dataclass(frozen=True, slots=True)
class Knowledge:
    """Everything resolution needs beside the statement: naming rules and the two maps."""

    mysql: bool
    default_schema: str | None
    sensitive: SensitiveMap
    catalogue: Catalogue

    def qualify(self, schema: str | None, table: str) -> str:
        if schema:
            return f"{schema}.{table}"
        if not self.mysql and table.startswith("pg_"):
            return f"pg_catalog.{table}"  # pg_catalog is searched before any schema on the search_path
        return f"{self.default_schema}.{table}" if self.default_schema else table

    def known_columns(self, table: str) -> tuple[frozenset[str], bool]:
        """The columns a table is known to have, and whether that list is complete (from the catalogue)."""
        listed = self.catalogue.columns_of(table)
        sensitive = self.sensitive.columns_of(table)
        if listed is not None:
            return frozenset(listed) | frozenset(sensitive), True
        return frozenset(sensitive), False
