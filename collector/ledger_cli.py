"""`custos verify` and `custos ledger seal`: the ledger from the command line (collector/ledger.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from collector.cli import Context, pass_ctx


@click.command("verify")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
              help="Check only blocks sealed at or after this time (UTC unless it gives a zone), and the link "
                   "into the first of them.")
@click.option("--ledger-file", metavar="FILE",
              help="The ledger file to compare the blocks with (default: integrity.ledger_file).")
@pass_ctx
def verify_command(ctx: Context, since: dt.datetime | None, ledger_file: str | None) -> None:
    """Check every stored event and alert against the ledger block that sealed it and every block against the
    chain and the ledger file. Prints each record changed, deleted or inserted and each block rewritten or
    missing; exits 1 when there is any, 0 when everything verifies."""
    from collector.verify import verify

    when = since if since is None or since.tzinfo else since.replace(tzinfo=dt.timezone.utc)
    path = ledger_file if ledger_file is not None else ctx.config.integrity.ledger_file or None
    engine = ctx.engine()
    try:
        report = verify(engine, since=when, ledger_file=path)
    finally:
        engine.dispose()
    for problem in report.problems:
        click.echo(str(problem))
    against = f" and the ledger file {path}" if path else " (no ledger file to compare with)"
    verdict = "clean" if report.clean else f"{len(report.problems)} problems"
    click.echo(f"{report.blocks} blocks, {report.records} records checked{against}: {verdict}")
    raise SystemExit(0 if report.clean else 1)


@click.group("ledger")
def ledger_group() -> None:
    """The ledger of sealed blocks."""


@ledger_group.command("seal")
@pass_ctx
def ledger_seal(ctx: Context) -> None:
    """Seal what was stored since the last block now (the collector also does it every integrity.seal_every)."""
    from collector.ledger import Publisher, seal

    cfg = ctx.config.integrity
    engine = ctx.engine()
    publisher = Publisher(cfg.ledger_file, cfg.syslog)
    try:
        blocks: list[Any] = seal(engine, publisher, settle=0.0, max_records=cfg.block_max_records)
    finally:
        publisher.close()
        engine.dispose()
    for b in blocks:
        click.echo(f"block {b.block_no}: {b.records} records, root {b.root}")
    if not blocks:
        click.echo("nothing new to seal")
