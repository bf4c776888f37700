"""The proxy and the log tailers describe one statement identically: same fingerprint, text, tables, classes."""

from __future__ import annotations

import pytest

from agent.proxy.analysis import Analyser as ProxyAnalyser
from agent.tailers._sql import analyse_statement

SENSITIVE = {"public.customers.id_number": "id_number", "public.customers.phone": "phone"}
STATEMENTS = [
    "SELECT id_number, phone FROM customers WHERE customer_id = 'C-0001'",
    "SELECT c.phone, o.amount FROM customers c JOIN orders o ON o.customer_id = c.customer_id WHERE o.amount > 1000",
    "WITH big AS (SELECT * FROM customers WHERE balance > 50000) SELECT count(*) FROM big",
    "UPDATE customers SET phone = '13800138000' WHERE customer_id = 'C-0002'",
    "INSERT INTO audit_copy SELECT * FROM customers WHERE branch IN (1, 2, 3)",
]


@pytest.mark.parametrize("sql", STATEMENTS)
def test_proxy_and_tailer_give_one_statement_the_same_description(sql: str) -> None:
    proxy = ProxyAnalyser(SENSITIVE).analyse(sql)
    tailer = analyse_statement(sql, "postgres", SENSITIVE)
    assert proxy.fingerprint == tailer.fingerprint
    assert proxy.statement == tailer.redacted
    assert proxy.tables_read == tailer.tables_read
    assert proxy.tables_written == tailer.tables_written
    assert proxy.sensitive_classes == tailer.sensitive_classes
    assert proxy.statement_type == tailer.statement_type
    for literal in ("C-0001", "13800138000", "50000", "1000"):
        assert literal not in proxy.statement
