"""A synthetic bank for replays, benchmarks and the demo: about 60 staff in five teams with managers, working
calendars and shifts, a customer base, days of ordinary work — and planted insider scenarios with ground truth.

    scn = generate(seed=7, days=14)
    alerts, engine = replay_scenario(scn, load_rules())
    report = score(scn, alerts)            # every planted scenario found? how many false alerts?

With `loan_fraud=True` a sixth insider is planted: a call-centre agent whose ordinary-looking look-ups include
customers who, days later, apply for loans from new devices and are confirmed fraud victims (`business.*` events
from the lending system). Only a `linkage` rule can find her; `score(..., kinds=…)` reports her as pending
when the rule set has no such kind.

Ordinary work has the variance real work has (busy days, overtime, the odd Saturday, weekly reports, a nightly
batch account, DBAs' night maintenance, a shared IT account), so false alerts are measured, not assumed away.
Everything is drawn from one seeded random generator: the same seed gives the same events, ids included.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import random
import uuid
import zoneinfo
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.customer_keys import CustomerKeyHasher
from agent.events import (Actor, AgentHeartbeat, DbQuery, DbQueryPayload, DbSession, DbSessionPayload, Envelope,
                          FileExport, FileExportPayload, HeartbeatPayload, ProcessInfo, Source)
from rules.identity import Person

DEMO_KEY = b"custos-demo-customer-key"
_DEMO_HASHER = CustomerKeyHasher(DEMO_KEY)
TZ = zoneinfo.ZoneInfo("Europe/Vilnius")  # the bank's zone; its calendars (CONTEXT) say the same
TEAMS = {"loans": 14, "call_centre": 14, "risk": 9, "it": 8, "collections": 10}  # + one manager each: 60
FIRST = ["Ona", "Jonas", "Lina", "Tomas", "Rasa", "Marius", "Eva", "Paulius", "Ieva", "Darius", "Agne", "Karolis",
         "Greta", "Mantas", "Rita", "Lukas", "Vaida", "Andrius", "Egle", "Simas", "Wang", "Li", "Anna", "Petras"]
LAST = ["Kazlauskas", "Petraitis", "Jankauskas", "Zukauskas", "Butkus", "Paulauskas", "Vasiliauskas", "Baranauskas",
        "Urbonas", "Navickas", "Ramanauskas", "Savickas", "Lei", "Mikalauskas", "Stankevicius", "Adomaitis"]
SHIFTS = ["mon-fri 07:00-15:00", "mon-fri 14:00-22:00", "wed-sun 07:00-15:00", "wed-sun 14:00-22:00"]
CONTEXT: dict[str, Any] = {
    "sites": {"hq": ["10.1.0.0/16"], "branch-north": ["10.2.0.0/16"], "datacentre": ["10.9.0.0/16"]},
    "calendars": {"default": {"tz": "Europe/Vilnius", "hours": ["mon-fri 08:00-18:00"], "grace_minutes": 30},
                  "teams": {"call_centre": {"hours": ["mon-sun 07:00-22:00"]},
                            "it": {"hours": ["mon-fri 07:00-19:00"]}}},
    "lists": {"always_on_agents": ["proxy-*", "audit-*"], "service_accounts": ["svc_batch"]},
}
PROXY = Source(type="proxy", name="pg-core")
STAFF_AGENT = Source(type="staff", name="workstation")
LENDING = Source(type="business", name="lending")


def customer_number(i: int) -> str:
    """Customer number i as the bank writes it (`CUST0000042`): the demo database's `customers.customer_id`."""
    return f"CUST{i:07d}"


def customer_key(i: int) -> str:
    """The keyed hash of customer number i, as the proxy reports it with the demo key (the normalised
    identifier, `agent.customer_keys`, under HMAC-SHA256)."""
    return _DEMO_HASHER.hash(customer_number(i))


@dataclass(frozen=True)
class Planted:
    """One insider scenario: who (the group key alerts carry: staff id or `db:account`), when, and what."""

    name: str
    who: str
    start: dt.datetime
    end: dt.datetime
    story: str
    needs: str | None = None  # the rule kind only which can find it, when the ordinary kinds cannot


