"""PostgreSQL, the shared metadata engine for many processes and machines (asyncpg).

Statements arrive in the portable form (``?`` placeholders) and are translated once each to
asyncpg's ``$n``.  Reads run in REPEATABLE READ read-only transactions (one snapshot, like
SQLite's WAL readers); writes in READ COMMITTED, made safe by the locks the callers take: a row
lock on the manifest a change is about, the gc lock (an advisory lock) around confirmations.

Connection failures of any kind surface as :class:`DatabaseUnavailable`; the pool replaces broken
connections, so service resumes by itself when the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, cast
from urllib.parse import urlsplit

import asyncpg

from blobstore.engine.base import POSTGRESQL, DatabaseUnavailable, Dialect, Row, lock_key

log = logging.getLogger(__name__)

# Connections per process: two cores' worth of concurrent transactions with room for gc.
POOL_SIZE = 10
# A connection attempt that takes longer has failed (the server is down or unreachable).
CONNECT_TIMEOUT = 5.0
# A statement running longer than this is cancelled: no request waits forever on a lock.
COMMAND_TIMEOUT = 60.0
STREAM_BATCH = 1000
# A transaction waits this long for a free connection (all busy, or the server gone).
ACQUIRE_TIMEOUT = 10.0
# Closing waits this long for connections in use to be given back, then cuts them.
CLOSE_TIMEOUT = 5.0

# Everything that means "the server is not there" rather than "this statement is wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """``?`` placeholders to ``$1, $2, ...`` (outside quoted literals)."""
    out: list[str] = []
    n = 0
    quoted = False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        if ch == "?" and not quoted:
            n += 1
            out.append(f"${n}")
        else:
            out.append(ch)
    return "".join(out)


async def _to_the_end(step: Awaitable[None]) -> None:
    """Run a COMMIT or ROLLBACK to its end even when the caller is cancelled meanwhile: the
    connection must not go back to the pool with the statement still running on it."""
    running = asyncio.ensure_future(step)
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await running
        raise


def _may_read_passfile(dsn: str) -> bool:
    """True when asyncpg would look for the password in a password file (blocking I/O)."""
    if urlsplit(dsn).password is not None or os.environ.get("PGPASSWORD"):
        return False
    passfile = os.environ.get("PGPASSFILE") or os.path.expanduser("~/.pgpass")
    return os.path.exists(passfile)


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """The pool's reset when a connection is given back.  The service leaves no session state on
    a connection (its locks are transaction-scoped, its cursors end with their transaction, it
    never LISTENs or SETs), so asyncpg's default reset, one more round trip per release
    (``pg_advisory_unlock_all``, ``CLOSE ALL``, ``UNLISTEN *``, ``RESET ALL``), is skipped;
    asyncpg still rolls back a transaction left open before calling this."""


def _unavailable(exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"the metadata database is unreachable ({type(exc).__name__})")


class PostgresTx:
    """A transaction on one pooled connection."""

    dialect: Dialect = POSTGRESQL
    runs_later = False

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: object) -> int:
        try:
            status = await self.conn.execute(translate(sql), *args)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        last = str(status).rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        batch = list(rows)
        if not batch:
            return
        try:
            await self.conn.executemany(translate(sql), batch)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    async def executemany_later(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        # One connection runs one statement at a time: nothing to overlap.
        await self.executemany(sql, rows)

    async def check_later(self, check: Callable[[], None]) -> None:
        await asyncio.to_thread(check)

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        try:
            return cast(list[Row], await self.conn.fetch(translate(sql), *args))
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        try:
            return cast(Row | None, await self.conn.fetchrow(translate(sql), *args))
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    async def stream(self, sql: str, *args: object) -> AsyncIterator[Row]:
        try:
            async for row in self.conn.cursor(translate(sql), *args, prefetch=STREAM_BATCH):
                yield cast(Row, row)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    async def lock(self, name: str, *, shared: bool = False) -> None:
        fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        await self.execute(f"SELECT {fn}(?)", lock_key(name))


class PostgresEngine:
    """A pool of connections to one database."""

    dialect: Dialect = POSTGRESQL

    def __init__(self, dsn: str, *, pool_size: int = POOL_SIZE) -> None:
        self.dsn = dsn
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    @property
    def ready(self) -> bool:
        return self._pool is not None

    async def connect(self) -> None:
        """One attempt to open the pool; DatabaseUnavailable when the server does not answer."""
        if self._pool is not None:
            return
        extra: dict[str, Any] = {}
        if not await asyncio.to_thread(_may_read_passfile, self.dsn):
            # No password anywhere: say so, or asyncpg looks for ~/.pgpass on the event loop
            # for every new connection.
            extra["password"] = ""
        if "sslmode=" not in (urlsplit(self.dsn).query or ""):
            # TLS is asked for in the URL (?sslmode=require or verify-full).  Without it, no
            # opportunistic TLS: that would look for client certificates in ~/.postgresql on
            # the event loop for every new connection.
            extra["ssl"] = False
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                self.dsn,
                **extra,
                min_size=1,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                reset=_no_session_state,
            )
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        self._pool = pool

    async def connect_with_backoff(
        self, *, first: float = 0.1, longest: float = 5.0, attempts: int | None = None
    ) -> None:
        """Try until the server answers, waiting longer between attempts (capped)."""
        delay = first
        tries = 0
        while True:
            tries += 1
            try:
                await self.connect()
                return
            except DatabaseUnavailable as exc:
                if attempts is not None and tries >= attempts:
                    raise
                log.warning("%s; retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    @asynccontextmanager
    async def _transaction(self, **options: Any) -> AsyncIterator[PostgresTx]:
        pool = self._pool
        if pool is None:
            raise DatabaseUnavailable("the metadata database is not connected yet")
        try:
            conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        try:
            tr = conn.transaction(**options)
            try:
                await tr.start()
            except _UNAVAILABLE as exc:
                raise _unavailable(exc) from exc
            try:
                yield PostgresTx(conn)
            except BaseException:
                # A connection the server dropped may already be detached from the pool.
                with contextlib.suppress(*_UNAVAILABLE):
                    if not conn.is_closed():
                        await _to_the_end(tr.rollback())
                raise
            try:
                await _to_the_end(tr.commit())
            except _UNAVAILABLE as exc:
                raise _unavailable(exc) from exc
        finally:
            with contextlib.suppress(*_UNAVAILABLE):
                await asyncio.shield(pool.release(conn))

    def read(self) -> AbstractAsyncContextManager[PostgresTx]:
        return self._transaction(isolation="repeatable_read", readonly=True)

    def write(self) -> AbstractAsyncContextManager[PostgresTx]:
        return self._transaction()

    @contextlib.asynccontextmanager
    async def write_unit(
        self,
        *,
        committed: Callable[[], None] | None = None,
        durable: Callable[[], None] | None = None,
    ) -> AsyncIterator[PostgresTx]:
        # A transaction's COMMIT is its durability here: the next may start once it is over.
        try:
            async with self._transaction() as tx:
                yield tx
        finally:
            if committed is not None:
                committed()
        if durable is not None:
            durable()

    async def query(self, sql: str, *args: object) -> list[Row]:
        pool = self._pool
        if pool is None:
            raise DatabaseUnavailable("the metadata database is not connected yet")
        # Autocommit: the statement is its own snapshot, one round trip instead of BEGIN,
        # the statement and COMMIT.  The pool gives the connection back even when cancelled.
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                return cast(list[Row], await conn.fetch(translate(sql), *args))
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    async def ping(self) -> None:
        async with self.read() as tx:
            await tx.fetch("SELECT 1")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
            except TimeoutError:
                # A connection still held (a caller that never gave it back) must not keep
                # the process from stopping.
                pool.terminate()
