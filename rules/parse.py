"""Reading rule files: YAML → Rule objects, through the one table that maps a rule's `kind` to its class.

`load_rules` stops at the first problem (start-up); `load_rules(..., collect=True)` reads on and returns every
problem with file, line and field (`custos rules lint`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rules.alerts import check_template
from rules.context import Context, context_from_mapping
from rules.errors import RuleProblems, RuleSyntaxError
from rules.kinds.absence import AbsenceRule
from rules.kinds.baseline import BaselineRule
from rules.kinds.first_seen import FirstSeenRule
from rules.kinds.linkage import LinkageRule
from rules.kinds.match import MatchRule
from rules.kinds.need_to_know import NeedToKnowRule
from rules.kinds.sequence import SequenceRule
from rules.kinds.threshold import OffHoursRule, ThresholdRule
from rules.model import SEVERITIES, Reader, Rule, allow, choice, condition, duration, fields, flag, tests, text, texts
from rules.yamlsafe import Located, load_yaml_file

RULE_KINDS: dict[str, type[Rule]] = {
    "match": MatchRule,
    "threshold": ThresholdRule,
    "off_hours": OffHoursRule,
    "baseline": BaselineRule,
    "first_seen": FirstSeenRule,
    "sequence": SequenceRule,
    "need_to_know": NeedToKnowRule,
    "absence": AbsenceRule,
    "linkage": LinkageRule,
}
COMMON = {"id", "title", "description", "severity", "tags", "kind", "events", "filter", "group_by", "suppress",
          "allow", "include_system", "enabled", "summary", "tests"}
BUILTIN_DIR = Path(__file__).parent / "builtin"
CONTEXT_FILE = "context.yaml"
_DEFAULT_SUPPRESS = {"absence": 3600.0, "first_seen": 12 * 3600.0}


def _summary(v: Any) -> str:
    s = text(v)
    check_template(s)
    return s


def parse_rule(doc: Any, file: str | None = None, problems: list[RuleSyntaxError] | None = None) -> Rule | None:
    """One rule from its YAML mapping. Returns None (with `problems` filled) when collecting and it is invalid."""
    if not isinstance(doc, Mapping):
        err = RuleSyntaxError("a rule file holds one mapping (id, title, kind, …)", file=file)
        if problems is None:
            raise err
        problems.append(err)
        return None
    r = Reader(doc, file, problems)
    kind = r.take("kind", choice(*RULE_KINDS))
    cls = RULE_KINDS.get(kind) if kind else None
    common: dict[str, Any] = {
        "id": r.take("id", text), "title": r.take("title", text), "description": r.take("description", text, ""),
        "severity": r.take("severity", choice(*SEVERITIES)), "tags": r.take("tags", texts, ()),
        "events": r.take("events", texts, ()), "filter": r.take("filter", condition(file, "filter"), None),
        "group_by": r.take("group_by", lambda v: fields(v) if v != [] else (), ("person",)),
        "suppress": r.take("suppress", duration, _DEFAULT_SUPPRESS.get(kind or "", 86400.0)),
        "allow": r.take("allow", allow(file), None), "include_system": r.take("include_system", flag, False),
        "enabled": r.take("enabled", flag, True), "summary": r.take("summary", _summary, None),
        "tests": r.take("tests", tests(file), ()),
    }
    if common["allow"] is None:
        common.pop("allow")
    if cls is None:
        r.unknown(COMMON | {f for c in RULE_KINDS.values() for f in c.FIELDS})  # type: ignore[attr-defined]
        return None
    specific = cls.read(r)  # type: ignore[attr-defined]
    r.unknown(COMMON | cls.FIELDS)  # type: ignore[attr-defined]
    if r.failed:
        return None
    if cls is SequenceRule and not common["events"]:
        common["events"] = tuple(sorted({k for s in specific["steps"] for k in s.events}))
    try:
        return cls(**common, **specific, where=r.where())  # type: ignore[call-arg]
    except RuleSyntaxError as e:
        if problems is None:
            raise
        problems.append(e)
        return None


@dataclass
class RuleSet:
    rules: list[Rule]
    context: Context
    problems: list[RuleSyntaxError] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # rule id → file
    context_doc: dict[str, Any] = field(default_factory=dict)  # the merged `context:` mappings, as read

    def by_id(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise RuleSyntaxError(f"no rule {rule_id!r}; `custos rules lint` lists the loaded rules")


def _merge_context(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for section, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(section), Mapping):
            merged = dict(base[section])
            merged.update(value)
            base[section] = merged
        else:
            base[section] = value


def load_rules(dirs: Iterable[str | Path] | None = None, *, builtin: bool = True, collect: bool = False,
               hash_names: Any = None) -> RuleSet:
    """The built-in rules, then each directory's (a later rule with the same id replaces an earlier one), with
    `context.yaml` files merged in order and their `overrides` applied."""
    problems: list[RuleSyntaxError] | None = [] if collect else None
    paths = ([BUILTIN_DIR] if builtin else []) + [Path(d) for d in (dirs or [])]
    ctx_doc: dict[str, Any] = {}
    ctx_lines: Located | None = None
    rule_docs: list[tuple[str, Any]] = []
    for d in paths:
        if d.is_file():
            files = [d]
        elif d.is_dir():
            files = sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml"))
        else:
            err = RuleSyntaxError("no such rule file or directory", file=str(d))
            if problems is None:
                raise err
            problems.append(err)
            continue
        for path in files:
            try:
                doc = load_yaml_file(path)
            except RuleSyntaxError as e:
                if problems is None:
                    raise
                problems.append(e)
                continue
            if path.name == CONTEXT_FILE or (isinstance(doc, Mapping) and set(doc) == {"context"}):
                if not isinstance(doc, Mapping) or not isinstance(doc.get("context"), Mapping):
                    err = RuleSyntaxError("a context file holds one mapping under `context:`", file=str(path))
                    if problems is None:
                        raise err
                    problems.append(err)
                    continue
                _merge_context(ctx_doc, doc["context"])
                ctx_lines = doc["context"]
                continue
            rule_docs.append((str(path), doc))
    try:
        ctx = context_from_mapping(ctx_doc, file=ctx_lines.file if ctx_lines is not None else None,
                                   hash_names=hash_names)
    except RuleSyntaxError as e:
        if problems is None:
            raise
        problems.append(e)
        ctx = Context()
    rules: dict[str, Rule] = {}
    files: dict[str, str] = {}
    for path, doc in rule_docs:
        if isinstance(doc, Mapping) and doc.get("id") in ctx.overrides:
            changed = Located(doc)
            changed.file, changed.line, changed.key_lines = path, getattr(doc, "line", None), getattr(
                doc, "key_lines", {})
            changed.update(ctx.overrides[doc["id"]])
            doc = changed
        rule = parse_rule(doc, path, problems)
        if rule is not None:
            rules[rule.id] = rule
            files[rule.id] = path
    if problems:
        problems.sort(key=lambda p: (p.file or "", p.line or 0))
    return RuleSet(list(rules.values()), ctx, problems or [], files, ctx_doc)


def load_rules_strict(dirs: Iterable[str | Path] | None = None, *, builtin: bool = True) -> RuleSet:
    """As load_rules, but reading every file and raising all their problems at once."""
    rs = load_rules(dirs, builtin=builtin, collect=True)
    if rs.problems:
        raise RuleProblems(rs.problems)
    return rs