@dataclass
class Scenario:
    people: list[Person]
    events: list[Envelope]
    planted: list[Planted]
    assignments: dict[str, frozenset[str]]
    context: dict[str, Any]
    days: int
    start: dt.datetime

    @property
    def staff_days(self) -> int:
        return sum(1 for p in self.people if p.kind == "person") * self.days


@dataclass
class Staff:
    person: Person
    addr: str
    rng_share: float = 0.0
    portfolio: list[int] = field(default_factory=list)


class _Gen:
    def __init__(self, seed: int, start: dt.date, days: int, customers: int) -> None:
        self.rng = random.Random(seed)
        self.start_date = start
        self.start = dt.datetime.combine(start, dt.time(0), TZ).astimezone(dt.timezone.utc)
        self.days, self.customers = days, customers
        self.raw: list[tuple[dt.datetime, Any]] = []  # (time, builder) — ids are given in time order at the end
        self._keys: dict[int, str] = {}
        self._port = 40000

    def key(self, i: int) -> str:
        k = self._keys.get(i)
        if k is None:
            k = self._keys[i] = customer_key(i)
        return k

    def at(self, day: int, hour: float) -> dt.datetime:
        """`hour` hours after local midnight of the day, in UTC (wall-clock hours: summer time is kept)."""
        midnight = dt.datetime.combine(self.start_date + dt.timedelta(days=day), dt.time(0), TZ)
        return (midnight + dt.timedelta(hours=hour)).astimezone(dt.timezone.utc)

    def query(self, when: dt.datetime, staff: Staff | None, *, db_user: str | None = None, customers: Sequence[int] = (),
              rows: int | None = None, classes: Sequence[str] = (), tables: Sequence[str] = ("public.customers",),
              statement: str = "SELECT name, phone FROM customers WHERE id = ?", addr: str | None = None,
              port: int | None = None, app: str = "bankdesk", system: bool = False) -> None:
        self._port = self._port + 1 if self._port < 60000 else 40000
        payload = DbQueryPayload(
            session_id=f"s{self._port}", statement_type=statement.split()[0].upper(),
            fingerprint=hashlib.sha1(statement.encode()).hexdigest()[:16], statement=statement, database="core",
            application_name=app, client_addr=addr or (staff.addr if staff else "10.9.0.10"),
            client_port=port or self._port, tables_read=list(tables), sensitive_classes=list(classes),
            rows=len(customers) if rows is None else rows, customer_keys=[self.key(c) for c in customers],
            system=system)
        actor = Actor(db_user=db_user or (staff.person.db_users[0] if staff else None))
        self.raw.append((when, lambda i, ts: DbQuery(id=i, ts=ts, host="proxy-core", source=PROXY, actor=actor,
                                                     agent_id="proxy-core", payload=payload)))

    def session_tie(self, when: dt.datetime, staff: Staff, port: int, program: str) -> None:
        payload = DbSessionPayload(session_id=f"t{port}", phase="start", client_addr=staff.addr, client_port=port,
                                   process=ProcessInfo(pid=1000 + port % 5000, name=program))
        actor = Actor(os_user=staff.person.os_users[0])
        host = f"ws-{staff.person.staff_id}"
        self.raw.append((when, lambda i, ts: DbSession(id=i, ts=ts, host=host, source=STAFF_AGENT, actor=actor,
                                                       agent_id=host, payload=payload)))

    def file(self, when: dt.datetime, staff: Staff, path: str, counts: dict[str, int], destination: str,
             sha: str, size: int = 200_000) -> None:
        payload = FileExportPayload(path=path, action="created", size=size, destination=destination,  # type: ignore[arg-type]
                                    sha256=sha, counts=counts)
        actor = Actor(os_user=staff.person.os_users[0])
        host = f"ws-{staff.person.staff_id}"
        self.raw.append((when, lambda i, ts: FileExport(id=i, ts=ts, host=host, source=STAFF_AGENT, actor=actor,
                                                        agent_id=host, payload=payload)))

    def business(self, when: dt.datetime, kind: type[Envelope], payload: Any) -> None:
        def make(i: str, ts: dt.datetime) -> Envelope:
            return kind(id=i, ts=ts, host="lending-01", source=LENDING,  # type: ignore[call-arg]
                        agent_id="lending", payload=payload)

        self.raw.append((when, make))

    def heartbeat(self, when: dt.datetime, agent: str) -> None:
        payload = HeartbeatPayload(version="demo", uptime_s=60.0, spool_depth=0, spool_bytes=0, dropped=0,
                                   dead_lettered=0)
        self.raw.append((when, lambda i, ts: AgentHeartbeat(id=i, ts=ts, host=agent, source=Source(type="agent"),
                                                            agent_id=agent, payload=payload)))

    def build(self) -> list[Envelope]:
        self.raw.sort(key=lambda r: r[0])
        out = []
        for when, make in self.raw:
            ms = int(when.timestamp() * 1000)
            rand = self.rng.getrandbits(74)
            value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | (rand & ((1 << 62) - 1))
            out.append(make(str(uuid.UUID(int=value)), when))
        return out


