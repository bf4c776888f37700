"""The lending system's side of the synthetic bank (rules/scenario.py): a working day of loan applications,
contact changes and new-device log-ins as `business.*` events — and, planted, the loan-fraud link: a call-centre
agent whose look-ups, no more and no different from her colleagues', include a dozen customers who within days
log in from a new device, change their phone number, apply for a loan from that device, and later are confirmed
victims of fraud.

Nothing about the insider's reads stands out; only a rule that links reads to what later happened to the same
customers (`kind: linkage`) can find her, so her ground truth says so (`needs="linkage"`).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

from agent.events import (ContactChange, ContactChangePayload, DeviceLogin, DeviceLoginPayload, FraudConfirmed,
                          FraudConfirmedPayload, LoanApplication, LoanApplicationPayload)

VICTIMS = 12
CHANNELS = ("mobile_app", "web", "branch")


def _device(rng: random.Random) -> str:
    return f"dev-{rng.getrandbits(48):012x}"


def _loan(g: Any, rng: random.Random, when: dt.datetime, customer: int, *, new_device: bool,
          device: str | None = None, ip: str | None = None) -> str:
    app_id = f"L-{rng.randrange(10**7, 10**8)}"
    g.business(when, LoanApplication, LoanApplicationPayload(
        customer_key=g.key(customer), application_id=app_id, amount=float(rng.randrange(5, 150) * 100),
        currency="EUR", channel="mobile_app" if new_device else rng.choice(CHANNELS),
        device_id=device or _device(rng), ip=ip, new_device=new_device))
    return app_id


def _ordinary(g: Any, rng: random.Random, days: int) -> None:
    """Genuine customers: loans from their own devices, contact changes, new phones, and a few loans from them."""
    for day in range(days):
        weekend = (g.start_date + dt.timedelta(days=day)).weekday() >= 5
        for _ in range(rng.randint(30, 60) if weekend else rng.randint(120, 200)):
            _loan(g, rng, g.at(day, rng.uniform(7, 23)), rng.randrange(1, g.customers), new_device=False)
        for _ in range(rng.randint(15, 35)):
            g.business(g.at(day, rng.uniform(7, 23)), ContactChange, ContactChangePayload(
                customer_key=g.key(rng.randrange(1, g.customers)), field=rng.choice(("phone", "email", "address")),
                channel=rng.choice(CHANNELS)))
        for _ in range(rng.randint(10, 20)):
            g.business(g.at(day, rng.uniform(6, 24)), DeviceLogin, DeviceLoginPayload(
                customer_key=g.key(rng.randrange(1, g.customers)), device_id=_device(rng), channel="mobile_app"))
        for _ in range(rng.randint(1, 2)):  # someone with a new phone applies from it: genuine
            _loan(g, rng, g.at(day, rng.uniform(8, 22)), rng.randrange(1, g.customers), new_device=True)


def lending_activity(g: Any, rng: random.Random, insider: Any, days: int, with_insiders: bool,
                     shift: Callable[[str], tuple[set[int], float, float]]) -> list[Any]:
    """Add the lending system's events to `g`; with insiders, plant the loan-fraud link and return it."""
    from rules.scenario import Planted

    _ordinary(g, rng, days)
    if not with_insiders:
        return []
    work_days, begin, finish = shift(insider.person.shift or "mon-fri 09:00-17:00")
    days_read = [d for d in range(min(6, days)) if (g.start_date + dt.timedelta(days=d)).weekday() in work_days]
    if not days_read:
        return []
    victims = rng.sample(range(1, g.customers), VICTIMS)
    fraudster_ip = f"203.0.113.{rng.randint(2, 250)}"
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    for n, customer in enumerate(victims):
        read = g.at(days_read[n % len(days_read)], rng.uniform(begin, finish))
        g.query(read, insider, customers=[customer], classes=["name", "phone"])  # a call like any other
        first = read if first is None or read < first else first
        hit = read + dt.timedelta(days=rng.uniform(2, 7))
        device = _device(rng)
        if hit >= g.at(days, 0):
            continue
        g.business(hit, DeviceLogin, DeviceLoginPayload(customer_key=g.key(customer), device_id=device,
                                                        ip=fraudster_ip, channel="mobile_app"))
        g.business(hit + dt.timedelta(minutes=4), ContactChange, ContactChangePayload(
            customer_key=g.key(customer), field="phone", channel="mobile_app", device_id=device))
        app_id = _loan(g, rng, hit + dt.timedelta(minutes=11), customer, new_device=True, device=device,
                       ip=fraudster_ip)
        last = max(last or read, hit + dt.timedelta(minutes=11))
        confirmed = hit + dt.timedelta(days=rng.uniform(1.5, 4))
        if confirmed < g.at(days, 0):
            g.business(confirmed, FraudConfirmed, FraudConfirmedPayload(
                customer_key=g.key(customer), case_id=f"FR-{rng.randrange(10**5, 10**6)}",
                confirmed_on=confirmed.date(), application_id=app_id))
            last = max(last, confirmed)
    if first is None or last is None:
        return []
    return [Planted("loan_fraud_link", insider.person.staff_id, first, last,
                    f"{insider.person.name} looks up customers who days later are hit by loans taken out "
                    "in their names", needs="linkage")]
