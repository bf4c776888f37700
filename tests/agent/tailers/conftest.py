from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agent.tailers.pgcluster import PgCluster, find_postgres
from tests.conftest import service_missing


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL cluster of this module's own with pgAudit and both log formats (see pgcluster.py)."""
    found = find_postgres()
    if found is None:
        service_missing("PostgreSQL with pgAudit (initdb, pgaudit.so: apt-get install postgresql-15-pgaudit)",
                        FileNotFoundError("/usr/lib/postgresql/*/lib/pgaudit.so"))
    cluster = PgCluster(found[0])  # type: ignore[index]
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
