"""The metadata engines and the one function that opens the configured one.

``FILESVC_DB_URL`` unset (or empty) means SQLite in the data directory; ``sqlite:///PATH`` names
another SQLite file; ``postgresql://USER[:PASSWORD]@HOST:PORT/DB`` a PostgreSQL database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from blobstore import layout
from blobstore.engine.base import BadDatabaseUrl, Engine
from blobstore.engine.postgres import PostgresEngine
from blobstore.engine.sqlite import Database

ENV = "FILESVC_DB_URL"


@dataclass(frozen=True)
class DbTarget:
    """What a database URL names: a SQLite file, or a PostgreSQL DSN."""

    sqlite_path: Path | None = None
    postgres_dsn: str | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.sqlite_path is not None

    def describe(self) -> str:
        """For logs: the SQLite path, or the PostgreSQL address without any password."""
        if self.sqlite_path is not None:
            return f"SQLite {self.sqlite_path}"
        parts = urlsplit(self.postgres_dsn or "")
        return f"PostgreSQL {parts.hostname}:{parts.port or 5432}{parts.path}"


def parse_db_url(url: str | None, data_dir: Path) -> DbTarget:
    """The engine a URL names; BadDatabaseUrl (a one-line message) when it names none."""
    if not url:
        return DbTarget(sqlite_path=layout.db_path(data_dir))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadDatabaseUrl(f"{ENV} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if not parts.path or parts.netloc:
            raise BadDatabaseUrl(f"{ENV}: a SQLite URL is sqlite:///ABSOLUTE/PATH")
        return DbTarget(sqlite_path=Path(parts.path))
    if scheme in ("postgresql", "postgres"):
        if not parts.hostname:
            raise BadDatabaseUrl(f"{ENV}: no host in the PostgreSQL URL")
        if not parts.path.strip("/"):
            raise BadDatabaseUrl(f"{ENV}: no database name in the PostgreSQL URL")
        if port == 0:
            raise BadDatabaseUrl(f"{ENV}: port 0 is not a PostgreSQL port")
        return DbTarget(postgres_dsn=url)
    raise BadDatabaseUrl(
        f"{ENV}: unsupported scheme {parts.scheme or '(none)'!r}; use postgresql://USER@HOST:PORT/DB"
        " or leave it unset for SQLite in the data directory"
    )


def make_engine(target: DbTarget, *, synchronous: str = "FULL") -> Engine:
    """The engine for a target, not yet connected (``open``/``connect`` it)."""
    if target.sqlite_path is not None:
        return Database(target.sqlite_path, synchronous=synchronous)
    assert target.postgres_dsn is not None
    return PostgresEngine(target.postgres_dsn)
