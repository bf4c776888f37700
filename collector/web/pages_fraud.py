"""The loan-fraud pages, for analysts and admins only (a manager is answered 403): the common point of
compromise of a period's fraud victims, and who read one customer. Every use is written to the audit log — a
customer look-up under the customer's keyed hash, never the identifier typed."""

# No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response

from agent.units import parse_duration
from collector import audit
from collector.fraud.investigate import cpc, parse_when
from collector.fraud.victim import key_of_case, look_up
from collector.web.common import Refused, need, render, state_of

router = APIRouter(include_in_schema=False)
ROLES = ("admin", "analyst")


def _period(since: str, until: str) -> tuple[dt.datetime, dt.datetime]:
    try:
        return parse_when(since), parse_when(until) if until else dt.datetime.now(dt.timezone.utc)
    except ValueError as e:
        raise Refused(400, str(e)) from e


@router.get("/investigate/cpc")
def cpc_page(request: Request, since: str = "90d", until: str = "", lookback: str = "30d") -> Response:
    s = need(request, *ROLES)
    web = state_of(request)
    start, end = _period(since, until)
    try:
        back = dt.timedelta(seconds=parse_duration(lookback))
    except ValueError as e:
        raise Refused(400, f"lookback: {e}") from e
    report = cpc(web.engine, start, end, lookback=back)
    audit.record(web.engine, s.user.name, "view", "cpc", f"{start:%Y-%m-%d}/{end:%Y-%m-%d}", role=s.user.role,
                 detail={"frauds": report.frauds, "shown": len(report.rows)})
    return render(request, "cpc.html", report=report, since=since, until=until, lookback=lookback)


@router.get("/investigate/customer")
def customer_page(request: Request, q: str = "", by: str = "id", since: str = "90d", until: str = "") -> Response:
    s = need(request, *ROLES)
    web = state_of(request)
    report = None
    if q.strip():
        start, end = _period(since, until)
        if by == "case":
            found = key_of_case(web.engine, q.strip())
            if found is None:
                raise Refused(404, f"No confirmed fraud has case id {q.strip()!r}.")
            key = found[0]
        elif by == "key":
            key = q.strip().lower()
            if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
                raise Refused(400, "A customer key is the 64-hex keyed hash.")
        else:
            hasher = web.config.customers.hasher()
            if hasher is None:
                raise Refused(400, "This collector has no customer key (customers -> key_file): search by key "
                                   "or by fraud case instead.")
            key = hasher.hash(q)
        report = look_up(web.engine, key, start, end)
        audit.record(web.engine, s.user.name, "view", "customer", key[:16], role=s.user.role,
                     detail={"by": by, "readers": report.readers})
    return render(request, "customer.html", report=report, q=q if by != "id" else "", by=by, since=since,
                  until=until)
