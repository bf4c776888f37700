"""The shipper against the real ingest code (in process, through httpx.MockTransport) and, for credentials, a
real collector process."""

from __future__ import annotations

import email.utils
import gzip
import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import certifi
import httpx
import pytest

from agent.errors import ConfigError
from agent.ship import RETRY_AFTER_MAX, ShipConfig, Shipper, _tls_context
from agent.spool import Spool
from tests.helpers.inproc import URL, InProcessCollector
from tests.helpers.procs import Collector, wait_for
from tests.helpers.sample import malformed_entry, not_json_entry, query_event, spooled


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def spool(tmp_path: Path, clock: Clock) -> Iterator[Spool]:
    with Spool(tmp_path / "spool.sqlite3", clock=clock) as s:
        yield s


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[InProcessCollector]:
    c = InProcessCollector(tmp_path / "custos.db")
    yield c
    c.close()


def make_shipper(spool: Spool, collector: InProcessCollector, clock: Clock, *, rng: float = 0.5,
                 **config: object) -> Shipper:
    cfg = ShipConfig(url=URL, token="unused", **config)  # type: ignore[arg-type]
    return Shipper(spool, cfg, client=collector.client(), clock=clock, rng=lambda: rng)


def put_valid(spool: Spool, n: int, statement_len: int = 40) -> list[str]:
    entries = [spooled(query_event(statement_len)) for _ in range(n)]
    spool.put(entries)
    return [eid for eid, _ in entries]


# -- batching ---------------------------------------------------------------------------------------------------


def test_partial_batch_waits_for_its_age_then_goes(spool: Spool, collector: InProcessCollector,
                                                    clock: Clock) -> None:
    shipper = make_shipper(spool, collector, clock, batch_max_events=5, batch_max_age=10.0)
    ids = put_valid(spool, 3)
    clock.now += 4
    attempt = shipper.ship_once()
    assert attempt.idle and attempt.sent == 0
    assert attempt.wait == pytest.approx(6.0)
    assert collector.requests == 0
    clock.now += 6
    attempt = shipper.ship_once()
    assert (attempt.sent, attempt.acked, attempt.status) == (3, 3, 200)
    assert sorted(collector.stored_ids()) == sorted(ids)


def test_full_batch_by_count_goes_at_once_and_takes_no_more_than_the_limit(
        spool: Spool, collector: InProcessCollector, clock: Clock) -> None:
    shipper = make_shipper(spool, collector, clock, batch_max_events=5, batch_max_age=3600.0)
    ids = put_valid(spool, 7)
    attempt = shipper.ship_once()
    assert (attempt.sent, attempt.acked) == (5, 5)
    assert sorted(collector.stored_ids()) == sorted(ids[:5])
    assert shipper.ship_once().idle  # the 2 left wait for their age
    assert spool.stats().depth == 2


def test_full_batch_by_bytes_goes_at_once(spool: Spool, collector: InProcessCollector, clock: Clock) -> None:
    shipper = make_shipper(spool, collector, clock, batch_max_events=1000, batch_max_bytes=2000,
                           batch_max_age=3600.0)
    entries = [spooled(query_event(300)) for _ in range(10)]  # ~600 bytes each
    spool.put(entries)
    sizes = [len(e.body) for e in spool.peek(10)]  # as spooled: with the chain's number and hash
    fits = max(k for k in range(1, 11) if sum(sizes[:k]) <= 2000)
    attempt = shipper.ship_once()  # no time has passed: only the byte bound can make the batch due
    assert (attempt.status, attempt.sent) == (200, fits)
    assert sorted(collector.stored_ids()) == sorted(eid for eid, _ in entries[:fits])


def test_clock_going_back_does_not_stretch_the_age_wait(spool: Spool, collector: InProcessCollector,
                                                         clock: Clock) -> None:
    shipper = make_shipper(spool, collector, clock, batch_max_events=5, batch_max_age=2.0)
    put_valid(spool, 1)
    clock.now -= 3600
    assert shipper.ship_once().wait <= 2.0


def test_body_is_gzip_json_of_the_spooled_bytes_in_spool_order(spool: Spool, collector: InProcessCollector,
                                                                 clock: Clock) -> None:
    seen: list[httpx.Request] = []
    collector.on_request = seen.append
    shipper = make_shipper(spool, collector, clock)
    entries = [spooled(query_event()) for _ in range(4)]
    spool.put(entries)
    queued = [e.body for e in spool.peek(10)]
    shipper.ship_once(force=True)
    (request,) = seen
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"] == "application/json"
    doc = json.loads(gzip.decompress(request.content))
    assert [e["id"] for e in doc["events"]] == [eid for eid, _ in entries]
    assert [json.dumps(e, separators=(",", ":")).encode() for e in doc["events"]] == queued


