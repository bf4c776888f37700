"""The rule engine's state kept in the store: `StoreState` is the in-memory state of rules/state.py, loaded from
the `rule_state` table at start and written back, changed slots only, at each checkpoint — in the same transaction
as the cursor that says which events that state has seen. After a crash, the events since the last checkpoint
are evaluated again from the store; alert ids are derived from what completed them, so nothing is sent twice.

Also here: the staff directory and work assignments, imported into their tables and read back for the rules.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from collections.abc import Iterable
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from collector.db import directory_accounts, directory_people, rule_cursors, rule_state, work_assignments
from rules.identity import Directory, Person
from rules.state import MemoryState

_json = msgspec.json.Encoder()
DIRECTORY_VERSION = "directory"  # a rule_cursors row bumped by every directory or assignment import


def _upsert(conn: Connection) -> Any:
    return sqlite_insert if conn.dialect.name == "sqlite" else pg_insert


@dataclass(frozen=True)
class Snapshot:
    """The rule state's changed slots as of one point of evaluation, encoded, and the cursor that belongs to it."""

    rows: list[tuple[str, str, str, Any]]  # (rule, part, group, dump: shares nothing with the live slot)
    gone: list[tuple[str, str, str]]  # slots dropped since the last checkpoint
    last_seq: int
    holes: list[int]

    def __len__(self) -> int:
        return len(self.rows) + len(self.gone)


class StoreState(MemoryState):
    """Rule state in memory, persisted to `rule_state` by `checkpoint`."""

    def __init__(self, engine: Engine, cursor_name: str = "stream") -> None:
        super().__init__()
        self.engine = engine
        self.cursor_name = cursor_name
        self.last_seq = 0
        self.holes: list[int] = []
        self.load()

    def load(self) -> None:
        self.data.clear()
        self.dirty.clear()
        with self.engine.connect() as conn:
            for rule_id, part, group, data in conn.execute(
                    select(rule_state.c.rule_id, rule_state.c.part, rule_state.c.group_key, rule_state.c.data)):
                if "\x00" in group:  # a linkage group kept under its old key (SQLite only): moved at the checkpoint
                    self.dirty.add((rule_id, part, group))
                    group = group.replace("\x00", "\x01")
                    self.dirty.add((rule_id, part, group))
                self.restore(rule_id, part, group, json.loads(data))
            row = conn.execute(select(rule_cursors.c.last_seq, rule_cursors.c.holes)
                               .where(rule_cursors.c.name == self.cursor_name)).first()
        if row is not None:
            self.last_seq, self.holes = int(row[0]), [int(h) for h in json.loads(row[1])]
        self.set_assignments(load_assignments(self.engine))

    def snapshot(self, last_seq: int, holes: Iterable[int]) -> Snapshot:
        """The changed slots' dumps (copies, see rules/windows.py) with the cursor they belong to; clears the
        marks. Cheap next to encoding and writing them: the caller takes it between two evaluations and may write
        it while evaluation goes on."""
        rows, gone = [], []
        for r, p, g, d in self.take_dirty():
            if d is None:
                gone.append((r, p, g))
            else:
                rows.append((r, p, g, d))
        return Snapshot(rows, gone, last_seq, sorted(holes))

    def unwritten(self, snap: Snapshot) -> None:
        """A snapshot's write failed: mark its slots changed again so the next checkpoint writes them."""
        self.dirty.update((r, p, g) for r, p, g, _ in snap.rows)
        self.dirty.update(snap.gone)

    def write(self, snap: Snapshot, conn: Connection | None = None) -> int:
        """Write a snapshot's slots and its cursor in one transaction (the caller's, when `conn` is given);
        returns the characters of JSON written."""
        if conn is None:
            with self.engine.begin() as c:
                size = self._write(c, snap)
        else:
            size = self._write(conn, snap)
        self.last_seq, self.holes = snap.last_seq, snap.holes
        return size

    def checkpoint(self, last_seq: int, holes: Iterable[int], conn: Connection | None = None) -> int:
        """Write the changed slots and the cursor in one transaction; returns how many slots were written."""
        snap = self.snapshot(last_seq, holes)
        try:
            self.write(snap, conn)
        except Exception:
            self.unwritten(snap)
            raise
        return len(snap)

    def _write(self, conn: Connection, snap: Snapshot) -> int:
        now = dt.datetime.now(dt.timezone.utc)
        ins = _upsert(conn)
        # Encoded one slot at a time, so the evaluating thread gets the interpreter in between.
        rows = [{"rule_id": r, "part": p, "group_key": g, "data": _json.encode(d).decode(), "updated_at": now}
                for r, p, g, d in snap.rows]
        for i in range(0, len(rows), 500):
            stmt = ins(rule_state)
            stmt = stmt.on_conflict_do_update(index_elements=["rule_id", "part", "group_key"],
                                              set_={"data": stmt.excluded.data, "updated_at": now})
            conn.execute(stmt, rows[i:i + 500])
        for r, p, g in snap.gone:
            conn.execute(delete(rule_state).where(rule_state.c.rule_id == r, rule_state.c.part == p,
                                                  rule_state.c.group_key == g))
        holes = json.dumps(snap.holes)
        stmt = ins(rule_cursors).values(name=self.cursor_name, last_seq=snap.last_seq, holes=holes, updated_at=now)
        conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={
            "last_seq": snap.last_seq, "holes": holes, "updated_at": now}))
        return sum(len(row["data"]) for row in rows)


