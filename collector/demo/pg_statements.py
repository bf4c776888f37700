"""`custos demo --pg`: each generated `db.query` of the proxy as the real statement a member of staff, the shared IT
account or the batch job sends to the bank's tables (collector/demo/pg_tables.py).

The generated event says what was read — its statement's shape, the sensitive classes, which customers — and the
real statement asks for exactly that: the columns of those classes, those customers by number (found again from
their keyed hashes), the customer number itself so that the proxy can hash it. What comes back (rows, columns,
classes, customer keys) is the proxy's to measure. A personal account's statements carry the person in a
sqlcommenter tag (`/*custos_user='lo07'*/`), as a bank's desk application does over its pooled connection;
accounts that are no one's own (the shared IT account, the batch job) connect as themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.events import DbQuery
from collector.demo.bank import DemoError

COLUMN_OF = {"name": "name", "national_id": "national_id", "phone": "phone", "address": "address"}


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: tuple[object, ...] | None = None
    copy: bool = False  # COPY … TO STDOUT: read through the copy protocol


def _who(customers: list[int], alias: str = "") -> tuple[str, tuple[object, ...]]:
    column = f"{alias}id"
    return (f"{column} = %s", (customers[0],)) if len(customers) == 1 else (f"{column} = ANY(%s)", (customers,))


def customer_lookup(event: DbQuery, customers: list[int]) -> Statement:
    """A look-up of customers' columns of the event's classes, by customer number."""
    classes = event.payload.sensitive_classes
    columns = [COLUMN_OF[c] for c in COLUMN_OF if c in classes]
    if not columns or not customers or len(columns) != len(classes):
        raise DemoError(f"a customer look-up of classes {classes} and {len(customers)} customers has no real "
                        "statement in collector/demo/pg_statements.py")
    where, params = _who(customers)
    return Statement(f"SELECT customer_id, {', '.join(columns)} FROM customers WHERE {where}", params)


def portfolio_read(event: DbQuery, customers: list[int]) -> Statement:
    return Statement("SELECT c.customer_id, c.name, c.address FROM customers c JOIN portfolios p USING (customer_id) "
                     "WHERE p.officer = %s", (event.actor.db_user,))


def _cards(name: str, customers: list[int]) -> Statement:
    # Joined to customers for their number: the proxy recognises a customer-key column by its table.
    where, params = _who(customers, "c.")
    return Statement(f"SELECT c.customer_id, {name}, k.pan FROM cards k JOIN customers c USING (customer_id) "
                     f"WHERE {where}", params)


def card_read(event: DbQuery, customers: list[int]) -> Statement:
    return _cards("c.name", customers)


def card_holder_read(event: DbQuery, customers: list[int]) -> Statement:
    return _cards("k.holder", customers)


def same(event: DbQuery, customers: list[int]) -> Statement:
    return Statement(event.payload.statement)


def risk_report(event: DbQuery, customers: list[int]) -> Statement:
    return Statement("SELECT l.region, l.product, sum(p.amount) FROM loans l JOIN payments p USING (loan_id) "
                     "GROUP BY l.region, l.product")


def catalogue(event: DbQuery, customers: list[int]) -> Statement:
    return Statement("SELECT relname, reltuples FROM pg_class WHERE relkind = %s", ("r",))


def copy_out(event: DbQuery, customers: list[int]) -> Statement:
    return Statement(event.payload.statement, copy=True)


Builder = Callable[[DbQuery, list[int]], Statement]
BUILDERS: dict[str, Builder] = {  # the generated statement (rules/scenario.py) → the real one
    "SELECT name, phone FROM customers WHERE id = ?": customer_lookup,
    "SELECT name, national_id FROM customers WHERE id = ?": customer_lookup,
    "SELECT name, address FROM customers WHERE officer = ?": portfolio_read,
    "SELECT c.name, k.pan FROM cards k JOIN customers c USING (customer_id) WHERE c.id > ?": card_read,
    "SELECT name, pan FROM cards WHERE product = ?": card_holder_read,
    "SELECT officer, count(*), sum(amount) FROM loans GROUP BY officer": same,
    "SELECT region, product, sum(amount) FROM loans JOIN payments USING (loan_id) GROUP BY region, product":
        risk_report,
    "SELECT relname, reltuples FROM pg_class WHERE relkind = ?": catalogue,
    "VACUUM ANALYZE public.customers": same,
    "VACUUM ANALYZE public.cards": same,
    "VACUUM ANALYZE public.loans": same,
    "COPY public.cards TO STDOUT": copy_out,
}


def sent_by_a_client(event: DbQuery) -> bool:
    """Whether a client sends the statement: the database's own (foreign-key checks, `system`) pass no proxy."""
    return not event.payload.system


def real_statement(event: DbQuery, numbers: dict[str, int], tag: str | None) -> Statement:
    """The statement to send for a generated event; `tag` is the person to name in a sqlcommenter tag."""
    builder = BUILDERS.get(event.payload.statement)
    if builder is None:
        raise DemoError(f"the scenario's statement {event.payload.statement!r} has no real statement to run "
                        "through the proxy; add one to collector/demo/pg_statements.py BUILDERS")
    customers = [numbers[k] for k in event.payload.customer_keys]
    st = builder(event, customers)
    if tag is not None:
        return Statement(f"{st.sql} /*custos_user='{tag}'*/", st.params, st.copy)
    return st
