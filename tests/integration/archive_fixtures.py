"""The session's archive: a private PostgreSQL server (`cerise.devenv.postgres`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cerise.devenv import postgres, statedir


@pytest.fixture(scope="session")
def archive_db() -> Iterator[postgres.Postgres]:
    """PostgreSQL on 127.0.0.1 with an empty `cerise` database, for the whole session."""
    state = statedir.claim("postgres")
    try:
        server = postgres.start(state.path / "data")
    except BaseException:
        state.release()
        raise
    try:
        yield server
    finally:
        server.stop()
        state.release()
