"""Checking each agent's hash chain on ingest: events deleted from a spool, forged or replayed ones, a new spool
under an old credential — each one an alert.

An agent's spool numbers every event (`chain_seq`, from 1) and names the SHA-256 of the previous event's bytes
(`chain_prev`; agent/spool.py). Per agent credential the collector keeps the newest number and hash it accepted
(`agent_chains`) and, for the events of each batch in the order sent, decides:

- the next number, naming the hash it expects: the chain goes on;
- a number beyond the next: a **gap** (events lost between spool and collector);
- the next number naming another hash, or a number already passed that arrives as a new event: a **fork**;
- a lower number that does not start a chain: **backwards**; number 1 after others: a **restart**.

Events sent again after a lost acknowledgement are duplicates of stored ones and pass unjudged. The hashes are of
the events' bytes exactly as sent, which only the batch body still has; they are read from it here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from agent.events import Envelope
from collector.db import agent_chains
from collector.integrity import integrity_alert
from rules.alerts import Alert

log = logging.getLogger("custos.chain")


@dataclass(frozen=True, slots=True)
class Link:
    """One chained event of a batch, as far as its chain goes."""

    event_id: str
    seq: int
    prev: str | None
    digest: str | None  # SHA-256 of its bytes as sent; None when the body could not be read back exactly
    new: bool  # stored by this batch; False for a duplicate sent again
    ts: dt.datetime


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: str
    event_id: str


@dataclass(frozen=True, slots=True)
class Finding:
    """Something wrong with a chain: `what` is gap, fork, backwards or restart."""

    what: str
    link: Link
    expected_seq: int
    detail: str


@dataclass(frozen=True, slots=True)
class Chained:
    """The chained events of a batch in batch order, and the SHA-256 (hex) of each one's bytes as sent; made
    before the batch is written, so that the write's transaction only compares."""

    events: list[Envelope]
    digests: list[str] | None  # None when the batch had to be read leniently: the bytes are not the agent's


def chained(pieces: Sequence[bytes] | None, events: Sequence[tuple[int, Envelope]]) -> Chained:
    """The chained events of a parsed batch (index in the batch, event). `pieces`: each event's bytes as sent, by
    index (collector/ingest.py), whose SHA-256 the next event names; None when the batch had to be read
    leniently and the bytes are not the agent's (the hashes are then unknown)."""
    picked = [(i, e) for i, e in events if e.chain_seq is not None]
    if pieces is None:
        return Chained([e for _, e in picked], None)
    sha256 = hashlib.sha256
    return Chained([e for _, e in picked], [sha256(pieces[i]).hexdigest() for i, _ in picked])


def links(batch: Chained, inserted: Collection[str]) -> list[Link]:
    """`batch` as links to `follow`; `inserted`: the ids the batch stored (the others are duplicates)."""
    new = set(inserted)
    digests = batch.digests or [None] * len(batch.events)
    return [Link(e.id, int(e.chain_seq), e.chain_prev, d, e.id in new, e.ts)  # type: ignore[arg-type]
            for e, d in zip(batch.events, digests)]


def advance(head: Head | None, batch: Chained) -> Head | None:
    """The new head when every event of `batch`, all of them new, goes on from `head` exactly (the next number,
    naming the hash before it), as almost every batch does; None when `follow` must judge the batch. One pass
    over the events, no object per event: this runs for every event stored."""
    if batch.digests is None:
        return None
    seq, last, last_id = (head.seq, head.hash, head.event_id) if head is not None else (0, "", "")
    for e, digest in zip(batch.events, batch.digests):
        if e.chain_seq != seq + 1 or (last and e.chain_prev is not None and e.chain_prev != last):
            return None
        seq, last, last_id = seq + 1, digest, e.id
    return Head(seq, last, last_id)


def follow(head: Head | None, batch: Sequence[Link], refused: int = 0) -> tuple[Head | None, list[Finding]]:
    """Walk `batch` on from `head`; the new head and what was wrong. `refused`: events of this batch the collector
    refused as malformed (their numbers are missing for a reason the agent already knows)."""
    found: list[Finding] = []
    allowance = refused
    for link in batch:
        if head is None:
            if link.seq != 1 and link.new:
                found.append(Finding("gap", link, 1, f"its chain begins at number {link.seq}: the first "
                                                      f"{link.seq - 1} events never arrived"))
            head = Head(link.seq, link.digest or "", link.event_id)
            continue
        expected = head.seq + 1
        if link.seq <= head.seq:
            if not link.new or (link.seq == head.seq and link.digest is not None and link.digest == head.hash):
                continue  # sent again after a lost acknowledgement (or judged first in a resend that overtook it)
            if link.seq == 1 and link.prev is None:
                found.append(Finding("restart", link, expected, f"its chain starts again at 1 after {head.seq} "
                                                                "events: a new spool under this credential"))
                head = Head(1, link.digest or "", link.event_id)
            elif link.seq == head.seq:
                found.append(Finding("fork", link, expected, f"number {link.seq} arrived a second time as a "
                                                             "different event: a replayed or forged spool"))
            else:
                found.append(Finding("backwards", link, expected, f"number {link.seq} arrived after "
                                                                  f"{head.seq}: the chain went backwards"))
            continue
        if link.seq > expected:
            missing = link.seq - expected
            if missing <= allowance:
                allowance -= missing
            else:
                found.append(Finding("gap", link, expected, f"{missing} events (numbers {expected}–{link.seq - 1}) "
                                                            "never arrived: deleted from the spool or dropped"))
        elif head.hash and link.prev is not None and link.prev != head.hash:
            found.append(Finding("fork", link, expected, f"number {link.seq} does not follow event "
                                                         f"{head.event_id}: the events before it were changed or "
                                                         "replaced"))
        head = Head(link.seq, link.digest or "", link.event_id)
    return head, found


