"""The rule state's building blocks: sliding windows, bucketed series, first-seen sets, sequence step logs and
presence marks. Each is plain data that turns into JSON (`dump`) and back (`load`), so a store can keep it.
A dump shares no list or dict with its slot (a Mark's value is replaced, never changed in place): a checkpoint
takes dumps between two evaluations and encodes and writes them while evaluation changes the slots.

Every structure is indexed by event time, so a late event lands where it belongs and is evaluated there.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import Counter
from typing import Any

MAX_EVIDENCE = 50


class Window:
    """Entries (time, amount, item, event id) sorted by time; aggregates over any (start, end] span."""

    __slots__ = ("ts", "amounts", "items", "eids", "sum_all", "_counted", "_clo", "_chi")

    def __init__(self) -> None:
        self.sum_all = 0.0  # the sum of every amount kept: when even that is under a limit, no span can reach it
        self.ts: list[float] = []
        self.amounts: list[float] = []
        self.items: list[str | None] = []
        self.eids: list[str] = []
        # How often each item occurs in items[_clo:_chi], the span `distinct` was last asked about: a window that
        # slides forward is counted by what enters and leaves it, not again from scratch.
        self._counted: dict[str | None, int] | None = None
        self._clo = self._chi = 0

    def add(self, t: float, amount: float, item: str | None, eid: str) -> None:
        self.sum_all += amount
        if not self.ts or t >= self.ts[-1]:
            self.ts.append(t)
            self.amounts.append(amount)
            self.items.append(item)
            self.eids.append(eid)
            return
        i = bisect_right(self.ts, t)  # a late event: keep the lists sorted by time
        if i < self._chi:
            self._counted = None  # it lands inside (or before) the counted span, whose indices move
        self.ts.insert(i, t)
        self.amounts.insert(i, amount)
        self.items.insert(i, item)
        self.eids.insert(i, eid)

    def span(self, start: float, end: float) -> tuple[int, int]:
        return bisect_right(self.ts, start), bisect_right(self.ts, end)

    def total(self, lo: int, hi: int) -> float:
        return sum(self.amounts[lo:hi])

    def distinct(self, lo: int, hi: int) -> int:
        counted = self._counted
        if counted is None or lo < self._clo or hi < self._chi or (lo - self._clo) + (hi - self._chi) > hi - lo:
            self._counted = counted = Counter(self.items[lo:hi])
        else:
            for item in self.items[self._chi:hi]:
                counted[item] = counted.get(item, 0) + 1
            for item in self.items[self._clo:lo]:
                left = counted[item] - 1
                if left:
                    counted[item] = left
                else:
                    del counted[item]
        self._clo, self._chi = lo, hi
        return len(counted)

    def evidence(self, lo: int, hi: int) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        for eid in self.eids[lo:hi]:
            if eid not in seen:
                seen.add(eid)
                out.append(eid)
        return out[-MAX_EVIDENCE:]

    def prune(self, before: float) -> None:
        i = bisect_left(self.ts, before)
        if i:
            if self._counted is not None and self._clo >= i:
                self._clo -= i
                self._chi -= i
            else:
                self._counted = None
            self.sum_all -= sum(self.amounts[:i])
            del self.ts[:i], self.amounts[:i], self.items[:i], self.eids[:i]

    def __len__(self) -> int:
        return len(self.ts)

    def dump(self) -> Any:
        return {"t": self.ts[:], "a": self.amounts[:], "i": self.items[:], "e": self.eids[:]}

    @classmethod
    def load(cls, doc: Any) -> Window:
        w = cls()
        w.ts, w.amounts, w.items, w.eids = doc["t"], doc["a"], doc["i"], doc["e"]
        w.sum_all = float(sum(w.amounts))
        return w


class Series:
    """A value per bucket (hour or day number): totals, or distinct items, optionally rolled over `span` buckets.

    `value(b)` is the measure for the span ending at bucket b; history is the values of earlier buckets.
    """

    __slots__ = ("first", "newest", "totals", "sets", "last_bucket", "per_bucket", "version", "roll_bucket",
                 "roll_value")

    def __init__(self) -> None:
        self.first: int | None = None
        self.newest: int | None = None
        self.totals: dict[int, float] = {}
        self.sets: dict[int, set[str]] = {}
        # rolling distinct over a span: each item counts in the bucket it was last seen in
        self.last_bucket: dict[str, int] = {}
        self.per_bucket: dict[int, int] = {}
        self.version = 0  # bumped when a past bucket changes, so cached thresholds are recomputed
        # the rolling distinct count of the newest bucket, kept up to date as items arrive
        self.roll_bucket: int | None = None
        self.roll_value = 0.0

    def add_total(self, b: int, amount: float) -> None:
        self._touch(b)
        self.totals[b] = self.totals.get(b, 0.0) + amount

    def add_items(self, b: int, items: list[str], rolling: bool, span: int = 1) -> None:
        self._touch(b)
        if not rolling:
            s = self.sets.get(b)
            if s is None:
                s = self.sets[b] = set()
            s.update(items)
            self.totals[b] = float(len(s))
            return
        last, per = self.last_bucket, self.per_bucket
        if self.roll_bucket is None or b > self.roll_bucket:
            self.roll_bucket = b
            self.roll_value = float(sum(per.get(x, 0) for x in range(b - span + 1, b + 1)))
        current = b == self.roll_bucket
        for item in items:
            old = last.get(item)
            if old is None or old < b:
                if old is not None:
                    per[old] -= 1
                if current and (old is None or old <= b - span):
                    self.roll_value += 1
                last[item] = b
                per[b] = per.get(b, 0) + 1
        # a bucket's rolling value is kept as it stood at its end: later reads move items out of the past
        self.totals[b] = self.roll_value if current else max(self.totals.get(b, 0.0), 1.0)

    def _touch(self, b: int) -> None:
        if self.first is None or b < self.first:
            self.first = b
        if self.newest is None or b > self.newest:
            self.newest = b
        elif b < self.newest:
            self.version += 1

    def value(self, b: int, span: int, rolling_distinct: bool) -> float:
        if span == 1 and not rolling_distinct:
            return self.totals.get(b, 0.0)
        if rolling_distinct:
            return self.roll_value if b == self.roll_bucket else self.totals.get(b, 0.0)
        return float(sum(self.totals.get(x, 0) for x in range(b - span + 1, b + 1)))

    def history(self, b: int, buckets: int, span: int, rolling_distinct: bool) -> list[float]:
        """Values of the active buckets in [b - buckets, b): the person's own past. For a rolling span, only
        spans that do not overlap the current one count, so a slow rise does not become its own baseline."""
        end = b if span == 1 else b - span + 1
        return [self.value(x, span, rolling_distinct) for x in range(b - buckets, end) if x in self.totals]

    def prune(self, before: int) -> None:
        for b in [b for b in self.totals if b < before]:
            del self.totals[b]
            self.sets.pop(b, None)
        if self.per_bucket:
            for b in [b for b in self.per_bucket if b < before]:
                del self.per_bucket[b]
            self.last_bucket = {k: v for k, v in self.last_bucket.items() if v >= before}

    def dump(self) -> Any:
        return {"f": self.first, "t": list(self.totals.items()), "s": [(b, sorted(s)) for b, s in self.sets.items()],
                "l": dict(self.last_bucket), "p": list(self.per_bucket.items()), "rb": self.roll_bucket,
                "rv": self.roll_value}

    @classmethod
    def load(cls, doc: Any) -> Series:
        s = cls()
        s.first = doc["f"]
        s.totals = {int(b): float(v) for b, v in doc["t"]}
        s.sets = {int(b): set(items) for b, items in doc["s"]}
        s.last_bucket = {k: int(v) for k, v in doc["l"].items()}
        s.per_bucket = {int(b): int(v) for b, v in doc["p"]}
        s.roll_bucket, s.roll_value = doc.get("rb"), float(doc.get("rv", 0.0))
        s.newest = max(s.totals) if s.totals else None
        return s


class Seen:
    """Values a group has used, with when each was first and last seen, and when the group itself began."""

    __slots__ = ("since", "values")

    def __init__(self) -> None:
        self.since: float | None = None
        self.values: dict[str, list[float]] = {}

    def dump(self) -> Any:
        return {"since": self.since, "v": {k: v[:] for k, v in self.values.items()}}

    @classmethod
    def load(cls, doc: Any) -> Seen:
        s = cls()
        s.since, s.values = doc["since"], {k: list(v) for k, v in doc["v"].items()}
        return s


class Steps:
    """For a sequence rule: the events that matched each step, as (time, event id, join value)."""

    __slots__ = ("matched",)

    def __init__(self, n: int = 0) -> None:
        self.matched: list[list[tuple[float, str, str | None]]] = [[] for _ in range(n)]

    def prune(self, before: float) -> None:
        self.matched = [[m for m in step if m[0] >= before] for step in self.matched]

    def dump(self) -> Any:
        return {"m": [step[:] for step in self.matched]}

    @classmethod
    def load(cls, doc: Any) -> Steps:
        s = cls()
        s.matched = [[(float(t), str(e), j) for t, e, j in step] for step in doc["m"]]
        return s


class Presence:
    """For an absence rule: when the expected events and the activity that needs them were last seen."""

    __slots__ = ("expected", "active", "alerted", "label")

    def __init__(self) -> None:
        self.expected: float | None = None
        self.active: float | None = None
        self.alerted: float | None = None  # `expected` as it was when the silence was reported
        self.label = ""

    def dump(self) -> Any:
        return {"x": self.expected, "a": self.active, "r": self.alerted, "l": self.label}

    @classmethod
    def load(cls, doc: Any) -> Presence:
        p = cls()
        p.expected, p.active, p.alerted, p.label = doc["x"], doc["a"], doc["r"], doc["l"]
        return p


class Mark:
    """A small record: the last alert time of a group (suppression) or a socket tie (identity)."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def dump(self) -> Any:
        return self.value

    @classmethod
    def load(cls, doc: Any) -> Mark:
        return cls(doc)


