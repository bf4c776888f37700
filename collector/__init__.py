"""custos collector: ingest, store, rules, alerts, reports and the web UI."""

from agent import __version__

__all__ = ["__version__"]
