"""Tables and columns a parsed statement reads or writes, from sqlglot's tree.

Resolution follows SQL's own rules: a column belongs to the nearest query level (SELECT, or the UPDATE/DELETE/
INSERT/MERGE/COPY statement itself) whose sources can hold it, moving outwards for correlated references. Columns
of derived tables and CTEs are counted where they are read from a real table, inside them. `SELECT *` (and
`t.*`, `RETURNING *`, a whole-table COPY) reads every column of a real table source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from agent.sqlaudit.catalog import Knowledge

# Names that moved between sqlglot releases (the agent extra allows sqlglot>=25).
_SET_OPERATION = getattr(exp, "SetOperation", exp.Union)
_ALTER = getattr(exp, "Alter", None) or getattr(exp, "AlterTable")
_SCOPES = (exp.Select, exp.Update, exp.Delete, exp.Insert, exp.Merge, exp.Copy)
_WRITERS = (exp.Insert, exp.Update, exp.Delete, exp.Merge)


@dataclass
class Access:
    read: set[str] = field(default_factory=set)
    written: set[str] = field(default_factory=set)
    columns: set[str] = field(default_factory=set)  # schema.table.column, or a bare name when unresolved
    stars: set[str] = field(default_factory=set)  # tables read (or written) whole


@dataclass(frozen=True, slots=True)
class _Source:
    table: str | None  # qualified real table, or None for a derived table, CTE or function
    outputs: frozenset[str] | None = None  # a derived source's column names, when known


def _is_real(table: exp.Table) -> bool:
    return isinstance(table.this, exp.Identifier)


def _role_parent(node: exp.Expression) -> tuple[exp.Expression | None, str | None]:
    """The node that a table (or the schema wrapping it) hangs off, and under which argument."""
    parent, key = node.parent, node.arg_key
    if isinstance(parent, exp.Schema):
        parent, key = parent.parent, parent.arg_key
    return parent, key


class _Extractor:
    def __init__(self, root: exp.Expression, know: Knowledge) -> None:
        self.know = know
        self.root = root
        self.access = Access()
        self.ctes: dict[str, exp.CTE] = {}
        for cte in root.find_all(exp.CTE):
            if cte.alias:
                self.ctes[cte.alias] = cte
        self._sources: dict[int, dict[str, _Source]] = {}

    def qualify(self, table: exp.Table) -> str:
        return self.know.qualify(table.db or None, table.name)

    # -- tables ------------------------------------------------------------------------------------------------
    def is_cte_ref(self, table: exp.Table) -> bool:
        return not table.db and table.name in self.ctes

    def tables(self) -> None:
        for table in self.root.find_all(exp.Table):
            if not _is_real(table) or self.is_cte_ref(table) or isinstance(table.parent, exp.Lock):
                continue
            name = self.qualify(table)
            parent, key = _role_parent(table)
            if isinstance(parent, exp.Delete) and key == "tables":
                # MySQL's DELETE t1 FROM customers t1 JOIN …: the targets name FROM-clause aliases.
                source = self.sources(parent).get(table.name)
                self.access.written.add(source.table if source is not None and source.table else name)
            elif isinstance(parent, exp.Delete) and key == "this" and parent.args.get("tables"):
                self.access.read.add(name)
            elif isinstance(parent, _WRITERS) and key == "this":
                self.access.written.add(name)
                if parent.args.get("returning"):
                    self.access.read.add(name)
            elif isinstance(parent, exp.Copy) and key == "this":
                (self.access.written if parent.args.get("kind") else self.access.read).add(name)
                if not isinstance(table.parent, exp.Schema):
                    self.access.stars.add(name)
            elif isinstance(parent, exp.Into) or _under_ddl(table):
                self.access.written.add(name)
            else:
                self.access.read.add(name)

    # -- sources of one query level ----------------------------------------------------------------------------
    def sources(self, scope: exp.Expression) -> dict[str, _Source]:
        cached = self._sources.get(id(scope))
        if cached is not None:
            return cached
        found: dict[str, _Source] = {}
        nodes: list[exp.Expression] = []
        if not isinstance(scope, exp.Select):
            nodes.append(scope.this)
        from_ = scope.args.get("from_") or scope.args.get("from")
        if from_ is not None:
            nodes.append(from_.this)
            nodes.extend(from_.expressions or ())
        for key in ("using", "joins", "tables"):
            value = scope.args.get(key)
            nodes.extend(value if isinstance(value, list) else [value] if value is not None else [])
        while nodes:
            node = nodes.pop()
            if isinstance(node, exp.Join):
                node = node.this
            if isinstance(node, exp.Schema):
                node = node.this
            if not isinstance(node, exp.Expression):
                continue
            nodes.extend(j for j in node.args.get("joins") or () if isinstance(node, exp.Table))
            self._add_source(found, node)
        if isinstance(scope, exp.Insert) and isinstance(scope.this, (exp.Table, exp.Schema)):
            target = found.get(scope.this.alias_or_name if isinstance(scope.this, exp.Table) else scope.this.this.name)
            if target is not None:
                found.setdefault("excluded", target)  # ON CONFLICT … DO UPDATE SET x = excluded.x
        self._sources[id(scope)] = found
        return found

    def _add_source(self, found: dict[str, _Source], node: exp.Expression) -> None:
        alias = node.alias_or_name
        if isinstance(node, exp.Table) and _is_real(node):
            if self.is_cte_ref(node):
                query = self.ctes[node.name].this
                found[alias] = _Source(None, _outputs(query))
            else:
                found[alias] = _Source(self.qualify(node))
        elif isinstance(node, exp.Subquery):
            found[alias] = _Source(None, _outputs(node.this))
        elif alias:
            found[alias] = _Source(None, None)  # functions, UNNEST, LATERAL, VALUES

    # -- columns -----------------------------------------------------------------------------------------------
    def columns(self) -> None:
        for column in self.root.find_all(exp.Column):
            if isinstance(column.this, exp.Star):
                self.star(column, column.table)
            else:
                self.column(column)
        for select in self.root.find_all(exp.Select):
            if isinstance(select.parent, exp.Exists):
                continue  # EXISTS (SELECT * …) returns no column
            if any(isinstance(e, exp.Star) for e in select.expressions):
                for source in self.sources(select).values():
                    if source.table is not None:
                        self.access.stars.add(source.table)
        for node in self.root.find_all(exp.Returning):
            if any(isinstance(e, exp.Star) for e in node.expressions) and isinstance(node.parent, _WRITERS):
                target = node.parent.this
                if isinstance(target, exp.Schema):
                    target = target.this
                if isinstance(target, exp.Table) and _is_real(target):
                    self.access.stars.add(self.qualify(target))
        for schema in self.root.find_all(exp.Schema):  # INSERT INTO t (a, b) / COPY t (a, b)
            if isinstance(schema.parent, (exp.Insert, exp.Copy)) and isinstance(schema.this, exp.Table):
                table = self.qualify(schema.this)
                for ident in schema.expressions:
                    if isinstance(ident, exp.Identifier):
                        self.access.columns.add(f"{table}.{self._col(ident.name)}")
        for insert in self.root.find_all(exp.Insert):
            target = insert.this
            if isinstance(target, exp.Table) and _is_real(target) and not self.is_cte_ref(target):
                self.access.stars.add(self.qualify(target))  # no column list: every column is written

    def _col(self, name: str) -> str:
        return name.lower() if self.know.mysql else name

    def _scopes(self, node: exp.Expression) -> list[exp.Expression]:
        chain = []
        parent = node.parent
        while parent is not None:
            if isinstance(parent, _SCOPES):
                chain.append(parent)
            elif isinstance(parent, _SET_OPERATION) and not chain:
                return []  # ORDER BY of a UNION names its output columns
            parent = parent.parent
        return chain

    def column(self, column: exp.Column) -> None:
        name = self._col(column.name)
        qualifier = column.table
        chain = self._scopes(column)
        if qualifier:
            for scope in chain:
                source = self.sources(scope).get(qualifier)
                if source is not None:
                    if source.table is not None:
                        self.access.columns.add(f"{source.table}.{name}")
                    return
            if column.args.get("db"):  # schema.table.column written out in full
                self.access.columns.add(f"{self.know.qualify(column.db, qualifier)}.{name}")
            return
        for scope in chain:
            sources = self.sources(scope)
            resolved = self._resolve(name, sources, scope)
            if resolved is _NOT_HERE:
                continue
            if resolved is not None:
                self.access.columns.add(resolved)
            return
        if chain:
            self.access.columns.add(name)

    def _resolve(self, name: str, sources: dict[str, _Source], scope: exp.Expression) -> str | None | object:
        """A column's qualified name, None when it belongs to a derived source, _NOT_HERE to look outwards."""
        if not sources:
            return _NOT_HERE
        holders = set()
        complete_misses = 0
        for alias, source in sources.items():
            if source.table is None:
                if (source.outputs is not None and name in source.outputs) or alias == name:
                    return None  # a derived table's column, or a function source's own value (`FROM f() g … g`)
                continue
            known, complete = self.know.known_columns(source.table)
            if name in known:
                holders.add(source.table)
            elif complete:
                complete_misses += 1
        if len(holders) == 1:
            return f"{holders.pop()}.{name}"
        if isinstance(scope, exp.Select) and name in _aliases(scope):
            return None  # ORDER BY / GROUP BY of a select-list alias
        tables = {s.table for s in sources.values() if s.table is not None}
        if complete_misses == len(sources):
            return _NOT_HERE  # no source here has it: a correlated reference
        if len(tables) == 1 and all(s.table is not None for s in sources.values()):
            return f"{tables.pop()}.{name}"  # one table (INSERT's target also answers to `excluded`)
        if not tables:
            return None
        return name

    def star(self, column: exp.Column, qualifier: str) -> None:
        for scope in self._scopes(column):
            source = self.sources(scope).get(qualifier)
            if source is not None:
                if source.table is not None:
                    self.access.stars.add(source.table)
                return


_NOT_HERE = object()
_DDL = tuple(c for c in (exp.Create, exp.TruncateTable, exp.Drop, _ALTER, getattr(exp, "Comment", None)) if c)


def _under_ddl(table: exp.Table) -> bool:
    """True for the object a DDL statement acts on (CREATE INDEX ON t, ALTER TABLE t), not for tables its
    AS SELECT reads."""
    node = table.parent
    while node is not None:
        if isinstance(node, exp.Query):
            return False
        if isinstance(node, _DDL):
            return True
        node = node.parent
    return False


def _aliases(select: exp.Select) -> set[str]:
    return {e.alias for e in select.expressions if isinstance(e, exp.Alias)}


def _outputs(query: exp.Expression | None) -> frozenset[str] | None:
    if not isinstance(query, exp.Query):
        return None
    names = query.named_selects
    return None if "*" in names else frozenset(names)


def extract(root: exp.Expression, know: Knowledge, dialect: str) -> Access:
    root = normalize_identifiers(root, dialect=dialect)
    extractor = _Extractor(root, know)
    extractor.tables()
    extractor.columns()
    return extractor.access
