"""A collector served by real uvicorn for each API test, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from collector.db import make_engine
from collector.migrate import upgrade

from tests.helpers.api import Served, served


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Served]:
    """A collector on each database, with agent credential `agent-1` and analyst token `analyst-1`."""
    with served(tmp_path / "collector", db_url) as s:
        yield s


@pytest.fixture
def sqlite_api(sqlite_url: str, tmp_path: Path) -> Iterator[Served]:
    """The same on SQLite only, for behaviour that does not depend on the database (HTTP limits)."""
    with served(tmp_path / "collector", sqlite_url) as s:
        yield s


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated, empty store on each database, for tests of the collector's code without a server."""
    e = make_engine(db_url)
    upgrade(e)
    yield e
    e.dispose()


@pytest.fixture
def integrity_api(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Served]:
    """A collector on each database whose integrity checks run every second; a test module may set
    INTEGRITY (TOML lines of the [integrity] section) to tune them further."""
    config = tmp_path / "collector.toml"
    extra = getattr(request.module, "INTEGRITY", "")
    config.write_text(f'[integrity]\ncheck_every = "1s"\n{extra}')
    with served(tmp_path / "collector", db_url, config=config) as s:
        yield s
