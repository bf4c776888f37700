"""Events encoded straight to bytes are, byte for byte, what the schema's Structs encode to."""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.event_bytes import EnvelopeBytes, tag_of
from agent.event_bytes import json as encode_json
from agent import events as ev
from agent.events import Actor, Source, decode, encode

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
name = st.one_of(st.none(), text.filter(bool))
# Past times only: ids never go backwards in a process, so a future time would move every later id forward.
times = st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2026, 1, 1),
                     timezones=st.just(dt.timezone.utc))
payloads = st.one_of(
    st.builds(ev.DbQueryPayload, session_id=text.filter(bool), statement_type=text, fingerprint=text, statement=text,
              database=name, client_port=st.one_of(st.none(), st.integers(0, 65535)), started_at=st.none() | times,
              tables_read=st.lists(text.filter(bool), max_size=3), rows=st.none() | st.integers(0, 10**12),
              system=st.booleans(), unknown=st.lists(text.filter(bool), max_size=3)),
    st.builds(ev.DbSessionPayload, session_id=text.filter(bool), phase=st.sampled_from(["start", "end", "observed"]),
              tls=st.none() | st.booleans()),
    st.builds(ev.ParseErrorPayload, location=text, offset=st.none() | st.integers(0, 10**12), reason=text),
)
KINDS = {ev.DbQueryPayload: ev.DbQuery, ev.DbSessionPayload: ev.DbSession, ev.ParseErrorPayload: ev.ParseError}


@settings(max_examples=300)
@given(payloads, times, name, name, text, st.sampled_from(["", "agent-7"]), text.filter(bool))
def test_envelope_bytes_equal_the_struct_encoding(payload: msgspec.Struct, ts: dt.datetime, db_user: str | None,
                                                  end_user: str | None, source_name: str, agent_id: str,
                                                  host: str) -> None:
    source = Source(type="pgaudit", name=source_name)
    envelope = EnvelopeBytes(source, host, agent_id)
    kind = KINDS[type(payload)]
    event_id, body = envelope.event(tag_of(kind), encode_json(payload), ts, envelope.actor(db_user, end_user))
    expected = kind(id=event_id, ts=ts, host=host, source=source, agent_id=agent_id,  # type: ignore[call-arg]
                    actor=Actor(db_user=db_user, end_user=end_user), payload=payload)
    assert body == encode(expected)
    assert decode(body) == expected  # and the schema accepts the id


def test_events_at_one_time_get_distinct_ids_in_order() -> None:
    envelope = EnvelopeBytes(Source(type="pgaudit"), "db01")
    ts = dt.datetime(2026, 11, 27, 3, 22, 47, 123000, tzinfo=dt.timezone.utc)
    payload = encode_json(ev.ParseErrorPayload(location="x", reason="r"))
    ids = [envelope.event(tag_of(ev.ParseError), payload, ts, envelope.actor(None, None))[0] for _ in range(5000)]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    assert all(decode(envelope.event(tag_of(ev.ParseError), payload, ts, b"{}")[1]).ts == ts for _ in range(3))
