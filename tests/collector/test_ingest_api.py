"""POST /api/v1/events against a real collector: each bad event costs only itself, limits answer 413, bodies that
are not batches answer 400, repeats are stored once, and the agent is who its credential says."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator

import httpx
import msgspec
import pytest

from agent import events as ev
from tests.helpers.api import (
    EVENTS,
    Served,
    as_dict,
    batch,
    card_event,
    http_exchange,
    loan_event,
    query_event,
    raw,
    served,
)


def _without_session_id() -> dict:
    d = as_dict(query_event())
    del d["payload"]["session_id"]
    return d


def test_a_mixed_batch_stores_the_valid_events_and_refuses_each_bad_one_with_its_reason(api: Served) -> None:
    q, loan, card = query_event(), loan_event(), card_event()
    wrong_type = as_dict(query_event())
    wrong_type["payload"]["rows"] = "many"
    huge = as_dict(query_event())
    huge["payload"]["statement"] = "x" * 1_000_000
    bad_key = as_dict(query_event())
    bad_key["payload"]["customer_keys"] = ["ab" * 32, "AB" * 32]
    not_utf8 = ev.encode(query_event(host="HOSTMARK")).replace(b"HOSTMARK", b"db\xff\xfe01")
    elements = [
        (ev.encode(q), None),
        (raw(wrong_type), "`$.payload.rows`"),
        (raw(dict(as_dict(query_event()), kind="db.nonsense")), "unknown event kind 'db.nonsense'"),
        (raw(_without_session_id()), "session_id"),
        (raw(huge), f"the limit is {ev.MAX_EVENT_BYTES}"),
        (ev.encode(loan), None),
        (not_utf8, "not UTF-8"),
        (raw(dict(as_dict(query_event()), ts="2026-11-27T03:00:00")), "no zone"),
        (raw(dict(as_dict(query_event()), schema=99)), "newer than this collector"),
        (raw(dict(as_dict(query_event()), ts="0001-01-01T00:30:00+01:00")), "out of range"),
        (b"42", "must be a JSON object, not int"),
        (b'["a"]', "must be a JSON object, not array"),
        (ev.encode(msgspec.structs.replace(q, host="another-host")), "also the id of event 0"),
        (raw(as_dict(query_event(host="a\u0000b"))), "NUL"),
        (ev.encode(card), None),
        (b"null", "must be a JSON object, not null"),
        (raw(bad_key), "`$.payload.customer_keys[1]`"),
        (ev.encode(q), None),  # the very same event again: a duplicate, not an error
    ]
    response = api.post(batch(*(e for e, _ in elements)))

    assert response.status_code == 200, response.text
    ack = response.json()
    assert (ack["accepted"], ack["duplicates"]) == (3, 1)
    expected = {i: why for i, (_, why) in enumerate(elements) if why is not None}
    assert [r["index"] for r in ack["rejected"]] == sorted(expected)
    for r in ack["rejected"]:
        assert expected[r["index"]] in r["reason"], (r, expected[r["index"]])
        assert len(r["reason"]) <= 400
    by_index = {r["index"]: r for r in ack["rejected"]}
    assert by_index[1]["id"] == wrong_type["id"]  # a readable id comes back, for the agent's logs
    assert by_index[12]["id"] == q.id
    assert set(api.stored()) == {q.id, loan.id, card.id}

    # The collector keeps serving: the next batch and the health check are answered normally.
    after = query_event()
    assert api.post_events(after).json()["accepted"] == 1
    assert httpx.get(api.url + "/healthz", timeout=10).status_code == 200
    assert set(api.stored()) == {q.id, loan.id, card.id, after.id}


def test_lone_surrogates_and_nan_cost_only_their_own_events(api: Served) -> None:
    """A lone surrogate escape makes the whole body unreadable to the fast decoder; the slow path still keeps
    every other event."""
    first, second = query_event(), loan_event()
    surrogate = raw(as_dict(query_event(host="SURR"))).replace(b"SURR", b"\\ud800")
    nan = raw(as_dict(query_event())).replace(b'"fingerprint": "f1"', b'"fingerprint": NaN')
    bad_bytes = ev.encode(query_event(host="HOSTMARK")).replace(b"HOSTMARK", b"\xc3\x28")
    response = api.post(batch(ev.encode(first), surrogate, ev.encode(second), nan, bad_bytes))

    assert response.status_code == 200, response.text
    ack = response.json()
    assert ack["accepted"] == 2
    reasons = {r["index"]: r["reason"] for r in ack["rejected"]}
    assert set(reasons) == {1, 3, 4}
    assert "lone surrogate" in reasons[1] and "\\ud800" in reasons[1]
    assert "NaN" in reasons[3]
    assert "UTF-8" in reasons[4]
    assert set(api.stored()) == {first.id, second.id}


def test_the_same_batch_sent_twice_is_stored_once_and_reported_as_duplicates(api: Served) -> None:
    events = [query_event() for _ in range(40)] + [loan_event() for _ in range(10)]
    body = batch(*(ev.encode(e) for e in events))

    first = api.post(body, gzipped=True).json()
    again = api.post(body, gzipped=True).json()

    assert first == {"accepted": 50, "duplicates": 0, "rejected": []}
    assert again == {"accepted": 0, "duplicates": 50, "rejected": []}
    assert set(api.stored()) == {e.id for e in events}
    # Half old, half new: only the new ones count as accepted.
    fresh = [query_event() for _ in range(5)]
    mixed = api.post(batch(*(ev.encode(e) for e in events[:5] + fresh))).json()
    assert (mixed["accepted"], mixed["duplicates"]) == (5, 5)
    assert len(api.stored()) == 55


def test_the_stored_agent_is_the_credentials_name_never_the_payloads_agent_id(api: Served) -> None:
    claimed = query_event(agent_id="branch-server-that-does-not-exist")
    assert api.post_events(claimed).json()["accepted"] == 1

    row = api.stored()[claimed.id]
    assert row["agent"] == api.agent_name
    assert ev.decode(row["body"]).agent_id == api.agent_name
    page = api.get(kind="db.query").json()
    assert [(e["agent"], e["event"]["agent_id"]) for e in page["events"]] == [(api.agent_name, api.agent_name)]


# -- limits ------------------------------------------------------------------------------------------------------

LIMITS = """
[server]
max_body_bytes = "256KiB"
max_batch_bytes = "1MiB"
max_batch_events = 500
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One collector with small limits for the module: these tests only look at what their own requests stored."""
    tmp = tmp_path_factory.mktemp("limited")
    config = tmp / "collector.toml"
    config.write_text(LIMITS)
    with served(tmp / "collector", f"sqlite:///{tmp / 'custos.db'}", config=config) as s:
        yield s


def _head(api: Served, *lines: str) -> bytes:
    return ("\r\n".join([f"POST {EVENTS} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {api.agent_token}",
                         "Content-Type: application/json", *lines]) + "\r\n\r\n").encode()


def test_times_at_the_ends_of_the_calendar_are_read_as_the_ends_of_time_and_zoneless_ones_refused(
        api: Served) -> None:
    assert api.post_events(query_event()).status_code == 200
    everything = api.get(since="0001-01-01T00:00:00+00:01", until="9999-12-31T23:59:59-00:01")
    assert everything.status_code == 200 and len(everything.json()["events"]) == 1
    nothing = api.get(until="0001-01-01T00:00:00+00:01")
    assert nothing.status_code == 200 and nothing.json()["events"] == []
    zoneless = api.get(since="2026-11-27T00:00:00")
    assert zoneless.status_code == 422 and "since: give a time with its zone" in zoneless.text


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(limited: Served) -> None:
    chunks = iter([b" " * 65536] * 64)
    answer, sent = http_exchange(limited.collector.port, _head(limited, "Content-Length: 10000000000"), chunks)

    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"the limit is 262144" in answer
    assert sent < 4 << 20  # answered while the client was still sending


def test_a_chunked_body_without_length_is_cut_off_at_the_limit(limited: Served) -> None:
    piece = b" " * 16384
    # Never the closing zero-length chunk: a server that waited for the whole body would never answer.
    chunks = iter([b"%x\r\n%s\r\n" % (len(piece), piece)] * 1000)
    answer, sent = http_exchange(limited.collector.port, _head(limited, "Transfer-Encoding: chunked"), chunks)

    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"over 262144 bytes" in answer
    assert sent < 1000 * len(piece)
    assert httpx.get(limited.url + "/healthz", timeout=10).status_code == 200


def test_a_gzip_bomb_is_refused_once_its_output_passes_the_limit(limited: Served) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    inflated = 200 << 20  # 200 MiB of JSON whitespace in a few hundred KiB
    bomb = compressor.compress(b'{"events":[') + b"".join(
        compressor.compress(b" " * (1 << 20)) for _ in range(inflated >> 20)) + compressor.compress(b"]}")
    bomb += compressor.flush()
    assert len(bomb) < 256 << 10  # under the body limit as sent

    response = httpx.post(limited.url + EVENTS, content=bomb, timeout=30, headers={
        "Authorization": f"Bearer {limited.agent_token}", "Content-Type": "application/json",
        "Content-Encoding": "gzip"})

    assert response.status_code == 413
    assert "decompressed body is over 1048576 bytes" in response.json()["detail"]
    ok = limited.post_events(query_event())
    assert ok.status_code == 200 and ok.json()["accepted"] == 1


def test_a_body_just_under_the_limit_is_taken_and_just_over_is_refused(limited: Served) -> None:
    padding = (256 << 10) - len(batch(ev.encode(query_event())))
    event = query_event()
    under = batch(ev.encode(event)) + b" " * padding
    assert len(under) == 256 << 10
    assert limited.post(under).json()["accepted"] == 1
    response = limited.post(under + b" ")
    assert response.status_code == 413
    assert response.headers["connection"] == "close"


NESTED = b'{"events":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}"


@pytest.mark.parametrize(
    "body, headers, status, detail",
    [
        (b"", {}, 400, "not JSON"),
        (b"not json", {}, 400, "not JSON"),
        (b"[]", {}, 400, 'must be {"events"'),
        (b"{}", {}, 400, "missing required field `events`"),
        (b'{"events": 5}', {}, 400, 'must be {"events"'),
        (b'{"events": [{}', {}, 400, "not JSON"),
        (NESTED, {}, 400, "nested too deeply"),
        (b'{"events":[' + b"1," * 500 + b"1]}", {}, 400, "501 events in one batch; the limit is 500"),
        (b"this is not gzip", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
        (gzip.compress(b'{"events":[]}')[:-12], {"Content-Encoding": "gzip"}, 400, "truncated"),
        (b'{"events":[]}', {"Content-Encoding": "br"}, 415, "Content-Encoding 'br'"),
        (b'{"events":[]}', {"Content-Type": "text/plain"}, 415, "Content-Type 'text/plain'"),
    ],
    ids=["empty", "text", "array", "no-events", "events-not-list", "truncated", "nested", "too-many",
         "bad-gzip", "truncated-gzip", "brotli", "text-plain"],
)
def test_a_body_that_is_not_a_batch_is_refused_whole(limited: Served, body: bytes, headers: dict[str, str],
                                                     status: int, detail: str) -> None:
    before = set(limited.stored())
    response = limited.post(body, headers=headers)

    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    assert set(limited.stored()) == before
    assert limited.post_events(query_event()).json()["accepted"] == 1  # and the next batch is fine