# -- waiting: Retry-After and backoff ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode, status", [("unavailable", 503), ("overloaded", 429)])
def test_retry_after_in_seconds_is_honoured(spool: Spool, collector: InProcessCollector, clock: Clock,
                                            mode: str, status: int) -> None:
    collector.mode = mode  # type: ignore[assignment]
    collector.retry_after = "42"
    shipper = make_shipper(spool, collector, clock, rng=0.0, backoff_max=1.0)
    put_valid(spool, 3)
    attempt = shipper.ship_once(force=True)
    assert (attempt.status, attempt.acked, attempt.wait) == (status, 0, 42.0)
    assert spool.stats().depth == 3
    assert collector.stored_ids() == []


@pytest.mark.parametrize("mode, status", [("unavailable", 503), ("overloaded", 429)])
def test_retry_after_as_http_date_is_honoured(spool: Spool, collector: InProcessCollector, clock: Clock,
                                              mode: str, status: int) -> None:
    collector.mode = mode  # type: ignore[assignment]
    collector.retry_after = email.utils.formatdate(clock.now + 120, usegmt=True)
    shipper = make_shipper(spool, collector, clock, rng=0.0, backoff_max=1.0)
    put_valid(spool, 1)
    attempt = shipper.ship_once(force=True)
    assert attempt.status == status
    assert attempt.wait == pytest.approx(120.0)


def test_retry_after_date_without_zone_is_read_as_gmt(spool: Spool, collector: InProcessCollector,
                                                      clock: Clock) -> None:
    collector.mode = "unavailable"
    collector.retry_after = email.utils.formatdate(clock.now + 60).replace("+0000", "-0000")
    shipper = make_shipper(spool, collector, clock, rng=0.0, backoff_max=1.0)
    put_valid(spool, 1)
    assert shipper.ship_once(force=True).wait == pytest.approx(60.0)


def test_retry_after_is_cut_so_a_wrong_header_cannot_silence_the_agent(spool: Spool, collector: InProcessCollector,
                                                                       clock: Clock) -> None:
    collector.mode = "unavailable"
    collector.retry_after = str(10**9)
    shipper = make_shipper(spool, collector, clock, rng=0.0, backoff_max=1.0)
    put_valid(spool, 1)
    assert shipper.ship_once(force=True).wait == RETRY_AFTER_MAX


