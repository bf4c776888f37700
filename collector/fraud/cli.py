"""`custos sources …`, `custos import business-events`, `custos investigate …` and `custos evidence export`."""

from __future__ import annotations

import csv
import datetime as dt
import sys
from pathlib import Path

import click

from agent.errors import CustosError
from collector.cli import Context, credential_commands, pass_ctx

MAX_ERRORS_SHOWN = 50


@click.group("sources")
def sources_group() -> None:
    """Credentials of business systems (lending, core banking) that send business records."""


credential_commands(sources_group, "source", "business source", "it may POST /api/v1/business-events with "
                    "this credential (Authorization: Bearer …)")


@click.group("import")
def import_group() -> None:
    """Import records from files."""


@import_group.command("business-events")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", default="import", show_default=True,
              help="Name the records are stored under (as a source credential's name would be).")
@pass_ctx
def import_business(ctx: Context, path: Path, source: str) -> None:
    """Import business records from a CSV file with a header row: type, ts, ref, customer or customer_key, and
    the fields of the record type (application_id, amount, new_device, case_id …; see docs/fraud.md). Customer
    identifiers in clear are hashed with the customer key before anything is stored. Valid rows are stored even
    when others are refused; exits 1 when any row was refused."""
    from collector.fraud.business import convert
    from collector.store import EventStore

    hasher = ctx.config.customers.hasher()
    events, errors = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "type" not in reader.fieldnames:
                raise CustosError(f"{path}: the first row must be a header naming the columns, with at least "
                                  "type, ts and customer or customer_key")
            for row in reader:
                if None in row:
                    errors.append(f"{path}:{reader.line_num}: more values than the header has columns")
                    continue
                converted = convert({k.strip(): (v or "").strip() for k, v in row.items()}, source, hasher)
                if converted.event is None:
                    errors.append(f"{path}:{reader.line_num}: {converted.reason}")
                else:
                    events.append(converted.event)
    except UnicodeDecodeError as e:
        raise CustosError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8 CSV") from e
    result = EventStore(ctx.engine()).insert(events, agent=source) if events else None
    stored = len(result.inserted) if result else 0
    for line in errors[:MAX_ERRORS_SHOWN]:
        click.echo(line, err=True)
    if len(errors) > MAX_ERRORS_SHOWN:
        click.echo(f"… and {len(errors) - MAX_ERRORS_SHOWN} more refused rows", err=True)
    click.echo(f"{stored} records stored, {len(events) - stored} already stored, {len(errors)} refused")
    if errors:
        sys.exit(1)


def when(text: str) -> dt.datetime:
    from collector.fraud.investigate import parse_when

    try:
        return parse_when(text)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


@click.group("investigate")
def investigate_group() -> None:
    """Investigations: who was the common point of compromise of fraud victims; who read a customer."""


@investigate_group.command("cpc")
@click.option("--since", default="90d", show_default=True,
              help="Confirmed frauds from this time: a span back from now (90d) or a date.")
@click.option("--until", default=None, help="… to this time (default: now).")
@click.option("--lookback", default="30d", show_default=True,
              help="Reads count when they came at most this long before the fraud.")
@click.option("--top", default=20, show_default=True, help="People shown.")
@click.option("--alert-below", default=1e-6, show_default=True,
              help="Raise an alert for each person whose adjusted p-value is below this (0: none).")
@pass_ctx
def investigate_cpc(ctx: Context, since: str, until: str | None, lookback: str, top: int,
                    alert_below: float) -> None:
    """Rank the staff whose reads cover the customers confirmed as fraud victims far more often than chance:
    customers read (n), of them hit (k), share of all hit customers, lift over the base rate, the
    hypergeometric p-value and the same adjusted for the number of people ranked (Bonferroni)."""
    from agent.units import parse_duration
    from collector.fraud.investigate import cpc, raise_cpc_alerts

    engine = ctx.engine()
    report = cpc(engine, when(since), when(until) if until else dt.datetime.now(dt.timezone.utc),
                 lookback=dt.timedelta(seconds=parse_duration(lookback)), top=top)
    click.echo(f"{report.confirmed} customers confirmed as fraud victims between {report.since:%Y-%m-%d %H:%M} and "
               f"{report.until:%Y-%m-%d %H:%M} UTC; {report.frauds} of them among the {report.population} customers "
               f"read by {report.people} people (reads up to {lookback} before the fraud)")
    if not report.rows or not report.frauds:
        click.echo("nothing to rank")
        return
    click.echo(f"{'#':>3}  {'person':<28} {'team':<14} {'read':>7} {'hit':>5} {'share':>6} {'lift':>7} "
               f"{'p':>9} {'p_adj':>9}  reads of hit customers")
    for i, r in enumerate(report.rows, 1):
        span = ""
        if r.hits:
            span = (f"{min(h.read_at for h in r.hits):%Y-%m-%d %H:%M} … "
                    f"{max(h.read_at for h in r.hits):%Y-%m-%d %H:%M}")
        click.echo(f"{i:>3}  {r.name[:28]:<28} {(r.team or '-')[:14]:<14} {r.read:>7} {r.hit:>5} "
                   f"{r.share:>6.1%} {r.lift:>7.1f} {_p(r.p):>9} {_p(r.p_adj):>9}  {span}")
    if alert_below > 0:
        raised = raise_cpc_alerts(engine, report, alert_below)
        if raised:
            click.echo(f"{len(raised)} alert(s) raised: custos.common_point_of_compromise")