def _people(rng: random.Random) -> dict[str, list[Staff]]:
    teams: dict[str, list[Staff]] = {}
    used: set[str] = set()
    for t_index, (team, n) in enumerate(TEAMS.items()):
        prefix = {"loans": "lo", "call_centre": "cc", "risk": "rk", "it": "it", "collections": "co"}[team]
        manager_id = f"{prefix}mgr"
        members = []
        for i in range(n + 1):
            sid = manager_id if i == 0 else f"{prefix}{i:02d}"
            while True:
                name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
                if name not in used:
                    used.add(name)
                    break
            shift = SHIFTS[i % len(SHIFTS)] if team == "call_centre" and i else None
            db_users: tuple[str, ...] = (sid, "ops_shared") if team == "it" and i in (1, 2) else (sid,)
            person = Person(staff_id=sid, name=name, team=team, manager=None if i == 0 else manager_id,
                            db_users=db_users, os_users=(sid,), shift=shift)
            site = 2 if team == "collections" else 1
            members.append(Staff(person, f"10.{site}.{t_index + 1}.{10 + i}"))
        teams[team] = members
    return teams


def generate(seed: int = 7, days: int = 14, start: dt.date = dt.date(2026, 3, 2), customers: int = 50_000,
             with_insiders: bool = True, loan_fraud: bool = False) -> Scenario:
    """`days` of a bank's activity from `start` (local midnight), with five insiders when `with_insiders`; with
    `loan_fraud`, also the lending system's business events and (with insiders) the loan-fraud insider."""
    g = _Gen(seed, start, days, customers)
    start_dt = g.start
    rng = g.rng
    teams = _people(rng)
    assignments: dict[str, frozenset[str]] = {}
    for team in ("loans", "collections"):
        for s in teams[team][1:]:
            s.portfolio = rng.sample(range(1, customers), 150 if team == "loans" else 300)
            assignments[s.person.staff_id] = frozenset(g.key(c) for c in s.portfolio)
    leaver, night, slow, usb = teams["loans"][11], teams["loans"][7], teams["collections"][3], teams["risk"][4]
    end_date = (start + dt.timedelta(days=6)) if with_insiders else None
    if end_date is not None:
        leaver.person = dataclasses.replace(leaver.person, end_date=end_date)
    for day in range(days):
        weekday = (start + dt.timedelta(days=day)).weekday()
        _ordinary_day(g, teams, day, weekday, leaver if with_insiders else None, end_date)
    beats = int((g.at(days, 0) - start_dt) / dt.timedelta(minutes=5))  # days are 23 or 25 hours at clock changes
    for hour in range(beats):  # server agents beat every five minutes, all the time
        when = start_dt + dt.timedelta(minutes=5 * hour)
        for agent in ("proxy-core", "audit-core"):
            g.heartbeat(when + dt.timedelta(seconds=rng.uniform(0, 20)), agent)
    planted = _insiders(g, teams, days, night, slow, usb, leaver) if with_insiders else []
    if loan_fraud:  # drawn from a generator of its own, so that the rest of the bank stays as it was
        from rules.scenario_fraud import lending_activity

        planted += lending_activity(g, random.Random(f"{seed}:lending"), teams["call_centre"][5], days,
                                    with_insiders, _shift)
    people = [s.person for members in teams.values() for s in members]
    people.append(Person("svc_batch", "Nightly batch", kind="service", db_users=("svc_batch",)))
    return Scenario(people, g.build(), planted, assignments, CONTEXT, days, start_dt)


