"""Reading rule files: safe YAML, errors that name file, line and field, lint collecting every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.errors import RuleProblems, RuleSyntaxError
from rules.parse import load_rules, load_rules_strict, parse_rule
from rules.yamlsafe import load_yaml

GOOD = """\
id: site.big_reads
title: Big reads
kind: threshold
severity: high
tags: [T1213]
events: [db.query]
filter:
  payload.rows: {gte: 10}
aggregate: count
window: 1h
limit: 3
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_duplicate_keys_are_refused_with_both_lines() -> None:
    with pytest.raises(RuleSyntaxError) as info:
        load_yaml("id: a\ntitle: x\nid: b\n", "r.yaml")
    assert str(info.value) == "r.yaml:3: id: duplicate key (first on line 1); keep one"


def test_yaml_tags_that_build_python_objects_are_refused() -> None:
    with pytest.raises(RuleSyntaxError):
        load_yaml("x: !!python/object/apply:os.system ['true']\n", "evil.yaml")


def test_a_bad_field_is_reported_with_file_line_and_field(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", GOOD.replace("limit: 3", "limit: many"))
    with pytest.raises(RuleSyntaxError) as info:
        load_rules([tmp_path], builtin=False)
    assert str(info.value) == f"{tmp_path / 'r.yaml'}:11: limit: must be a positive number"


def test_lint_collects_every_problem_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD.replace("severity: high", "severity: urgent").replace("window: 1h", "window: soon"))
    write(tmp_path, "b.yaml", GOOD.replace("site.big_reads", "site.other").replace("payload.rows: {gte: 10}",
                                                                                   "payload.rows: {about: 10}"))
    write(tmp_path, "c.yaml", GOOD.replace("site.big_reads", "site.third").replace("tags: [T1213]",
                                                                                   "tags: [T1213]\nwindwo: 2h"))
    rs = load_rules([tmp_path], builtin=False, collect=True)
    where = {(Path(p.file).name, p.line, p.field) for p in rs.problems}
    assert ("a.yaml", 4, "severity") in where
    assert ("a.yaml", 10, "window") in where
    assert ("b.yaml", 8, "filter.payload.rows") in where
    assert ("c.yaml", 6, "windwo") in where
    assert [r.id for r in rs.rules] == []
    with pytest.raises(RuleProblems) as info:
        load_rules_strict([tmp_path], builtin=False)
    assert len(info.value.problems) == len(rs.problems) == 4


@pytest.mark.parametrize("change, field", [
    (("kind: threshold", "kind: magic"), "kind"),
    (("events: [db.query]", "events: [db.nothing]"), "events"),
    (("tags: [T1213]", "tags: [collection]"), "tags"),
    (("id: site.big_reads", "id: Big Reads!"), "id"),
    (("payload.rows: {gte: 10}", "payload.rows: {gte: ten}"), "filter.payload.rows"),
    (("payload.rows: {gte: 10}", "payload.nope.x: {regex: '('}"), "filter.payload.nope.x"),
    (("payload.rows: {gte: 10}", "persona.team: loans"), "filter.persona.team"),
])
def test_invalid_rules_name_the_field(change, field) -> None:  # type: ignore[no-untyped-def]
    problems: list[RuleSyntaxError] = []
    rule = parse_rule(load_yaml(GOOD.replace(*change), "r.yaml"), "r.yaml", problems)
    assert rule is None
    assert [p.field for p in problems] == [field], problems
    assert problems[0].file == "r.yaml" and problems[0].line is not None


def test_rule_parts_compare_equal_whatever_file_they_came_from() -> None:
    a = parse_rule(load_yaml(GOOD, "one.yaml"), "one.yaml")
    b = parse_rule(load_yaml("\n\n" + GOOD, "two.yaml"), "two.yaml")
    assert a == b
    assert a is not None and b is not None and a.where.line != b.where.line


def test_a_site_rule_replaces_a_builtin_one_and_overrides_change_settings(tmp_path: Path) -> None:
    write(tmp_path, "context.yaml", "context:\n  overrides:\n    custos.bulk_sensitive_read: {limit: 20000}\n"
                                    "  lists:\n    service_accounts: [etl]\n")
    rs = load_rules([tmp_path])
    assert rs.by_id("custos.bulk_sensitive_read").limit == 20000  # type: ignore[attr-defined]
    assert rs.context.list("service_accounts") == frozenset({"etl"})
    assert rs.context.list("card_classes") == frozenset({"card_number"})  # built-in lists stay


def test_a_summary_template_cannot_reach_into_objects() -> None:
    problems: list[RuleSyntaxError] = []
    parse_rule(load_yaml(GOOD + 'summary: "{person.__class__}"\n', "r.yaml"), "r.yaml", problems)
    assert [p.field for p in problems] == ["summary"]