# -- directory and assignments ----------------------------------------------------------------------------------


def _bump_directory_version(conn: Connection) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    current = conn.scalar(select(rule_cursors.c.last_seq).where(rule_cursors.c.name == DIRECTORY_VERSION)) or 0
    stmt = _upsert(conn)(rule_cursors).values(name=DIRECTORY_VERSION, last_seq=current + 1, holes="[]",
                                              updated_at=now)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"last_seq": current + 1,
                                                                           "updated_at": now}))


def directory_version(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(rule_cursors.c.last_seq).where(rule_cursors.c.name == DIRECTORY_VERSION))
                   or 0)


def import_directory(engine: Engine, people: Iterable[Person], *, replace: bool = True) -> int:
    """Store the directory (replacing the previous import unless `replace` is False); returns people stored."""
    people = list(people)
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        if replace:
            conn.execute(delete(directory_accounts))
            conn.execute(delete(directory_people))
        else:
            ids = [p.staff_id for p in people]
            conn.execute(delete(directory_accounts).where(directory_accounts.c.staff_id.in_(ids)))
            conn.execute(delete(directory_people).where(directory_people.c.staff_id.in_(ids)))
        if people:
            conn.execute(directory_people.insert(), [
                {"staff_id": p.staff_id, "name": p.name, "team": p.team, "manager": p.manager,
                 "end_date": p.end_date, "kind": p.kind, "shift": p.shift, "email": p.email, "updated_at": now}
                for p in people])
            accounts = {(kind, name, p.staff_id) for p in people
                        for kind, names in (("db", p.db_users), ("os", p.os_users)) for name in names}
            if accounts:
                conn.execute(directory_accounts.insert(),
                             [{"kind": k, "name": n, "staff_id": s} for k, n, s in sorted(accounts)])
        _bump_directory_version(conn)
    return len(people)


def load_directory(engine: Engine) -> list[Person]:
    with engine.connect() as conn:
        accounts: dict[str, dict[str, list[str]]] = {}
        for kind, name, staff in conn.execute(select(directory_accounts.c.kind, directory_accounts.c.name,
                                                     directory_accounts.c.staff_id)):
            accounts.setdefault(staff, {"db": [], "os": []})[kind].append(name)
        out = []
        for row in conn.execute(select(directory_people)).mappings():
            acc = accounts.get(row["staff_id"], {"db": [], "os": []})
            out.append(Person(staff_id=row["staff_id"], name=row["name"], team=row["team"], manager=row["manager"],
                              end_date=row["end_date"], db_users=tuple(sorted(acc["db"])),
                              os_users=tuple(sorted(acc["os"])), kind=row["kind"], shift=row["shift"],
                              email=row["email"]))
        return out


def merged_directory(base: Directory, people: Iterable[Person]) -> Directory:
    """The site context's people, then the imported ones (an import wins for the same staff id)."""
    merged = {p.staff_id: p for p in base.people.values()}
    merged.update({p.staff_id: p for p in people})
    return Directory.of(merged.values())


def import_assignments(engine: Engine, rows: Iterable[tuple[str, str]], source: str) -> int:
    """Replace the assignments from `source` with (staff_id, customer_key) rows; returns the count stored."""
    unique = sorted(set(rows))
    with engine.begin() as conn:
        conn.execute(delete(work_assignments).where(work_assignments.c.source == source))
        for i in range(0, len(unique), 5000):
            conn.execute(work_assignments.insert(), [{"staff_id": s, "customer_key": k, "source": source}
                                                     for s, k in unique[i:i + 5000]])
        _bump_directory_version(conn)
    return len(unique)


def load_assignments(engine: Engine) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for staff, key in conn.execute(select(work_assignments.c.staff_id, work_assignments.c.customer_key)):
            out.setdefault(staff, set()).add(key)
    return {s: frozenset(k) for s, k in out.items()}


def count_rows(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)
