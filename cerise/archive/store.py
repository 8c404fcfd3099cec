"""The archive in PostgreSQL: add finished jobs, find them, page through them, remove them.

A pool of a few connections (psycopg 3's own pool), opened without waiting: the archive
may be down when a component starts, or go down later. A call then raises `Unavailable`
after `timeout` seconds instead of hanging, and so do the calls of the next `pause`
seconds, at once; the caller decides (the operator waits and tries again, the apiserver
lists live jobs only and answers 503 for an archived one). The schema is brought up to
date on the first call that reaches the server.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cerise.archive import schema
from cerise.archive.records import Record

logger = logging.getLogger(__name__)

Body = dict[str, Any]
Connection = psycopg.AsyncConnection[TupleRow]
T = TypeVar("T")
Cursor = tuple[str, str]
"""A position in the job order: (creation timestamp, name)."""


class Unavailable(Exception):
    """The archive cannot be reached now; the message says why, without the password."""


class Archive:
    """The archive at `url` (a libpq URL, e.g. postgresql://user:pw@host:5432/cerise)."""

    def __init__(self, url: str, *, timeout: float = 3.0, max_size: int = 4,
                 pause: float = 2.0) -> None:
        self._pool: AsyncConnectionPool[Connection] = (
            AsyncConnectionPool(url, min_size=1, max_size=max_size, timeout=timeout,
                                open=False, kwargs={"autocommit": True,
                                                    "connect_timeout": max(1, int(timeout))},
                                # a connection the server closed (a restart) is replaced
                                # before use, not handed to a request that then fails
                                check=AsyncConnectionPool.check_connection))
        self._migrated = asyncio.Lock()
        self._ready = False
        self._pause = pause
        self._down: tuple[float, str] = (float("-inf"), "")
        """Until when (monotonic) calls fail at once after a failure, and why: a request
        to the apiserver should not wait `timeout` each while the archive is down."""

    async def open(self) -> None:
        """Start the pool; it connects in the background."""
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def ready(self) -> None:
        """Reach the server and bring the schema up to date, or raise Unavailable."""
        await self._run(_noop)

    async def _run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        until, why = self._down
        if time.monotonic() < until:
            raise Unavailable(why)
        try:
            return await self._reach(work)
        except Unavailable as error:
            self._down = (time.monotonic() + self._pause, str(error))
            raise

    async def _reach(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        try:
            async with self._pool.connection() as connection:
                if not self._ready:
                    async with self._migrated:
                        if not self._ready:
                            applied = await schema.migrate(connection)
                            if applied:
                                logger.info("archive schema migrated to version %d",
                                            applied[-1])
                            self._ready = True
                return await work(connection)
        except PoolTimeout:
            raise Unavailable("the archive database does not answer") from None
        except psycopg.OperationalError as error:
            raise Unavailable(f"the archive database failed: {_first_line(error)}") from None

    async def add(self, records: Sequence[Record]) -> int:
        """Archive jobs, each at most once (by uid); how many were new."""
        async def insert(connection: Connection) -> int:
            added = 0
            async with connection.transaction(), connection.cursor() as cursor:
                for found in records:
                    await cursor.execute(
                        "INSERT INTO archived_jobs (uid, namespace, name, resource, phase,"
                        " created, finished_at, log_url, body)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (uid) DO NOTHING",
                        (found.uid, found.namespace, found.name, found.resource, found.phase,
                         found.created, found.finished_at, found.log_url, Jsonb(found.body)))
                    added += cursor.rowcount
            return added
        return await self._run(insert)

    async def have(self, uids: Iterable[str]) -> set[str]:
        """Which of these jobs are archived."""
        wanted = list(uids)

        async def select(connection: Connection) -> set[str]:
            cursor = await connection.execute(
                "SELECT uid FROM archived_jobs WHERE uid = ANY(%s)", (wanted,))
            return {row[0] for row in await cursor.fetchall()}
        return await self._run(select)

    async def get(self, namespace: str, name: str) -> Body | None:
        """The newest archived job of that name in the namespace."""
        async def select(connection: Connection) -> Body | None:
            cursor = await connection.execute(
                "SELECT body FROM archived_jobs WHERE namespace = %s AND name = %s"
                " ORDER BY created DESC LIMIT 1", (namespace, name))
            row = await cursor.fetchone()
            return None if row is None else dict(row[0])
        return await self._run(select)

    async def page(self, namespace: str, *, after: Cursor | None, limit: int,
                   newest_first: bool) -> list[Body]:
        """Up to `limit` archived jobs of the namespace past `after`, in job order (or its
        reverse)."""
        direction, compare = ("DESC", "<") if newest_first else ("ASC", ">")
        where, params = "namespace = %s", [namespace]
        if after is not None:
            where += f" AND (created, name) {compare} (%s, %s)"
            params += list(after)
        query = (f"SELECT body FROM archived_jobs WHERE {where}"  # noqa: S608 (no user text)
                 f" ORDER BY created {direction}, name {direction} LIMIT %s")

        async def select(connection: Connection) -> list[Body]:
            cursor = await connection.execute(query.encode(), (*params, limit))
            return [dict(row[0]) for row in await cursor.fetchall()]
        return await self._run(select)

    async def resources(self) -> list[tuple[str, str]]:
        """The (namespace, ComputeResource) pairs that have archived jobs."""
        async def select(connection: Connection) -> list[tuple[str, str]]:
            cursor = await connection.execute(
                "SELECT DISTINCT namespace, resource FROM archived_jobs")
            return [(row[0], row[1]) for row in await cursor.fetchall()]
        return await self._run(select)

    async def ended_before(self, namespace: str, resource: str, cutoff: datetime.datetime,
                           limit: int) -> list[tuple[str, str]]:
        """(uid, namespace) of up to `limit` archived jobs of a resource that ended before
        `cutoff`, oldest first."""
        async def select(connection: Connection) -> list[tuple[str, str]]:
            cursor = await connection.execute(
                "SELECT uid, namespace FROM archived_jobs WHERE namespace = %s"
                " AND resource = %s AND finished_at < %s ORDER BY finished_at LIMIT %s",
                (namespace, resource, cutoff, limit))
            return [(row[0], row[1]) for row in await cursor.fetchall()]
        return await self._run(select)

    async def remove(self, namespace: str, uid: str) -> bool:
        """Remove one archived job of the namespace; whether it was there."""
        async def delete(connection: Connection) -> bool:
            cursor = await connection.execute(
                "DELETE FROM archived_jobs WHERE namespace = %s AND uid = %s", (namespace, uid))
            return cursor.rowcount > 0
        return await self._run(delete)

    async def counts(self, namespace: str) -> dict[str, int]:
        """How many of the namespace's jobs are archived, by phase."""
        async def select(connection: Connection) -> dict[str, int]:
            cursor = await connection.execute(
                "SELECT phase, count(*) FROM archived_jobs WHERE namespace = %s GROUP BY phase",
                (namespace,))
            return {str(phase): int(n) for phase, n in await cursor.fetchall()}
        return await self._run(select)

    async def count(self) -> int:
        """How many jobs are archived."""
        async def select(connection: Connection) -> int:
            cursor = await connection.execute("SELECT count(*) FROM archived_jobs")
            row = await cursor.fetchone()
            return int(row[0]) if row else 0
        return await self._run(select)


async def _noop(connection: Connection) -> None:
    await connection.execute("SELECT 1")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