TITLES = {
    "gap": "Events missing from an agent's chain",
    "fork": "An agent's chain forked",
    "backwards": "An agent's chain went backwards",
    "restart": "An agent's chain started again",
}


_SELECT = select(agent_chains.c.last_seq, agent_chains.c.last_hash, agent_chains.c.last_event_id).where(
    agent_chains.c.agent == bindparam("agent"))
_SELECT_LOCKED = _SELECT.with_for_update()
_UPSERT = {name: insert(agent_chains).on_conflict_do_update(index_elements=["agent"], set_={
    c: getattr(insert(agent_chains).excluded, c) for c in ("last_seq", "last_hash", "last_event_id", "updated_at")})
    for name, insert in (("sqlite", sqlite_insert), ("postgresql", pg_insert))}


_GO_ON = update(agent_chains).where(
    agent_chains.c.agent == bindparam("b_agent"), agent_chains.c.last_seq == bindparam("b_old_seq"),
    agent_chains.c.last_hash == bindparam("b_old_hash"), agent_chains.c.last_event_id == bindparam("b_old_event_id"),
).values(last_seq=bindparam("b_seq"), last_hash=bindparam("b_hash"), last_event_id=bindparam("b_event_id"),
         updated_at=bindparam("b_at"))


def _all_new(batch: Chained, inserted: Collection[str]) -> bool:
    return len(inserted) >= len(batch.events) and set(inserted).issuperset(e.id for e in batch.events)


def go_on(conn: Connection, agent: str, head: Head, batch: Chained, inserted: Collection[str]) -> Head | None:
    """The common case in one statement: when `batch`, all of it new, goes on exactly from `head` (the agent's
    head as this process last stored it) and the stored head is still `head` (the row locked as it is updated:
    another collector's batch in between makes it not match), move it on and return the new head; None when
    `judge` must look (nothing was written then)."""
    new_head = advance(head, batch) if batch.events and _all_new(batch, inserted) else None
    if new_head is None:
        return None
    moved = conn.execute(_GO_ON, {
        "b_agent": agent, "b_old_seq": head.seq, "b_old_hash": head.hash, "b_old_event_id": head.event_id,
        "b_seq": new_head.seq, "b_hash": new_head.hash, "b_event_id": new_head.event_id,
        "b_at": dt.datetime.now(dt.timezone.utc)})
    return new_head if moved.rowcount == 1 else None


def judge(conn: Connection, agent: str, batch: Chained, inserted: Collection[str], refused: int = 0
          ) -> tuple[Head | None, list[Alert]]:
    """Follow `agent`'s chain through `batch` in the transaction of `conn`, the one that stored the batch (the
    agent's row locked on PostgreSQL, so that two collectors cannot judge the same agent at once), and store the
    new head; the head and the alerts to store once it commits. `inserted`: the ids the batch stored."""
    postgresql = conn.dialect.name == "postgresql"
    row = conn.execute(_SELECT_LOCKED if postgresql else _SELECT, {"agent": agent}).first()
    head = Head(int(row[0]), row[1], row[2]) if row is not None else None
    if not batch.events:
        return head, []
    found: list[Finding] = []
    new_head = advance(head, batch) if _all_new(batch, inserted) else None
    if new_head is None:
        new_head, found = follow(head, links(batch, inserted), refused)
    if new_head is not None and new_head != head:
        conn.execute(_UPSERT[conn.dialect.name], {
            "agent": agent, "last_seq": new_head.seq, "last_hash": new_head.hash, "last_event_id": new_head.event_id,
            "updated_at": dt.datetime.now(dt.timezone.utc)})
    for f in found:
        log.warning("agent %s chain %s at number %d: %s", agent, f.what, f.link.seq, f.detail)
    return new_head, [integrity_alert(
        f"custos.chain_{f.what}", TITLES[f.what], agent, anchor=f.link.event_id, ts=f.link.ts,
        evidence=[f.link.event_id], summary=f"Agent {agent}: {f.detail}.",
        measures={"seq": f.link.seq, "expected_seq": f.expected_seq}) for f in found]
