"""The `custos users …` and `custos report weekly` commands (registered by collector/cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click


def _ctx() -> Any:
    """The `Context` of collector/cli.py (configuration and database)."""
    return click.get_current_context().find_root().obj


@click.group("users")
def users_group() -> None:
    """People who log in to the web UI."""


@users_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "analyst", "manager"]), required=True)
@click.option("--team", help="The team a manager sees (required for managers).")
@click.option("--email", help="Where weekly summaries and reminders go (managers).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (one line).")
def users_add(name: str, role: str, team: str | None, email: str | None, password_stdin: bool) -> None:
    """Add user NAME; the password is asked for (twice), or read from stdin with --password-stdin."""
    from collector.users import create_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = create_user(_ctx().engine(), name, role, password, team=team, email=email)
    click.echo(f"user {user.name} added ({user.role}{', team ' + user.team if user.team else ''})")


@users_group.command("list")
def users_list() -> None:
    """Users, their roles and whether they are locked."""
    from collector.users import list_users

    for u in list_users(_ctx().engine()):
        state = "disabled" if u["disabled_at"] else ("locked" if u["locked_until"] else "active")
        click.echo(f"{u['name']:<24} {u['role']:<8} {u['team'] or '-':<16} {state}")


@users_group.command("unlock")
@click.argument("name")
def users_unlock(name: str) -> None:
    """Clear NAME's failed log-ins and lock."""
    from collector.users import unlock_user

    unlock_user(_ctx().engine(), name)
    click.echo(f"user {name} unlocked")


@click.group("report")
def report_group() -> None:
    """Reports on demand."""


@report_group.command("weekly")
@click.option("--team", required=True, help="The team, as the directory names it.")
@click.option("--week", help="ISO week such as 2026-W47 (default: last week in the organisation's time zone).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write the summary here as one HTML file.")
@click.option("--keep/--no-keep", default=False, help="Also keep it in the UI (and ask for its attestations).")
def report_weekly(team: str, week: str | None, out: Path, keep: bool) -> None:
    """Make TEAM's weekly access summary now."""
    import datetime as dt
    import zoneinfo

    from collector.weekly import last_week
    from collector.weekly_jobs import make_summary

    ctx = _ctx()
    week = week or last_week(dt.datetime.now(dt.timezone.utc), zoneinfo.ZoneInfo(ctx.config.weekly.timezone))
    tw, html = make_summary(ctx.engine(), ctx.config, team, week, keep=keep)
    out.write_text(html, encoding="utf-8")
    click.echo(f"weekly summary of {team} for {week} written to {out} ({len(tw.people)} people, "
               f"{len(tw.flagged)} to confirm)")
    for line in tw.attention:
        click.echo(f"  - {line}")