def _shift(pattern: str) -> tuple[set[int], float, float]:
    from rules.calendar import WorkPattern

    w = WorkPattern.parse(pattern)
    return set(w.days), w.start / 60, w.end / 60


def _lookups(g: _Gen, s: Staff, day: int, n: int, start: float, end: float, classes: list[str],
             assigned_share: float, addr: str | None = None) -> None:
    rng = g.rng
    for _ in range(n):
        c = rng.choice(s.portfolio) if s.portfolio and rng.random() < assigned_share else rng.randrange(1, g.customers)
        when = g.at(day, rng.uniform(start, end))
        g.query(when, s, customers=[c], classes=classes, addr=addr)
        if rng.random() < 0.15 and s.portfolio:  # a credit check: identity number, in a query of its own
            g.query(when + dt.timedelta(seconds=40), s, customers=[c], classes=["name", "national_id"],
                    statement="SELECT name, national_id FROM customers WHERE id = ?", addr=addr)


def _ordinary_day(g: _Gen, teams: dict[str, list[Staff]], day: int, weekday: int, leaver: Staff | None,
                  end_date: dt.date | None) -> None:
    rng = g.rng
    workday = weekday < 5
    for team, members in teams.items():
        manager, staff = members[0], members[1:]
        if workday:
            _lookups(g, manager, day, rng.randint(3, 8), 9, 16, ["name", "phone"], 0.0)
            if weekday == 0:
                g.query(g.at(day, rng.uniform(9, 11)), manager, rows=1500, tables=["public.loans"],
                        statement="SELECT officer, count(*), sum(amount) FROM loans GROUP BY officer")
        for s in staff:
            if s is leaver and end_date is not None and g.start.date() + dt.timedelta(days=day) > end_date - \
                    dt.timedelta(days=2):
                continue  # the leaver's last working day was the Friday before their end date
            addr = f"10.2.99.{rng.randint(2, 250)}" if rng.random() < 0.001 else None  # a day at another site
            if team in ("loans", "collections"):
                if workday:
                    begin, finish = 8 + rng.uniform(-0.25, 1.0), 17 + rng.uniform(0, 1.0)
                    if rng.random() < 0.05:
                        finish = rng.uniform(18.6, 19.5)  # overtime
                    mean = 30 if team == "loans" else 35
                    share = 0.92 if team == "loans" else 0.95
                    classes = ["name", "phone", "address"]
                    _lookups(g, s, day, max(5, int(rng.gauss(mean, mean / 5))), begin, finish, classes, share, addr)
                    if weekday == 0 and team == "loans":
                        g.query(g.at(day, rng.uniform(9, 10)), s, customers=s.portfolio, classes=["name", "address"],
                                statement="SELECT name, address FROM customers WHERE officer = ?", addr=addr)
                    if rng.random() < 0.1:
                        g.file(g.at(day, rng.uniform(10, 16)), s, f"/home/{s.person.staff_id}/report.xlsx",
                               {"name": rng.randint(10, 60)}, "local", hashlib.sha256(rng.randbytes(8)).hexdigest())
                elif weekday == 5 and rng.random() < 0.03:  # the odd Saturday morning
                    _lookups(g, s, day, rng.randint(4, 7), 10, 12, ["name", "phone"], 0.9)
            elif team == "call_centre":
                days, begin, finish = _shift(s.person.shift or SHIFTS[0])
                if weekday in days:
                    _lookups(g, s, day, max(10, int(rng.gauss(60, 12))), begin, finish, ["name", "phone"], 0.0, addr)
            elif team == "risk" and workday:
                for _ in range(rng.randint(6, 12)):
                    g.query(g.at(day, rng.uniform(9, 17)), s, rows=rng.randint(500, 4000),
                            tables=["public.loans", "public.payments"],
                            statement="SELECT region, product, sum(amount) FROM loans JOIN payments USING (loan_id) "
                                      "GROUP BY region, product")
                _lookups(g, s, day, rng.randint(2, 5), 9, 17, ["name"], 0.0)
                if rng.random() < 0.005:
                    g.file(g.at(day, rng.uniform(10, 16)), s, "/media/usb/slides.pptx", {}, "removable",
                           hashlib.sha256(rng.randbytes(8)).hexdigest())
            elif team == "it":
                if workday:
                    for _ in range(rng.randint(5, 15)):
                        g.query(g.at(day, rng.uniform(8, 18)), s, rows=rng.randint(1, 50), tables=["pg_catalog.pg_class"],
                                statement="SELECT relname, reltuples FROM pg_class WHERE relkind = ?", app="psql")
                if s.person.staff_id in ("it01", "it02") and workday:
                    for _ in range(rng.randint(1, 3)):  # support work under the shared account, from their desk
                        port = rng.randint(50000, 60000)
                        when = g.at(day, rng.uniform(9, 17))
                        g.session_tie(when - dt.timedelta(seconds=2), s, port, "psql")
                        g.query(when, s, db_user="ops_shared", customers=[rng.randrange(1, g.customers)],
                                classes=["name", "phone"], port=port, app="psql")
                    for _ in range(rng.randint(1, 2)):  # … and from the jump host, where no agent can tell who
                        g.query(g.at(day, rng.uniform(9, 17)), None, db_user="ops_shared",
                                customers=[rng.randrange(1, g.customers)], classes=["name", "phone"],
                                addr="10.9.0.5", app="psql")
                if s.person.staff_id == "it01" and weekday == 6:  # Sunday night maintenance
                    for table in ("customers", "cards", "loans"):
                        g.query(g.at(day, 2 + rng.uniform(0, 0.5)), s, rows=0, tables=[f"public.{table}"],
                                statement=f"VACUUM ANALYZE public.{table}", app="psql")
    batch = g.at(day, 1 + rng.uniform(0, 0.3))
    g.query(batch, None, db_user="svc_batch", rows=200_000, classes=["card_number", "name"],
            tables=["public.cards"], statement="COPY public.cards TO STDOUT", addr="10.9.0.20", app="batch")
    for _ in range(rng.randint(3, 10)):  # foreign-key checks the audit log reports: nobody's reads
        g.query(g.at(day, rng.uniform(8, 18)), None, db_user="svc_batch", rows=1, classes=["card_number"],
                tables=["public.cards"], statement="SELECT 1 FROM ONLY public.cards x WHERE id = ? FOR KEY SHARE",
                system=True, addr="10.9.0.20")


