"""`custos sources …`, `custos import business-events`, `custos investigate …` and `custos evidence export`."""

from __future__ import annotations

import csv
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
