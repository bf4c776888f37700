"""The `custos rules …`, `custos directory import` and `custos assignments import` commands (registered by
collector/cli.py). Kept apart so the CLI module stays small."""

from __future__ import annotations

import csv
import datetime as dt
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from agent.units import parse_duration


def _ctx() -> Any:
    """The `Context` of collector/cli.py (configuration and database)."""
    return click.get_current_context().find_root().obj


def _dirs(ctx: Any, dirs: tuple[str, ...]) -> list[str]:
    if dirs:
        return list(dirs)
    try:
        site = ctx.config.rules.dir
    except Exception:  # noqa: BLE001 - no usable collector.toml: the built-in rules alone
        site = None
    return [site] if site else []


@click.group("rules")
def rules_group() -> None:
    """The rule engine: test, lint and replay rules."""


@rules_group.command("lint")
@click.argument("dirs", nargs=-1, type=click.Path(exists=True))
@click.option("--no-builtin", is_flag=True, help="Check only the given files, not the built-in set.")
def rules_lint(dirs: tuple[str, ...], no_builtin: bool) -> None:
    """Check rule files (the built-in set and DIRS, default the site's [rules] dir); every problem is listed
    with file, line and field."""
    from rules.parse import load_rules

    rs = load_rules(_dirs(_ctx(), dirs), builtin=not no_builtin, collect=True)
    for p in rs.problems:
        click.echo(str(p))
    if rs.problems:
        click.echo(f"{len(rs.problems)} problems in the rule files", err=True)
        sys.exit(1)
    click.echo(f"{len(rs.rules)} rules OK")


@rules_group.command("test")
@click.argument("dirs", nargs=-1, type=click.Path(exists=True))
@click.option("--rule", "rule_id", help="Run only this rule's cases.")
@click.option("-v", "--verbose", is_flag=True, help="Print the alerts each case raised.")
def rules_test(dirs: tuple[str, ...], rule_id: str | None, verbose: bool) -> None:
    """Run every rule's own test cases and print pass/fail per case; exit 1 if any fails."""
    from rules.parse import load_rules
    from rules.testing import run_rule_tests

    rs = load_rules(_dirs(_ctx(), dirs), collect=True)
    for p in rs.problems:
        click.echo(f"ERROR {p}")
    results = run_rule_tests(rs, rule_id)
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        detail = "" if r.passed else f"  ({r.error or f'{r.got} alerts, expected {r.expected}'})"
        click.echo(f"{mark} {r.rule_id}: {r.case}{detail}")
        if verbose or not r.passed:
            for a in r.alerts:
                click.echo(f"       alert: {a.summary}")
    failed = sum(not r.passed for r in results)
    click.echo(f"{len(results) - failed} cases passed, {failed} failed")
    if failed or rs.problems or not results:
        sys.exit(1)


@rules_group.command("replay")
@click.option("--since", default="30d", show_default=True, help="How far back to evaluate, such as 30d or 12h.")
@click.option("--rule", "rule_ids", multiple=True, help="Only these rules (a new or changed one).")
@click.option("--dry-run", is_flag=True, help="Print the alerts; store nothing.")
def rules_replay(since: str, rule_ids: tuple[str, ...], dry_run: bool) -> None:
    """Evaluate stored history with fresh rule state; alerts already raised (same id, or the same rule and
    person within the rule's suppression period) are not stored or sent again."""
    from collector.alerts import AlertStore
    from collector.replay import replay

    ctx = _ctx()
    engine = ctx.engine()
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=parse_duration(since))
    result = replay(engine, _dirs(ctx, ()), start, list(rule_ids) or None)
    saved = [] if dry_run else AlertStore(engine).save(result.alerts, origin="replay", suppress=result.suppress)
    by_rule = Counter(a.rule_id for a in result.alerts)
    kept = set(saved)
    for a in result.alerts:
        tag = "new " if a.alert_id in kept else ("    " if dry_run else "dup ")
        click.echo(f"{tag}{a.ts:%Y-%m-%d %H:%M} {a.severity:<8} {a.rule_id:<36} {a.summary}")
    click.echo(f"{result.evaluated} events evaluated since {start:%Y-%m-%d %H:%M} UTC; "
               f"{len(result.alerts)} alerts ({', '.join(f'{k}: {v}' for k, v in sorted(by_rule.items())) or '-'}); "
               f"{'none stored (dry run)' if dry_run else f'{len(saved)} new stored'}")


@click.group("directory")
def directory_group() -> None:
    """The staff directory the rules use to name people."""


@directory_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--merge", is_flag=True, help="Update these people and keep the others (default: replace all).")
def directory_import(path: str, merge: bool) -> None:
    """Import PATH, a CSV with columns staff_id,name,team,manager,end_date,db_users,os_users,kind,shift
    (several accounts separated by ';')."""
    from collector.rules_state import import_directory
    from rules.identity import read_directory_csv

    n = import_directory(_ctx().engine(), read_directory_csv(path), replace=not merge)
    click.echo(f"{n} people imported")


@click.group("assignments")
def assignments_group() -> None:
    """Work assignments (customer keys per person) for need-to-know rules."""


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@assignments_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--source", required=True, help="Which assignment this is (loan_queue, portfolio …); "
                                                "replaces that source's previous import.")
def assignments_import(path: str, source: str) -> None:
    """Import PATH, a CSV with columns staff_id,customer_key (the keyed hash custos uses for the customer)."""
    from agent.errors import CustosError
    from collector.rules_state import import_assignments

    rows = []
    with open(Path(path), newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            key = (row.get("customer_key") or "").strip().lower()
            if not _HEX64.match(key) or not (row.get("staff_id") or "").strip():
                raise CustosError(f"{path}:{n}: customer_key must be the 64-hex keyed hash and staff_id set")
            rows.append((row["staff_id"].strip(), key))
    click.echo(f"{import_assignments(_ctx().engine(), rows, source)} assignments imported from {source}")
