"""The engine: events in (msgspec event structs), alerts out, through a `State`.

For each event: learn socket ties from staff agents' `db.session` events, find the person behind the event
(staff id; else the OS user tied to the client socket; else the OS, end or database user through the directory),
then give it to every enabled rule that reads its kind. A rule that raises is counted and logged, never fatal.
Time is the event's own: a late event is evaluated at its timestamp. `tick(now)` lets absence rules notice
silence.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from agent.events import KINDS, Envelope, Event
from rules.alerts import Alert
from rules.context import Context
from rules.fields import Fact
from rules.identity import Person
from rules.model import Rule
from rules.state import State
from rules.windows import Mark

log = logging.getLogger("custos.rules")

_KIND_OF: dict[type[Any], str] = {cls: kind for kind, cls in KINDS.items()}
TIE_TTL = 12 * 3600.0
IDENTITY = "_identity"


def as_event(obj: Envelope | dict[str, Any]) -> Envelope:
    """An event struct from a struct or a decoded JSON mapping."""
    if isinstance(obj, Envelope):
        return obj
    return msgspec.convert(obj, Event)  # type: ignore[arg-type,no-any-return]


class Engine:
    def __init__(self, rules: Sequence[Rule], ctx: Context, state: State) -> None:
        self.ctx = ctx
        self.state = state
        self.rules = [r for r in rules if r.enabled]
        self.evaluators = [r.bind(ctx) for r in self.rules]
        self.by_kind: dict[str, list[Any]] = {}
        for ev in self.evaluators:
            for kind in ev.rule.events:
                self.by_kind.setdefault(kind, []).append(ev)
        self.errors: Counter[str] = Counter()
        self.evaluated = 0
        self.alerts = 0
        self.watermark: float | None = None
        self.swept_at: float | None = None
        self._tied_program: str | None = None
        self.sweep_every = 600.0  # event-time seconds between sweeps of stale state

    # -- identity -----------------------------------------------------------------------------------------------

    def _learn_tie(self, event: Envelope) -> None:
        p = event.payload  # type: ignore[attr-defined]
        os_user = event.actor.os_user
        if os_user and p.client_addr and p.client_port and event.source.type != "proxy":
            program = p.process.name if p.process is not None else p.application_name
            key = f"{p.client_addr}:{p.client_port}"
            self.state.slot(IDENTITY, "mark", key, Mark).value = [os_user, program, event.ts.timestamp()]

    def resolve(self, event: Envelope, kind: str) -> tuple[Person | None, str, str | None]:
        """(person or None, group key of the actor, origin address); `_tied_program` keeps the program a socket
        tie named, for the fact being built."""
        self._tied_program = None
        a = event.actor
        p = event.payload  # type: ignore[attr-defined]
        d = self.ctx.directory
        addr = getattr(p, "client_addr", None)
        origin = addr or event.host
        if a.staff_id:
            return d.people.get(a.staff_id), a.staff_id, origin
        person = None
        os_user = a.os_user
        if addr and kind.startswith("db.") and not os_user:
            port = getattr(p, "client_port", None)
            if port:
                tie = self.state.peek(IDENTITY, "mark", f"{addr}:{port}")
                if tie is not None and abs(event.ts.timestamp() - tie.value[2]) < TIE_TTL:
                    os_user, self._tied_program = tie.value[0], tie.value[1]
        if os_user:
            person = d.by_os_user(os_user)
        if person is None and a.end_user:
            person = d.by_os_user(a.end_user) or d.by_db_user(a.end_user)
        if person is None and a.db_user:
            person = d.by_db_user(a.db_user)
        if person is not None:
            return person, person.staff_id, origin
        if os_user:
            return None, f"os:{os_user}", origin
        if a.end_user:
            return None, f"user:{a.end_user}", origin
        if a.db_user:
            return None, f"db:{a.db_user}", origin
        return None, f"host:{event.host}", origin

    # -- evaluation ---------------------------------------------------------------------------------------------

    def fact(self, event: Envelope) -> Fact:
        kind = _KIND_OF[type(event)]
        person, who, origin = self.resolve(event, kind)
        f = Fact(event, kind, person, who, origin, self.ctx.site_of(origin))
        f.tied_program = self._tied_program
        return f

    def evaluate(self, event: Envelope | dict[str, Any]) -> list[Alert]:
        """Evaluate one event against every rule that reads its kind; the alerts it completed."""
        event = as_event(event)
        kind = _KIND_OF[type(event)]
        self.evaluated += 1
        if kind == "db.session":
            self._learn_tie(event)
        evaluators = self.by_kind.get(kind)
        if not evaluators:
            return []
        f = self.fact(event)
        if self.watermark is None or f.t > self.watermark:
            self.watermark = f.t
        out: list[Alert] = []
        state = self.state
        for ev in evaluators:
            try:
                if ev.accepts(f):
                    alert = ev.observe(f, state)
                    if isinstance(alert, list):  # a rule about customers can complete several people's alerts
                        out.extend(alert)
                    elif alert is not None:
                        out.append(alert)
            except Exception:  # noqa: BLE001 - one rule's bug must not stop the others or the stream
                self.errors[ev.id] += 1
                if self.errors[ev.id] <= 5:
                    log.exception("rule %s failed on event %s", ev.id, event.id)
        self.alerts += len(out)
        return out

    def run(self, events: Iterable[Envelope | dict[str, Any]]) -> list[Alert]:
        out: list[Alert] = []
        for e in events:
            out.extend(self.evaluate(e))
        return out

    def tick(self, now: float | dt.datetime, started: float | dt.datetime | None = None) -> list[Alert]:
        """Let clock-driven rules (absence) look at time `now`; `started` is when listening began, so that a
        restart does not report everything as silent."""
        t = now.timestamp() if isinstance(now, dt.datetime) else float(now)
        s = started.timestamp() if isinstance(started, dt.datetime) else (started if started is not None else 0.0)
        out: list[Alert] = []
        for ev in self.evaluators:
            try:
                out.extend(ev.tick(t, s, self.state))
            except Exception:  # noqa: BLE001
                self.errors[ev.id] += 1
                log.exception("rule %s failed on a clock tick", ev.id)
        self.alerts += len(out)
        if self.swept_at is None or t - self.swept_at >= self.sweep_every:
            self.sweep(min(t, self.watermark) if self.watermark is not None else t)
        return out

    def sweep(self, now: float) -> int:
        """Drop windows, sequence steps and socket ties that no event at or after `now` can use."""
        self.swept_at = now
        dropped = 0
        for ev in self.evaluators:
            try:
                dropped += ev.sweep(now, self.state)
            except Exception:  # noqa: BLE001
                self.errors[ev.id] += 1
                log.exception("rule %s failed to sweep its state", ev.id)
        old = [g for g, tie in self.state.groups(IDENTITY, "mark") if tie.value[2] < now - TIE_TTL]
        for g in old:
            self.state.drop(IDENTITY, "mark", g)
        return dropped + len(old)
