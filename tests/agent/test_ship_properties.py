"""A state machine of spool + shipper + collector with outages, refusals, lost answers and crashes.

The collector is the real ingest code and a real EventStore on SQLite (tests/helpers/inproc.py). A crash closes
the spool and the shipper without ceremony and opens them again from the file, as a restarted agent does; the
"crash before the acknowledgement is recorded" steps let the collector commit and answer, then make the spool
write fail as a process dying at that instant would.

Whatever the interleaving:
- every event ever put is stored, still in the spool, or in the spool's dead table (bounds are large: nothing
  is dropped);
- every event that left the spool as acknowledged is stored;
- no event id is stored twice, and only events that were put are stored; malformed ones never are;
- the spool's counters add up: queued = acked + dead + depth.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from agent.ship import ShipConfig, Shipper
from agent.spool import Spool
from tests.helpers.inproc import URL, InProcessCollector
from tests.helpers.sample import malformed_entry, query_event, spooled

SMALL_BODY_LIMIT = 2500  # gzip bytes: a handful of ordinary events fit, a 6000-character statement alone does not
SHIP_MODES = ("up", "down", "unavailable", "overloaded", "lost_answer")


class SimulatedCrash(Exception):
    """The agent process dies at this point."""


class SpoolAndShipper(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="custos-ship-sm-"))
        self.collector = InProcessCollector(self.dir / "custos.db")
        self.put_ids: set[str] = set()
        self.malformed_ids: set[str] = set()
        self.spool: Spool
        self.shipper: Shipper
        self._open_agent()

    def _open_agent(self) -> None:
        self.spool = Spool(self.dir / "spool.sqlite3", synchronous="NORMAL")
        config = ShipConfig(url=URL, token="t", batch_max_events=7, backoff_max=1.0)
        self.shipper = Shipper(self.spool, config, client=self.collector.client(), rng=lambda: 0.0)

    def _close_agent(self) -> None:
        self.shipper.close()
        self.spool.close()

    def teardown(self) -> None:
        self._close_agent()
        self.collector.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- steps ----------------------------------------------------------------------------------------------

    @rule(n=st.integers(1, 12), big=st.integers(0, 2), bad=st.integers(0, 2))
    def put(self, n: int, big: int, bad: int) -> None:
        entries = [spooled(query_event(40)) for _ in range(n)]
        entries += [spooled(query_event(6000)) for _ in range(big)]
        malformed = [malformed_entry() for _ in range(bad)]
        entries += malformed
        assert self.spool.put(entries) == len(entries)
        self.put_ids.update(eid for eid, _ in entries)
        self.malformed_ids.update(eid for eid, _ in malformed)

    @rule(mode=st.sampled_from(SHIP_MODES), small_limit=st.booleans())
    def ship(self, mode: str, small_limit: bool) -> None:
        self.collector.mode = mode  # type: ignore[assignment]
        self.collector.app.max_body = SMALL_BODY_LIMIT if small_limit else 16 << 20
        attempt = self.shipper.ship_once(force=True)
        if mode == "up" and attempt.sent:
            assert attempt.done, attempt  # with the collector up, every event sent is settled

    @rule()
    def crash(self) -> None:
        self._close_agent()
        self._open_agent()

    @rule(where=st.sampled_from(["ack", "dead_letter"]))
    def crash_after_the_collector_answered(self, where: str) -> None:
        """The collector stored the batch and answered; the agent dies before recording it."""
        def die(*args: object, **kwargs: object) -> int:
            raise SimulatedCrash(where)

        self.collector.mode = "up"
        self.collector.app.max_body = 16 << 20
        setattr(self.spool, where, die)
        try:
            self.shipper.ship_once(force=True)
        except SimulatedCrash:
            pass
        self.crash()

    @rule()
    def collector_returns_and_agent_catches_up(self) -> None:
        self.collector.mode = "up"
        self.collector.app.max_body = 16 << 20
        for _ in range(1000):
            if self.shipper.ship_once(force=True).idle:
                break
        assert self.spool.stats().depth == 0
        stored = set(self.collector.stored_ids())
        dead = self._dead_ids()
        assert stored | dead == self.put_ids
        assert self.malformed_ids <= dead

    # -- invariants -----------------------------------------------------------------------------------------

    def _dead_ids(self) -> set[str]:
        return {eid for eid, _ in self.spool.dead_letters(limit=1_000_000)}

    @invariant()
    def every_event_is_stored_or_still_held_and_none_twice(self) -> None:
        stored_rows = self.collector.stored_ids()
        stored = set(stored_rows)
        assert len(stored_rows) == len(stored), "an event id was stored twice"
        waiting = {e.event_id for e in self.spool.peek(1_000_000)}
        dead = self._dead_ids()
        assert self.put_ids <= stored | waiting | dead, "an event was lost"
        assert stored <= self.put_ids - self.malformed_ids
        left_as_acknowledged = self.put_ids - waiting - dead
        assert left_as_acknowledged <= stored, "an event left the spool as acknowledged but is not stored"

    @invariant()
    def counters_add_up(self) -> None:
        st_ = self.spool.stats()
        assert st_.dropped == 0
        assert st_.queued == len(self.put_ids)
        assert st_.acked + st_.dead + st_.depth == st_.queued


SpoolAndShipper.TestCase.settings = settings(
    max_examples=75, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_spool_and_shipper_never_lose_or_repeat_an_event = SpoolAndShipper.TestCase
