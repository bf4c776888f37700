"""`custos-agent`: the agent's command line."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import IO, Any

import click
import msgspec

from agent import __version__
from agent.config import AgentConfig, load_config
from agent.errors import CustosError
from agent.events import decode, encode, utcnow
from agent.ids import uuid7
from agent.runtime import Agent, open_spool

CONFIG_HELP = "agent.toml to read (defaults and environment variables alone when left out)."


def _config(path: str | None) -> tuple[AgentConfig, bytes]:
    config = load_config(path)
    return config, Path(path).read_bytes() if path else b""


@click.group()
@click.version_option(__version__, prog_name="custos-agent")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """The custos agent: watches customer-data access on this machine and ships it to the collector."""
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@cli.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help=CONFIG_HELP)
def run(config_path: str | None) -> None:
    """Run the agent: the configured sources, the heartbeat and the shipper, until SIGTERM."""
    config, text = _config(config_path)
    config.token()  # fail now, with the fix in the message, rather than in the shipper's loop
    from agent.sources import build_sources

    Agent(config, sources=build_sources(config), config_text=text).run_forever()


@cli.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.argument("file", type=click.File("rb"), default="-")
def emit(config_path: str | None, file: IO[bytes]) -> None:
    """Queue events from JSON lines (FILE or stdin) into the spool; the running agent ships them.

    A line may be a whole event or just {"kind", "payload"} and optionally "actor" and "ts"; the id, host,
    source and time are filled in. Every line is checked against the event schema before anything is queued.
    """
    config, _ = _config(config_path)
    host = socket.gethostname()
    items: list[tuple[str, bytes]] = []
    for n, line in enumerate(file, 1):
        if not line.strip():
            continue
        try:
            raw: dict[str, Any] = msgspec.json.decode(line)
            if not isinstance(raw, dict):
                raise ValueError("a line must be a JSON object")
            raw.setdefault("id", uuid7())
            raw.setdefault("ts", utcnow().isoformat())
            raw.setdefault("host", host)
            raw.setdefault("source", {"type": "emit"})
            raw.setdefault("agent_id", config.agent_id)
            raw.pop("chain_seq", None)  # the spool numbers what it queues; a number from elsewhere means nothing
            raw.pop("chain_prev", None)
            event = decode(msgspec.json.encode(raw))
        except (msgspec.DecodeError, ValueError) as e:
            raise click.ClickException(f"line {n}: {e}; nothing was queued") from e
        items.append((event.id, encode(event)))
    spool = open_spool(config)
    try:
        queued = sum(spool.put(items[i : i + 1000]) for i in range(0, len(items), 1000))
    finally:
        spool.close()
    click.echo(f"queued {queued} events in {config.spool_path}")


@cli.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("--listen", metavar="HOST:PORT", help="Address to accept clients on, e.g. 127.0.0.1:6543.")
@click.option("--upstream", metavar="HOST:PORT", help="The PostgreSQL server to forward to, e.g. 127.0.0.1:5432.")
@click.option("--name", default="proxy", show_default=True, help="Source name recorded in events.")
@click.option("--ship/--no-ship", default=None,
              help="Ship the spool to the collector (default: when a collector token is configured).")
def proxy(config_path: str | None, listen: str | None, upstream: str | None, name: str, ship: bool | None) -> None:
    """Run the PostgreSQL audit proxy until SIGTERM, writing db.session and db.query events to the spool.

    Listeners come from --listen/--upstream, or from the `type = "proxy"` sections of agent.toml.
    """
    config, text = _config(config_path)
    from agent.proxy.source import proxy_sources

    sources = proxy_sources(config, listen, upstream, name)
    if ship is None:
        ship = bool(config.collector.token or config.collector.token_file)
    if ship:
        config.token()
    Agent(config, sources=sources, config_text=text, ship=ship).run_forever()


@cli.group()
def spool() -> None:
    """Look into the local spool."""


@spool.command("status")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help=CONFIG_HELP)
def spool_status(config_path: str | None) -> None:
    """Events waiting, acknowledged, dropped by the overflow policy, and refused by the collector."""
    config, _ = _config(config_path)
    with open_spool(config) as s:
        st = s.stats()
        click.echo(f"spool     {config.spool_path}")
        for name in ("depth", "bytes", "queued", "acked", "dropped", "dead"):
            click.echo(f"{name:<9} {getattr(st, name)}")
        for event_id, reason in s.dead_letters(10):
            click.echo(f"refused   {event_id}: {reason}")


def main() -> None:
    try:
        cli(standalone_mode=True)
    except CustosError as e:
        click.echo(f"custos-agent: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
