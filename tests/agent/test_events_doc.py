"""docs/events.md documents the event schema exactly: every field, whether it is required, and valid examples.

The schema is read with msgspec.inspect, so a field added to agent/events.py without a line in the document (or a
line left behind for a removed field) fails here.

The document's convention: one section per struct, whose heading names it in backticks — `Envelope`, `Actor`,
`Source`, `ProcessInfo`, and each kind (`db.query`) for its payload — holding a table whose rows start with
| `field` | type | required | …, where the required cell starts with "yes" or "no"; and a ```json example per kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import msgspec.inspect as mi
import pytest

from agent import events as ev

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
ENVELOPE = "Envelope"


def nested_structs(t: mi.Type) -> list[mi.StructType]:
    """Struct types reachable from `t` through unions, lists and dicts."""
    if isinstance(t, mi.StructType):
        return [t]
    if isinstance(t, mi.UnionType):
        return [s for member in t.types for s in nested_structs(member)]
    if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        return nested_structs(t.item_type)
    if isinstance(t, mi.DictType):
        return nested_structs(t.key_type) + nested_structs(t.value_type)
    return []


def schema_sections() -> dict[str, dict[str, bool]]:
    """Section key -> {JSON field name: required}, as agent/events.py defines them."""
    payload_kind = {cls: kind for kind, cls in ev.PAYLOAD_TYPES.items()}
    sections: dict[str, dict[str, bool]] = {ENVELOPE: {"kind": True}}
    pending = list(nested_structs(mi.type_info(ev.Event)))
    seen: set[type] = set()
    while pending:
        st = pending.pop()
        if st.cls in seen:
            continue
        seen.add(st.cls)
        if st.cls in ev.EVENT_TYPES:
            key = ENVELOPE
        elif st.cls in payload_kind:
            key = payload_kind[st.cls]
        else:
            key = st.cls.__name__
        for f in st.fields:
            sections.setdefault(key, {})[f.encode_name] = f.required
            pending.extend(nested_structs(f.type))
    return sections


@dataclass
class DocSection:
    heading: str
    rows: dict[str, str] = field(default_factory=dict)  # field -> required cell
    examples: list[str] = field(default_factory=list)


ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|[^|]*\|\s*([^|]*?)\s*\|")
HEADING_KEY = re.compile(r"`([^`]+)`")


def doc_sections(text: str) -> dict[str, DocSection]:
    """Sections of the document keyed by the first backticked name in their heading."""
    sections: dict[str, DocSection] = {}
    current: DocSection | None = None
    in_json = False
    block: list[str] = []
    for line in text.splitlines():
        if in_json:
            if line.startswith("```"):
                in_json = False
                if current is not None:
                    current.examples.append("\n".join(block))
            else:
                block.append(line)
            continue
        if line.startswith("```json"):
            in_json, block = True, []
            continue
        if line.startswith("#"):
            key = HEADING_KEY.search(line)
            current = None
            if key:
                if key.group(1) in sections:
                    raise AssertionError(f"two sections document `{key.group(1)}`")
                current = sections[key.group(1)] = DocSection(line)
            continue
        m = ROW.match(line)
        if m and current is not None:
            if m.group(1) in current.rows:
                raise AssertionError(f"`{m.group(1)}` documented twice under {current.heading!r}")
            current.rows[m.group(1)] = m.group(2).lower()
    return sections


SCHEMA = schema_sections()
DOCUMENTED = doc_sections(DOC.read_text())


def test_every_struct_of_the_schema_has_a_section() -> None:
    missing = sorted(set(SCHEMA) - set(DOCUMENTED))
    assert not missing, f"docs/events.md has no section for {missing}"


@pytest.mark.parametrize("key", sorted(SCHEMA))
def test_every_field_is_documented_with_whether_it_is_required(key: str) -> None:
    section = DOCUMENTED.get(key)
    assert section is not None, f"docs/events.md has no section headed with `{key}`"
    fields = SCHEMA[key]
    undocumented = sorted(set(fields) - set(section.rows))
    assert not undocumented, f"{key}: fields missing from docs/events.md: {undocumented}"
    stale = sorted(set(section.rows) - set(fields))
    assert not stale, f"{key}: docs/events.md documents fields the schema does not have: {stale}"
    wrong = {
        name: cell for name, cell in section.rows.items()
        if not cell.startswith("yes" if fields[name] else "no")
    }
    assert not wrong, f"{key}: the Required column disagrees with the schema for {wrong}"


@pytest.mark.parametrize("kind", sorted(ev.KINDS))
def test_every_kind_has_an_example_that_decodes_as_that_kind(kind: str) -> None:
    section = DOCUMENTED.get(kind)
    assert section is not None and section.examples, f"docs/events.md has no ```json example for {kind}"
    for example in section.examples:
        event = ev.decode(example)
        assert event.__struct_config__.tag == kind
        # Examples are written as the encoder writes them, so they show the real shape (defaults left out).
        assert msgspec.json.decode(example) == msgspec.json.decode(ev.encode(event))


def test_the_documented_schema_version_is_the_current_one() -> None:
    assert f"(currently **{ev.SCHEMA_VERSION}**)" in DOC.read_text()


def test_the_checker_notices_an_undocumented_field() -> None:
    # The same parse on a copy of the document with one row removed must lose exactly that field.
    text = DOC.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `customer_keys_total` |"))
    sections = doc_sections(text.replace(row + "\n", ""))
    assert "customer_keys_total" in SCHEMA["db.query"]
    assert "customer_keys_total" not in sections["db.query"].rows
    assert set(SCHEMA["db.query"]) - set(sections["db.query"].rows) == {"customer_keys_total"}