class Trail:
    """For a linkage rule, one customer's trail: who read them and when, what hit them (a loan from a new device,
    confirmed fraud) and their contact changes. Reads are kept per reader, a few of the latest each."""

    __slots__ = ("reads", "hits", "contacts", "counted")

    def __init__(self) -> None:
        # Most customers are only ever read: hits and contacts stay the shared empty tuple until one comes
        # (a slot is made per customer read, so every allocation here counts).
        self.reads: dict[str, list[tuple[float, str]]] = {}  # reader → [(time, event id)], by time
        self.hits: list[tuple[float, str, str]] | tuple[()] = ()  # (time, what, event id), by time
        self.contacts: list[float] | tuple[()] = ()
        self.counted = False  # counted once among the customers both read and hit

    def add_hit(self, hit: tuple[float, str, str]) -> None:
        if not self.hits:
            self.hits = []
        insort(self.hits, hit)  # type: ignore[arg-type]

    def add_contact(self, t: float) -> None:
        if not self.contacts:
            self.contacts = []
        insort(self.contacts, t)  # type: ignore[arg-type]

    def newest(self) -> float:
        times = [r[-1][0] for r in self.reads.values() if r] + [h[0] for h in self.hits] + list(self.contacts)
        return max(times, default=0.0)

    def prune(self, before: float) -> None:
        self.reads = {w: kept for w, r in self.reads.items() if (kept := [x for x in r if x[0] >= before])}
        self.hits = [h for h in self.hits if h[0] >= before] or ()
        self.contacts = [c for c in self.contacts if c >= before] or ()

    def dump(self) -> Any:
        return {"r": {w: r[:] for w, r in self.reads.items()}, "h": self.hits[:], "c": self.contacts[:],
                "k": self.counted}

    @classmethod
    def load(cls, doc: Any) -> Trail:
        t = cls()
        t.reads = {w: [(float(a), str(e)) for a, e in r] for w, r in doc["r"].items()}
        t.hits = [(float(a), str(w), str(e)) for a, w, e in doc["h"]] or ()
        t.contacts = [float(c) for c in doc["c"]] or ()
        t.counted = bool(doc.get("k", False))
        return t


class Links:
    """For a linkage rule, one person's linked customers: customer key → (read time, hit time, what hit them,
    read event id, hit event id); and the severity last alerted, with when."""

    __slots__ = ("links", "fired", "fired_at")

    def __init__(self) -> None:
        self.links: dict[str, tuple[float, float, str, str, str]] = {}
        self.fired: str | None = None
        self.fired_at: float | None = None

    def dump(self) -> Any:
        return {"l": dict(self.links), "f": self.fired, "a": self.fired_at}

    @classmethod
    def load(cls, doc: Any) -> Links:
        x = cls()
        x.links = {k: (float(r), float(h), str(w), str(re), str(he)) for k, (r, h, w, re, he) in doc["l"].items()}
        x.fired, x.fired_at = doc["f"], doc["a"]
        return x


PARTS: dict[str, type[Any]] = {
    "window": Window,
    "series": Series,
    "seen": Seen,
    "steps": Steps,
    "presence": Presence,
    "mark": Mark,
    "trail": Trail,
    "links": Links,
}