def _p(p: float) -> str:
    return f"{p:.1e}" if p > 0 else "<1e-300"  # below what a double holds


@investigate_group.command("customer")
@click.argument("identifier")
@click.option("--key", "is_key", is_flag=True, help="IDENTIFIER is already the 64-hex keyed hash.")
@click.option("--case", "is_case", is_flag=True, help="IDENTIFIER is a fraud case id from the lending system.")
@click.option("--since", default="90d", show_default=True, help="Reads from this time: 90d back, or a date.")
@click.option("--until", default=None, help="… to this time (default: now).")
@pass_ctx
def investigate_customer(ctx: Context, identifier: str, is_key: bool, is_case: bool, since: str,
                         until: str | None) -> None:
    """Everyone who read one customer: IDENTIFIER as written anywhere (hashed here with the customer key, never
    stored), its keyed hash (--key) or a fraud case (--case); with each statement's fingerprint and rows, and any
    file export or removable-media copy the reader made within a day."""
    from collector.fraud.victim import key_of_case, look_up

    engine = ctx.engine()
    if is_case:
        found = key_of_case(engine, identifier)
        if found is None:
            raise CustosError(f"no confirmed fraud with case id {identifier!r} among the business events")
        key = found[0]
    elif is_key:
        key = identifier.strip().lower()
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise CustosError("--key: IDENTIFIER must be the 64-hex keyed hash")
    else:
        hasher = ctx.config.customers.hasher()
        if hasher is None:
            raise CustosError("no customer key to hash IDENTIFIER with: set customers -> key_file or "
                              "CUSTOS_CUSTOMER_KEY_SECRET (the proxy's key), or give the hash with --key")
        key = hasher.hash(identifier)
    report = look_up(engine, key, when(since), when(until) if until else dt.datetime.now(dt.timezone.utc))
    click.echo(f"customer {key[:16]}…  reads {report.since:%Y-%m-%d %H:%M} … {report.until:%Y-%m-%d %H:%M} UTC: "
               f"{len(report.reads)} by {len(report.readers)} people")
    for h in report.happenings:
        click.echo(f"  {h.ts:%Y-%m-%d %H:%M}  {h.kind.removeprefix('business.')}  {h.ref or ''}")
    if report.reads:
        click.echo(f"{'read at (UTC)':<17} {'person':<24} {'account':<16} {'rows':>7} {'custs':>6}  "
                   "fingerprint       statement")
    for r in report.reads:
        click.echo(f"{r.ts:%Y-%m-%d %H:%M}  {r.name[:24]:<24} {r.account[:16]:<16} {r.rows:>7} {r.customers:>6}  "
                   f"{r.fingerprint[:16]:<16}  {r.statement[:80]}")
    for e in report.exports:
        click.echo(f"then {e.ts:%Y-%m-%d %H:%M}  {e.who}  {e.what}  ({e.identifiers} identifiers, "
                   f"{(e.ts - e.after.ts).total_seconds() / 3600:.1f} h after the read at {e.after.ts:%H:%M})")


@click.group("evidence")
def evidence_group() -> None:
    """Evidence for investigators."""


@evidence_group.command("export")
@click.option("--case", "case_id", required=True, help="The case: its first alert's id (any alert of it will do).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The zip file to write (never overwritten).")
@pass_ctx
def evidence_export(ctx: Context, case_id: str, out: Path) -> None:
    """Write a case — its alerts, the events behind them, the person's activity over the period — and a SHA-256
    manifest to a zip file, for investigators or the police. The export is recorded in the audit trail."""
    import getpass

    from collector.fraud.evidence import export_case

    done = export_case(ctx.engine(), case_id, out, actor=f"cli:{getpass.getuser()}")
    click.echo(f"{done.path}: {done.alerts} alert(s), {done.events} events; MANIFEST.sha256 has SHA-256 "
               f"{done.manifest_sha256}")
