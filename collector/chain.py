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

from sqlalchemy import Engine, select

from agent.events import Envelope
from collector.alerts import AlertStore
from collector.db import agent_chains
from collector.integrity import integrity_alert, upsert

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


def links(pieces: Sequence[bytes] | None, events: Sequence[tuple[int, Envelope]], inserted: Collection[str]
          ) -> list[Link]:
    """The chained events of a parsed batch (index in the batch, event) in batch order. `pieces`: each event's
    bytes as sent, by index (collector/ingest.py), whose SHA-256 the next event names; None when the batch had
    to be read leniently and the bytes are not the agent's (the hashes are then unknown)."""
    chained = [(i, e) for i, e in events if e.chain_seq is not None]
    if not chained:
        return []
    new = set(inserted)
    return [Link(e.id, int(e.chain_seq), e.chain_prev,  # type: ignore[arg-type]
                 None if pieces is None else hashlib.sha256(pieces[i]).hexdigest(), e.id in new, e.ts)
            for i, e in chained]


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


def check(engine: Engine, agent: str, batch: Sequence[Link], refused: int = 0) -> list[str]:
    """Follow `agent`'s chain through `batch` in one transaction (the row locked on PostgreSQL, so that two
    collectors cannot judge the same agent at once); store the new head and the alerts. Returns the alert ids."""
    if not batch:
        return []
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        q = select(agent_chains.c.last_seq, agent_chains.c.last_hash, agent_chains.c.last_event_id).where(
            agent_chains.c.agent == agent)
        if engine.dialect.name == "postgresql":
            q = q.with_for_update()
        row = conn.execute(q).first()
        head = Head(int(row[0]), row[1], row[2]) if row is not None else None
        new_head, found = follow(head, batch, refused)
        if new_head is not None and new_head != head:
            upsert(conn, engine, agent_chains, {"agent": agent}, {
                "last_seq": new_head.seq, "last_hash": new_head.hash, "last_event_id": new_head.event_id,
                "updated_at": now})
    if not found:
        return []
    alerts = [integrity_alert(f"custos.chain_{f.what}", TITLES[f.what], agent, anchor=f.link.event_id,
                              ts=f.link.ts, evidence=[f.link.event_id],
                              summary=f"Agent {agent}: {f.detail}.",
                              measures={"seq": f.link.seq, "expected_seq": f.expected_seq})
              for f in found]
    for f in found:
        log.warning("agent %s chain %s at number %d: %s", agent, f.what, f.link.seq, f.detail)
    return AlertStore(engine).save(alerts)