def _insiders(g: _Gen, teams: dict[str, list[Staff]], days: int, night: Staff, slow: Staff, usb: Staff,
              leaver: Staff) -> list[Planted]:
    rng = g.rng
    planted = []
    # 1. the night-time bulk reader: card data of thousands of customers, 01:10–01:50 on a Wednesday night
    d = min(9, days - 1)
    t0 = g.at(d, 1 + 1 / 6)
    for i in range(12):
        block = rng.sample(range(1, g.customers), 300)
        g.query(t0 + dt.timedelta(minutes=3 * i), night, customers=block, rows=300 * rng.randint(8, 15),
                classes=["name", "card_number"], tables=["public.cards", "public.customers"],
                statement="SELECT c.name, k.pan FROM cards k JOIN customers c USING (customer_id) WHERE c.id > ?")
    planted.append(Planted("night_bulk_reader", night.person.staff_id, t0, t0 + dt.timedelta(hours=1),
                           f"{night.person.name} reads card data of 3,600 customers in the night"))
    # 2. the slow leaker: from the second week, four times her usual customers a day, one lookup at a time
    first = min(7, days - 1)
    for day in range(first, days):
        if (g.start.date() + dt.timedelta(days=day)).weekday() < 5:
            _lookups(g, slow, day, 150, 9, 17, ["name", "phone", "address"], 0.0)
    planted.append(Planted("slow_leaker", slow.person.staff_id, g.at(first, 0), g.at(days, 0),
                           f"{slow.person.name} quietly reads four times her usual customers every day"))
    # 3. card data to USB after a bulk read
    d = min(10, days - 1)
    t0 = g.at(d, 14)
    g.query(t0, usb, customers=rng.sample(range(1, g.customers), 2000), rows=3000, classes=["card_number", "name"],
            tables=["public.cards"], statement="SELECT name, pan FROM cards WHERE product = ?")
    sha = hashlib.sha256(rng.randbytes(16)).hexdigest()
    g.file(t0 + dt.timedelta(minutes=6), usb, f"/home/{usb.person.staff_id}/cards.csv", {"card_number": 2950}, "local",
           sha)
    g.file(t0 + dt.timedelta(minutes=19), usb, "/media/usb0/cards.csv", {"card_number": 2950}, "removable", sha)
    planted.append(Planted("usb_after_bulk_read", usb.person.staff_id, t0, t0 + dt.timedelta(minutes=20),
                           f"{usb.person.name} copies 2,950 card numbers to a USB stick after a bulk read"))
    # 4. the leaver reads customers after her end date
    d = min(8, days - 1)
    for day in (d, min(d + 1, days - 1)):
        _lookups(g, leaver, day, 25, 10, 15, ["name", "phone", "address"], 0.3)
    planted.append(Planted("leaver_after_end_date", leaver.person.staff_id, g.at(d, 0), g.at(d + 2, 0),
                           f"{leaver.person.name} reads customers after her employment ended"))
    # 5. the shared IT account used from a host never seen before, at night
    d = min(11, days - 1)
    t0 = g.at(d, 2.5)
    for i in range(8):
        g.query(t0 + dt.timedelta(minutes=4 * i), None, db_user="ops_shared",
                customers=rng.sample(range(1, g.customers), 50), rows=50, classes=["name", "phone", "national_id"],
                addr="172.16.99.23", app="DBeaver")
    planted.append(Planted("shared_account_new_host", "db:ops_shared", t0, t0 + dt.timedelta(minutes=30),
                           "the shared IT account is used at night from an unknown machine"))
    return planted