def test_backoff_doubles_per_failure_up_to_backoff_max(spool: Spool, collector: InProcessCollector,
                                                       clock: Clock) -> None:
    collector.mode = "down"
    shipper = make_shipper(spool, collector, clock, rng=1.0, backoff_base=0.5, backoff_max=10.0)
    put_valid(spool, 2)
    waits = [shipper.ship_once(force=True).wait for _ in range(7)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    collector.mode = "up"
    assert shipper.ship_once(force=True).acked == 2
    collector.mode = "down"
    put_valid(spool, 1)
    assert shipper.ship_once(force=True).wait == 1.0  # a success starts the backoff over


def test_backoff_is_jittered_below_its_ceiling(spool: Spool, collector: InProcessCollector, clock: Clock) -> None:
    collector.mode = "down"
    draws = iter([0.0, 0.25, 0.5, 0.999] * 5)
    cfg = ShipConfig(url=URL, token="t", backoff_base=0.5, backoff_max=3.0)
    shipper = Shipper(spool, cfg, client=collector.client(), clock=clock, rng=lambda: next(draws))
    put_valid(spool, 1)
    waits = [shipper.ship_once(force=True).wait for _ in range(20)]
    assert all(0.0 <= w <= 3.0 for w in waits)
    assert waits[:4] == [0.0, 0.5, 1.5, pytest.approx(2.997)]  # draws × min(3, 0.5 × 2^n)
    assert len(set(waits)) > 4  # the same failure count gives different waits for different draws


# -- refusals ---------------------------------------------------------------------------------------------------


def test_413_splits_the_batch_and_dead_letters_only_the_event_too_large_alone(tmp_path: Path, spool: Spool,
                                                                                clock: Clock) -> None:
    collector = InProcessCollector(tmp_path / "small.db", max_body_bytes=3000)
    try:
        shipper = make_shipper(spool, collector, clock)
        small = [spooled(query_event(200)) for _ in range(12)]
        big = spooled(query_event(8000))  # ~4 KB gzipped alone: over the limit by itself
        spool.put(small[:5] + [big] + small[5:])
        attempt = shipper.ship_once(force=True)
        assert attempt.done
        assert (attempt.sent, attempt.acked, attempt.dead) == (13, 12, 1)
        assert sorted(collector.stored_ids()) == sorted(eid for eid, _ in small)
        ((dead_id, reason),) = spool.dead_letters()
        assert dead_id == big[0]
        assert "too large (413)" in reason
        st = spool.stats()
        assert (st.depth, st.acked, st.dead) == (0, 12, 1)
    finally:
        collector.close()


def test_400_for_too_many_events_is_met_by_splitting_and_nothing_is_dead_lettered(tmp_path: Path, spool: Spool,
                                                                                   clock: Clock) -> None:
    collector = InProcessCollector(tmp_path / "few.db", max_batch_events=3)
    try:
        shipper = make_shipper(spool, collector, clock, batch_max_events=10)
        ids = put_valid(spool, 10)
        attempt = shipper.ship_once(force=True)
        assert (attempt.acked, attempt.dead) == (10, 0)
        assert sorted(collector.stored_ids()) == sorted(ids)
    finally:
        collector.close()


def test_a_spooled_entry_that_is_not_json_is_dead_lettered_and_does_not_block_the_rest(
        spool: Spool, collector: InProcessCollector, clock: Clock) -> None:
    shipper = make_shipper(spool, collector, clock)
    before = put_valid(spool, 4)
    poison = not_json_entry()
    spool.put([poison])
    after = put_valid(spool, 4)
    assert shipper.drain(clock.now + 1)
    assert sorted(collector.stored_ids()) == sorted(before + after)
    ((dead_id, reason),) = spool.dead_letters()
    assert dead_id == poison[0]
    assert "not JSON" in reason


def test_an_entry_holding_two_json_values_is_set_aside_instead_of_shifting_the_acknowledgement(
        spool: Spool, collector: InProcessCollector, clock: Clock) -> None:
    shipper = make_shipper(spool, collector, clock)
    before = put_valid(spool, 3)
    smuggled = b",".join(body for _, body in [spooled(query_event()), spooled(query_event())])
    spool.put([("two-in-one", smuggled)])
    after = put_valid(spool, 3)
    first = shipper.ship_once(force=True)
    assert (first.acked, first.dead) == (0, 1)  # the collector counted 8 events in a batch of 7
    assert shipper.drain(clock.now + 1)
    assert set(before + after) <= set(collector.stored_ids())
    assert [eid for eid, _ in spool.dead_letters()] == ["two-in-one"]
    st = spool.stats()
    assert (st.depth, st.acked, st.dead) == (0, 6, 1)


def test_malformed_events_go_to_the_dead_table_with_the_collectors_reason(spool: Spool, collector: InProcessCollector,
                                                                          clock: Clock) -> None:
    shipper = make_shipper(spool, collector, clock)
    good = [spooled(query_event()) for _ in range(3)]
    bad = malformed_entry()
    spool.put([good[0], bad, good[1], good[2]])
    attempt = shipper.ship_once(force=True)
    assert (attempt.status, attempt.acked, attempt.dead) == (200, 3, 1)
    assert sorted(collector.stored_ids()) == sorted(eid for eid, _ in good)
    ((dead_id, reason),) = spool.dead_letters()
    assert dead_id == bad[0]
    assert "$.payload.rows" in reason
    st = spool.stats()
    assert (st.depth, st.acked, st.dead, st.dropped) == (0, 3, 1, 0)


def test_an_acknowledgement_that_does_not_match_the_batch_removes_nothing(spool: Spool, clock: Clock) -> None:
    def proxy_page(request: httpx.Request) -> httpx.Response:  # something other than the collector says 200
        return httpx.Response(200, json={"accepted": 0, "duplicates": 0, "rejected": []})

    client = httpx.Client(base_url=URL, transport=httpx.MockTransport(proxy_page))
    shipper = Shipper(spool, ShipConfig(url=URL, token="t"), client=client, clock=clock, rng=lambda: 0.0)
    put_valid(spool, 5)
    attempt = shipper.ship_once(force=True)
    assert (attempt.status, attempt.acked) == (200, 0)
    assert not attempt.done
    assert spool.stats().depth == 5
    assert "does not match" in (shipper.stats.last_error or "")


def test_an_answer_lost_after_commit_is_resent_and_stored_once(spool: Spool, collector: InProcessCollector,
                                                               clock: Clock) -> None:
    shipper = make_shipper(spool, collector, clock)
    ids = put_valid(spool, 6)
    collector.mode = "lost_answer"
    assert shipper.ship_once(force=True).acked == 0
    assert spool.stats().depth == 6  # the agent cannot know the batch was stored
    collector.mode = "up"
    attempt = shipper.ship_once(force=True)
    assert (attempt.acked, attempt.status) == (6, 200)
    assert sorted(collector.stored_ids()) == sorted(ids)  # once each
    assert spool.stats().acked == 6


def test_401_keeps_every_event_and_delivers_once_the_credential_is_fixed(tmp_path: Path) -> None:
    real = Collector(tmp_path / "collector", f"sqlite:///{tmp_path / 'custos.db'}")
    try:
        real.upgrade()
        token = real.enroll("agent-1")
        real.start()
        with Spool(tmp_path / "spool.sqlite3") as spool:
            ids = put_valid(spool, 5)
            bad = Shipper(spool, ShipConfig(url=real.url, token="not-a-credential", backoff_max=30.0),
                          rng=lambda: 0.5)
            attempt = bad.ship_once(force=True)
            bad.close()
            assert (attempt.status, attempt.acked) == (401, 0)
            assert attempt.wait == 15.0  # a refused credential waits near backoff_max, not base
            assert spool.stats().depth == 5
            good = Shipper(spool, ShipConfig(url=real.url, token=token))
            assert good.drain(time.time() + 30)
            good.close()
            assert spool.stats().acked == 5
        api = real.api_token("reader")
        got = httpx.get(f"{real.url}/api/v1/events", params={"limit": 100},
                        headers={"Authorization": f"Bearer {api}"}).json()
        assert sorted(e["event"]["id"] for e in got["events"]) == sorted(ids)
    finally:
        real.close()


# -- the loop ---------------------------------------------------------------------------------------------------


def test_run_ships_events_put_while_it_runs_and_stops_when_told(tmp_path: Path,
                                                                 collector: InProcessCollector) -> None:
    with Spool(tmp_path / "live.sqlite3") as spool:
        shipper = Shipper(spool, ShipConfig(url=URL, token="t", batch_max_events=50, batch_max_age=0.05),
                          client=collector.client())
        stop = threading.Event()
        thread = threading.Thread(target=shipper.run, args=(stop,), name="shipper-under-test")
        thread.start()
        try:
            ids = put_valid(spool, 120)
            wait_for(lambda: len(collector.stored_ids()) == 120, 10, "120 events stored")
            ids += put_valid(spool, 3)
            wait_for(lambda: spool.stats().depth == 0, 10, "the spool to empty")
        finally:
            stop.set()
            thread.join(timeout=10)
        assert not thread.is_alive()
        assert sorted(collector.stored_ids()) == sorted(ids)


def test_drain_ships_everything_and_says_whether_it_could(spool: Spool, collector: InProcessCollector,
                                                          clock: Clock) -> None:
    shipper = make_shipper(spool, collector, clock, batch_max_events=4)
    ids = put_valid(spool, 10)
    collector.mode = "down"
    assert shipper.drain(clock.now + 1) is False
    collector.mode = "up"
    assert shipper.drain(clock.now + 1) is True
    assert sorted(collector.stored_ids()) == sorted(ids)


# -- configuration ----------------------------------------------------------------------------------------------


def test_a_ca_file_gives_a_verifying_tls_context(spool: Spool) -> None:
    context = _tls_context(certifi.where())
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] > 0
    # Warnings are errors in this suite: a deprecated way of passing the CA to httpx would fail here.
    Shipper(spool, ShipConfig(url="https://127.0.0.1:1", token="t", ca_file=certifi.where())).close()


def test_a_missing_ca_file_is_a_configuration_error_naming_the_key(spool: Spool, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="collector -> ca_file"):
        Shipper(spool, ShipConfig(url="https://127.0.0.1:1", token="t", ca_file=str(tmp_path / "none.pem")))


def test_every_batch_says_when_the_agent_sent_it_by_its_own_clock(spool: Spool, collector: InProcessCollector,
                                                                    clock: Clock) -> None:
    import datetime as dt

    seen: list[httpx.Request] = []
    collector.on_request = seen.append
    shipper = make_shipper(spool, collector, clock)
    put_valid(spool, 1)
    shipper.ship_once(force=True)
    (request,) = seen
    sent = dt.datetime.fromisoformat(request.headers["custos-sent-at"])
    assert sent == dt.datetime.fromtimestamp(clock.now, dt.timezone.utc)
