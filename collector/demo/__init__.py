"""`custos demo`: a bank in a box — the whole of custos on this machine, on the embedded SQLite store.

The stages, each a module:

    bank = build_bank(seed)                    # bank.py: rules/scenario.py's bank, events per agent, HR files
    with Site(workdir, bank, progress) as site:  # site.py: database, credentials, directory; a real collector
        replay(site, bank, progress, timeout)  #   and real agents; replay.py: day by day through their spools
        result = outcome(bank, read_alerts(site.db), kinds)   # outcome.py: alerts against the ground truth
        print_outcome(out, result)
    # run.py: the order of it all, the weekly summaries, serving until Ctrl-C; extras.py: the parts found only
    # when this checkout has them (web UI users, weekly summaries, business intake); pg.py: --pg, the database
    # part through the real proxy (pg_tables.py: the bank's tables; pg_statements.py: the real statements;
    # pg_proxy.py: the proxy process, its events tied to the scenario and re-dated).

Customer identifiers are nowhere in clear in custos: events carry them as keyed hashes, as real sensors do (with
--pg they are in clear only in the bank's own demo database, where the proxy hashes them).
"""

from __future__ import annotations

from collector.demo.bank import AGENTS, DemoBank, DemoError, build_bank
from collector.demo.run import run_demo

__all__ = ["AGENTS", "DemoBank", "DemoError", "build_bank", "run_demo"]