class Scored(Protocol):
    """What scoring needs of an alert: an engine's `rules.alerts.Alert`, or one read back from a store."""

    @property
    def staff_id(self) -> str | None: ...
    @property
    def group(self) -> str: ...
    @property
    def ts(self) -> dt.datetime: ...


@dataclass
class Report:
    found: dict[str, list[Any]]
    missed: list[str]
    false_alerts: list[Any]
    staff_days: int
    pending: list[str] = field(default_factory=list)  # not found, and the rule kind that could is not there

    @property
    def false_per_1000_staff_days(self) -> float:
        return 1000 * len(self.false_alerts) / self.staff_days if self.staff_days else 0.0


def score(scn: Scenario, alerts: Sequence[Scored], slack: dt.timedelta = dt.timedelta(days=1),
          kinds: Collection[str] | None = None) -> Report:
    """Which planted scenarios some alert found (same person or account, within the scenario's time plus a day),
    and which alerts belong to no scenario: the false alerts. With `kinds` (the rule kinds of the rule set), a
    scenario not found that needs a kind missing from them is pending, not missed."""
    found: dict[str, list[Any]] = {p.name: [] for p in scn.planted}
    false = []
    for a in alerts:
        who = a.staff_id or a.group.split("|")[0]
        hit = [p for p in scn.planted if p.who == who and p.start - slack <= a.ts <= p.end + slack]
        for p in hit:
            found[p.name].append(a)
        if not hit:
            false.append(a)
    needs = {p.name: p.needs for p in scn.planted}
    pending = [k for k, v in found.items() if not v and kinds is not None and needs[k] and needs[k] not in kinds]
    return Report({k: v for k, v in found.items() if v}, [k for k, v in found.items() if not v and k not in pending],
                  false, scn.staff_days, pending)


def replay_scenario(scn: Scenario, ruleset: Any) -> tuple[list[Any], Any]:
    """Run the scenario's events through an engine with the rule set, in a context built from the scenario."""
    from rules.context import context_from_mapping
    from rules.engine import Engine
    from rules.identity import Directory
    from rules.parse import _merge_context
    from rules.state import MemoryState

    doc = dict(ruleset.context_doc)
    _merge_context(doc, scn.context)
    doc.pop("overrides", None)
    ctx = context_from_mapping(doc)
    ctx.set_directory(Directory.of(scn.people))
    engine = Engine(ruleset.rules, ctx, MemoryState(scn.assignments))
    alerts = engine.run(scn.events)
    last = scn.events[-1].ts if scn.events else scn.start
    alerts += engine.tick(last, started=scn.start)
    return alerts, engine
