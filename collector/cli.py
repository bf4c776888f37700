"""`custos`: the collector's command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from agent import __version__
from agent.errors import CustosError
from collector.config import CollectorConfig, load_config

CONFIG_HELP = "collector.toml to read (default: $CUSTOS_CONFIG, else built-in defaults and the environment)."


class Context:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: CollectorConfig | None = None

    @property
    def config(self) -> CollectorConfig:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def engine(self):  # type: ignore[no-untyped-def]
        from collector.db import make_engine

        return make_engine(self.config.database.url)


pass_ctx = click.make_pass_decorator(Context)


@click.group()
@click.version_option(__version__, prog_name="custos")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """custos collector: stores what the agents saw, runs the rules, tells people."""
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic says at INFO how it talks to the database on every start; only -vv wants that.
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    ctx.obj = Context(config_path)


# -- database ---------------------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """The collector's database."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Schema revision to go to.")
@pass_ctx
def db_upgrade(ctx: Context, revision: str) -> None:
    """Create or migrate the database schema (SQLite file or PostgreSQL) to the newest revision."""
    from collector.migrate import current, upgrade

    engine = ctx.engine()
    upgrade(engine, revision)
    click.echo(f"database at schema {current(engine)}")


# -- serving ----------------------------------------------------------------------------------------------------


@cli.command()
@click.option("--port-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the port actually bound here (useful with CUSTOS_LISTEN=127.0.0.1:0).")
@click.option("--access-log/--no-access-log", default=False, help="Log every HTTP request.")
@pass_ctx
def serve(ctx: Context, port_file: Path | None, access_log: bool) -> None:
    """Run the collector (HTTP API) where CUSTOS_LISTEN or [server] listen says."""
    from collector.serve import serve as run_server

    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    run_server(ctx.config, port_file=port_file, access_log=access_log)


# -- credentials ------------------------------------------------------------------------------------------------


@cli.group()
def agents() -> None:
    """Agent credentials."""


def credential_commands(group: click.Group, kind: str, noun: str, enrolled: str) -> None:
    """Add `enroll NAME`, `revoke NAME` and `list` for credentials of `kind` (agent, source) to `group`."""

    @group.command("enroll", help=f"Create a credential for {noun} NAME; it is printed once, on the last line, "
                                  "and never stored.")
    @click.argument("name")
    @pass_ctx
    def enroll(ctx: Context, name: str) -> None:
        from collector import credentials

        token = credentials.create(ctx.engine(), name, kind)  # type: ignore[arg-type]
        click.echo(f"{noun} {name} enrolled; {enrolled}. It is not shown again:")
        click.echo(token)

    @group.command("revoke", help=f"Revoke {noun} NAME's credential; its next request is refused.")
    @click.argument("name")
    @pass_ctx
    def revoke(ctx: Context, name: str) -> None:
        from collector import credentials

        credentials.revoke(ctx.engine(), name, kind)  # type: ignore[arg-type]
        click.echo(f"{noun} {name} revoked")

    @group.command("list", help=f"Enrolled {noun}s and whether they are revoked.")
    @pass_ctx
    def listing(ctx: Context) -> None:
        from collector import credentials

        for row in credentials.listing(ctx.engine(), kind):  # type: ignore[arg-type]
            state = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "active"
            click.echo(f"{row['name']:<32} {state}")


credential_commands(agents, "agent", "agent", "put this credential in its agent.toml (collector -> token) or "
                    "CUSTOS_AGENT_TOKEN")


@cli.group()
def tokens() -> None:
    """API tokens for people and scripts (read access by role)."""


@tokens.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "analyst", "manager"]), required=True)
@pass_ctx
def tokens_create(ctx: Context, name: str, role: str) -> None:
    """Create an API token NAME with ROLE; printed once, on the last line."""
    from collector import credentials

    token = credentials.create(ctx.engine(), name, "api", role)
    click.echo(f"API token {name} ({role}) created; it is not shown again:")
    click.echo(token)


@tokens.command("revoke")
@click.argument("name")
@pass_ctx
def tokens_revoke(ctx: Context, name: str) -> None:
    """Revoke API token NAME."""
    from collector import credentials

    credentials.revoke(ctx.engine(), name, "api")
    click.echo(f"API token {name} revoked")


# -- rules, directory, assignments (collector/rules_cli.py) ------------------------------------------------------

from collector.rules_cli import assignments_group, directory_group, rules_group  # noqa: E402

cli.add_command(rules_group)
cli.add_command(directory_group)
cli.add_command(assignments_group)

# -- web UI users, weekly report (collector/ui_cli.py) -----------------------------------------------------------

from collector.ui_cli import report_group, users_group  # noqa: E402

cli.add_command(users_group)
cli.add_command(report_group)

# -- ledger: verify, seal (collector/ledger_cli.py) -------------------------------------------------------------

from collector.ledger_cli import ledger_group, verify_command  # noqa: E402

cli.add_command(verify_command)
cli.add_command(ledger_group)

# -- loan-fraud linkage (collector/fraud/cli.py) -----------------------------------------------------------------

from collector.fraud.cli import evidence_group, import_group, investigate_group, sources_group  # noqa: E402

cli.add_command(evidence_group)
cli.add_command(sources_group)
cli.add_command(import_group)
cli.add_command(investigate_group)

# -- demo -------------------------------------------------------------------------------------------------------


@cli.command()
@click.option("--no-serve", is_flag=True, help="Exit after the summary instead of leaving the collector running.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the generated bank and its activity.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the database, spools and logs here (default: a temporary directory, removed afterwards).")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]),
              help="First day of the fourteen (its week's Monday; default: two weeks before this week's Monday).")
@click.option("--pg", metavar="DSN", help="Run the database part through the real PostgreSQL proxy against DSN.")
@click.option("--without-rule", "without", multiple=True, metavar="ID",
              help="Leave out this built-in rule (repeatable), to see which insiders go unnoticed without it.")
def demo(no_serve: bool, seed: int, workdir: Path | None, start: object, pg: str | None,
         without: tuple[str, ...]) -> None:
    """A bank in a box: 60 staff, fourteen days, six planted insiders, replayed through real agents and a real
    collector on this machine; then which insiders the rules found. Exits 0 when every one was found."""
    from collector.demo import run_demo

    day = start.date() if start is not None else None  # type: ignore[attr-defined]
    raise SystemExit(run_demo(seed=seed, serve=not no_serve, workdir=workdir, start=day, pg=pg, without=without))


def main() -> None:
    """Errors the operator can fix (configuration, credentials, an unreachable database) are one line on
    stderr and exit status 2; anything else is a bug and keeps its traceback."""
    from sqlalchemy.exc import OperationalError

    try:
        cli(standalone_mode=True)
    except CustosError as e:
        click.echo(f"custos: {e}", err=True)
        sys.exit(2)
    except OperationalError as e:
        reason = str(e.orig or e).strip().splitlines()[0] if str(e.orig or e).strip() else type(e).__name__
        click.echo(f"custos: cannot use the database named by database -> url (CUSTOS_DATABASE_URL): {reason}",
                   err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
