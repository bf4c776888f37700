"""Evidence export: one case as a zip for investigators or the police — the case's alerts, the events behind them,
the person's activity over the case's period, and a manifest of SHA-256 hashes of every file in it.

Events are written as custos stores them: statements with their literals replaced, customers as keyed hashes.
The export itself is recorded in the audit trail (who exported which case, and the manifest's hash).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from agent import __version__
from agent.errors import CustosError
from collector import activity, audit, triage
from collector.db import events

AROUND = dt.timedelta(days=1)  # the person's activity from a day before the case's first alert to a day after
MAX_ACTIVITY = 200_000


class EvidenceError(CustosError):
    """A case cannot be exported as asked."""


@dataclass(frozen=True)
class Exported:
    path: Path
    files: dict[str, str]  # name → SHA-256
    manifest_sha256: str
    alerts: int
    events: int


def _rows(engine: Engine, where: Any, limit: int) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(select(events.c.body).where(where).order_by(events.c.ts, events.c.seq)
                                           .limit(limit))]


def export_case(engine: Engine, case_id: str, out: Path, *, actor: str = "cli") -> Exported:
    """Write the case whose first alert is `case_id` (any alert of it will do) to the zip file `out`."""
    case = triage.case_alerts(engine, case_id)
    if not case:
        raise EvidenceError(f"no alert or case {case_id!r}; `custos` alert ids are shown in the web UI and the "
                            "alerts API")
    if out.exists():
        raise EvidenceError(f"{out} exists already; choose another --out (an export is never overwritten)")
    who = case[0].who
    since = min(a.first_ts for a in case) - AROUND
    until = max(a.last_ts for a in case) + AROUND
    evidence_ids = sorted({e for a in case for e in a.evidence})
    behind = _rows(engine, events.c.event_id.in_(evidence_ids), len(evidence_ids)) if evidence_ids else []
    acc = activity.accounts(engine)
    person_filter = activity.who_filter(acc, {who}) if case[0].staff_id else events.c.db_user == who.removeprefix(
        "db:")
    mine = _rows(engine, person_filter & (events.c.ts >= since) & (events.c.ts < until), MAX_ACTIVITY)
    info = activity.person(engine, who)
    files: dict[str, bytes] = {
        "alerts.json": json.dumps([_alert(a) for a in case], indent=2, default=str).encode(),
        "evidence.jsonl": "".join(b + "\n" for b in behind).encode(),
        "activity.jsonl": "".join(b + "\n" for b in mine).encode(),
        "person.json": json.dumps(asdict(info) if info else {"account": who}, indent=2, default=str).encode(),
    }
    now = dt.datetime.now(dt.timezone.utc)
    files["README.txt"] = (
        f"custos {__version__} evidence export of case {case[0].case_id or case_id}, made {now:%Y-%m-%d %H:%M} "
        f"UTC by {actor}.\n\n"
        f"alerts.json     the case's {len(case)} alerts: rule, severity, summary, measures, evidence ids, triage\n"
        f"evidence.jsonl  the {len(behind)} events the alerts cite, one JSON event per line\n"
        f"activity.jsonl  {who}'s {len(mine)} events from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC\n"
        "person.json     the directory entry\n"
        "MANIFEST.sha256 the SHA-256 of every other file (check with `sha256sum -c MANIFEST.sha256`)\n\n"
        "Statements are recorded with their literal values replaced; customers appear only as keyed hashes\n"
        "(HMAC-SHA256 under the bank's key): the bank can say which customer a hash is, nobody else can.\n"
    ).encode()
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    manifest = "".join(f"{digests[name]}  {name}\n" for name in sorted(files)).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "x", compression=zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            z.writestr(name, files[name])
        z.writestr("MANIFEST.sha256", manifest)
    manifest_hash = hashlib.sha256(manifest).hexdigest()
    audit.record(engine, actor, "export", "case", case[0].case_id or case_id, staff_id=case[0].staff_id,
                 detail={"file": out.name, "manifest_sha256": manifest_hash, "events": len(behind) + len(mine)})
    return Exported(out, digests, manifest_hash, len(case), len(behind) + len(mine))


def _alert(a: triage.AlertRow) -> dict[str, Any]:
    return {"alert_id": a.alert_id, "rule_id": a.rule_id, "title": a.title, "severity": a.severity,
            "tags": a.tags, "who": a.who, "staff_id": a.staff_id, "person_name": a.person_name, "team": a.team,
            "ts": a.ts, "first_ts": a.first_ts, "last_ts": a.last_ts, "summary": a.summary,
            "evidence": a.evidence, "measures": a.measures, "status": a.status, "assignee": a.assignee}
