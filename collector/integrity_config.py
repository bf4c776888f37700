"""collector.toml section of the tamper-evidence checks:

    [integrity]
    enabled = true
    max_clock_skew = "2m"         # an agent's clock this far from the collector's is an alert
    silent_after_beats = 3        # an agent that missed this many heartbeats in a row is silent (an alert)
    check_every = "10s"           # how often silence and database-proxy bypass are looked for
    seal_every = "1m"             # how often stored events and alerts are sealed into a ledger block
    seal_settle = "10s"           # records younger than this wait for the next block (commits still in flight)
    block_max_records = 100000    # the most records one block seals
    seal_worker = "auto"          # "process": a child process of its own; "thread": in the collector; "auto":
                                  # process on PostgreSQL, thread on SQLite
    ledger_file = "/var/lib/custos/ledger.jsonl"   # every block's root appended here too ("" for none)
    syslog = ""                   # and sent here: "/dev/log", or "host:514" over UDP ("" for nowhere)
    bypass_grace = "30s"          # a staff machine's session to a database waits this long for the proxy's
    upstreams = ["10.0.0.5:5432"] # databases behind the proxy, besides those its own sessions name
"""

from __future__ import annotations

from typing import Literal

import msgspec

from agent.config import Duration, check_duration


class IntegritySection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    max_clock_skew: Duration = "2m"
    silent_after_beats: float = 3.0
    check_every: Duration = "10s"
    seal_every: Duration = "1m"
    seal_settle: Duration = "10s"
    block_max_records: int = 100_000
    seal_worker: Literal["auto", "thread", "process"] = "auto"  # a process does not share ingest's interpreter
    ledger_file: str = ""
    syslog: str = ""
    bypass_grace: Duration = "30s"
    upstreams: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("max_clock_skew", "check_every", "seal_every", "bypass_grace"):
            check_duration(self, key, positive=True)
        check_duration(self, "seal_settle")
        if not self.silent_after_beats >= 1:
            raise ValueError(f"silent_after_beats: must be 1 or more, not {self.silent_after_beats!r}")
        if not 1 <= self.block_max_records <= 10_000_000:
            raise ValueError(f"block_max_records: must be between 1 and 10000000, not {self.block_max_records}")
        for e in self.upstreams:
            endpoint(e)
        if self.syslog and not self.syslog.startswith("/"):
            endpoint(self.syslog, "syslog")

    def sealer(self, database_url: str) -> Literal["thread", "process"]:
        """Where sealing runs: "auto" is a process of its own on PostgreSQL, where ingest is cheap enough that
        sealing in its interpreter would slow it by a fifth (docs/benchmarks.md), and a thread on SQLite."""
        if self.seal_worker != "auto":
            return self.seal_worker
        return "process" if database_url.startswith("postgresql") else "thread"

    def seconds(self, key: str) -> float:
        """A duration key in seconds."""
        return check_duration(self, key)


def endpoint(text: str, key: str = "upstreams") -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; ValueError naming the key otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{key}: {text!r} must be host:port, such as 10.0.0.5:5432 or [::1]:5432")
    return host.strip("[]"), int(port)
