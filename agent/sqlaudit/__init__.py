"""SQL analysis shared by every database sensor: the PostgreSQL proxy and the pgAudit/MariaDB log tailers.

The same statement gets the same fingerprint, redaction and table/column/sensitivity analysis whichever sensor saw
it. No literal of the statement ever appears in an Analysis: redaction is done by a dedicated lexer, and sqlglot
only ever sees the statement with its strings emptied and numbers zeroed.

    from agent.sqlaudit import Analyser, SensitiveMap
    analyser = Analyser("postgres", sensitive=SensitiveMap.of({"public.customers.ssn": "id_number"}))
    a = analyser.analyse("SELECT ssn FROM customers WHERE id = 42")
    a.redacted == "SELECT ssn FROM customers WHERE id = ?"; a.sensitive_classes == ("id_number",)
"""

from __future__ import annotations

from agent.sqlaudit.analyser import Analyser, Analysis, analyse
from agent.sqlaudit.catalog import Catalogue, SensitiveMap
from agent.sqlaudit.commenter import END_USER_TAG, parse_sqlcommenter

__all__ = ["Analyser", "Analysis", "Catalogue", "END_USER_TAG", "SensitiveMap", "analyse", "parse_sqlcommenter"]
