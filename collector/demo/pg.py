"""`custos demo --pg DSN`: the database part through the real PostgreSQL proxy, against real tables.

Without --pg the proxy's events are generated, as the proxy would write them. With --pg the demo needs two
things it cannot make up: the proxy itself (`agent.proxy`, `custos-agent proxy`) and a PostgreSQL server that
answers at DSN. It checks both before anything starts and refuses with what is missing.
"""

from __future__ import annotations

import re

from collector.demo import extras
from collector.demo.bank import DemoError

PROXY_MODULE = "agent.proxy"


def redact(dsn: str) -> str:
    """The DSN without a password, for messages."""
    dsn = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


def check_pg(dsn: str) -> None:
    """Refuse --pg unless the proxy exists in this checkout and PostgreSQL answers at `dsn`."""
    if not extras.has(PROXY_MODULE):
        raise DemoError("--pg runs the database part through the PostgreSQL proxy (`custos-agent proxy`, "
                        f"{PROXY_MODULE}), which this checkout does not have yet; run the demo without --pg")
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DemoError(f"--pg: cannot connect to PostgreSQL at {redact(dsn)}: {reason}; start it, or give the "
                        "DSN of one that runs (such as postgresql://postgres@127.0.0.1:5432/test)") from e
    raise DemoError("--pg: the proxy is present, but the demo's run through it (customers, cards and loans tables "
                    "filled from the bank, each staff query sent through `custos-agent proxy`) is not built yet; "
                    "run the demo without --pg")
