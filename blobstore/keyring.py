"""The scopes' data keys, wrapped by the master key: owner of ``scope_keys`` and ``key_check``.

Each dedup scope (one per company: :mod:`filesvc.scope`) gets a random 32-byte data key the first
time something is sealed in it.  The key is stored wrapped with AES-256-GCM under the master key,
its scope as associated data (a row copied to another scope does not unwrap), and is kept
unwrapped in memory only.  ``key_check`` holds the master key's check value: a process started
with another master key is refused at once ("wrong key"), which tells a wrong key from a damaged
row (whose unwrap fails while the check value matches).

Rotation (:meth:`KeyRing.rotate`) re-wraps every row and the check value in one transaction
under the keyring lock, exclusive; creating a key takes the lock shared and re-checks the check
value inside its transaction, so a process still holding the old master key can never add a row
the new key cannot unwrap (it is told to restart with the new key instead).  Processes keep the
data keys they already unwrapped, so they go on serving those scopes until they restart.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from blobstore.engine.base import Engine, Tx
from blobstore.engine.migrate import Step
from blobstore.errors import KeyUnavailable
from blobstore.masterkey import key_check_value
from blobstore.refs import check_scope
from blobstore.sealing import DATA_KEY_BYTES, ScopeKey

KEYRING_LOCK = "blobstore:keyring"
_WRAP_VERSION = b"\x01"
_WRAP_LABEL = b"filesvc scope key v1|"
# Scope of blobs that had none (written before dedup scopes): ``blobstore encrypt`` seals them
# under this one store-wide key.
UNSCOPED = "0" * 32

STEP_TABLES = Step(
    3,
    "scope_keys, key_check: per-scope data keys wrapped by the master key",
    {
        "sqlite": (
            "CREATE TABLE IF NOT EXISTS scope_keys (scope TEXT PRIMARY KEY, wrapped TEXT NOT NULL,"
            " created_at INTEGER NOT NULL) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS key_check (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " kcv TEXT NOT NULL, set_at INTEGER NOT NULL)",
        ),
        "postgresql": (
            "CREATE TABLE IF NOT EXISTS scope_keys (scope TEXT PRIMARY KEY, wrapped TEXT NOT NULL,"
            " created_at BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS key_check (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " kcv TEXT NOT NULL, set_at BIGINT NOT NULL)",
        ),
    },
)


def wrap(master: bytes, scope: str, data_key: bytes) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(master).encrypt(nonce, data_key, _WRAP_LABEL + scope.encode())
    return base64.b64encode(_WRAP_VERSION + nonce + sealed).decode()


def unwrap(master: bytes, scope: str, wrapped: str) -> bytes:
    try:
        raw = base64.b64decode(wrapped, validate=True)
    except ValueError:
        raise KeyUnavailable(f"the data key of scope {scope} is damaged") from None
    if raw[:1] != _WRAP_VERSION or len(raw) != 1 + 12 + DATA_KEY_BYTES + 16:
        raise KeyUnavailable(f"the data key of scope {scope} is damaged")
    try:
        return AESGCM(master).decrypt(raw[1:13], raw[13:], _WRAP_LABEL + scope.encode())
    except InvalidTag:
        raise KeyUnavailable(
            f"the data key of scope {scope} does not unwrap (damaged, or wrapped by another"
            " master key)"
        ) from None


async def stored_check(tx: Tx) -> str | None:
    row = await tx.fetchrow("SELECT kcv FROM key_check WHERE id = 1")
    return None if row is None else str(row[0])


WRONG_KEY = (
    "the master key is not the one this store's keys are wrapped with (key check value differs);"
    " set FILESVC_MASTER_KEY to the store's key"
)


class KeyRing:
    """Data keys per scope for one process: unwrapped once, then kept in memory."""

    def __init__(self, db: Engine, master: bytes | None) -> None:
        self._db = db
        self._master = master
        self._kcv = None if master is None else key_check_value(master)
        self._keys: dict[str, ScopeKey] = {}
        self._creating: dict[str, asyncio.Lock] = {}

    @property
    def has_master(self) -> bool:
        return self._master is not None

    async def check(self, *, record: bool) -> None:
        """Refuse a master key other than the store's (KeyUnavailable, one line).  ``record``:
        a store that has none yet takes this one's check value."""
        if self._master is None:
            return
        async with self._db.read() as tx:
            stored = await stored_check(tx)
        if stored is None and record:
            async with self._db.write() as tx:
                await tx.lock(KEYRING_LOCK)
                await tx.execute(
                    "INSERT INTO key_check (id, kcv, set_at) VALUES (1, ?, ?)"
                    " ON CONFLICT (id) DO NOTHING",
                    self._kcv,
                    _now_ms(),
                )
                stored = await stored_check(tx)
        if stored is not None and stored != self._kcv:
            raise KeyUnavailable(WRONG_KEY)

    async def key(self, scope: str, *, create: bool) -> ScopeKey:
        """The data key of ``scope``; made (and stored wrapped) on first use when ``create``.
        KeyUnavailable when there is no master key, it is the wrong one, or the row is damaged
        or missing."""
        found = self._keys.get(scope)
        if found is not None:
            return found
        check_scope(scope)
        if self._master is None:
            raise KeyUnavailable(
                "a sealed blob needs the master key: set FILESVC_MASTER_KEY (or"
                " FILESVC_MASTER_KEY_FILE) to the store's key"
            )
        async with self._db.read() as tx:
            row = await tx.fetchrow("SELECT wrapped FROM scope_keys WHERE scope = ?", scope)
        if row is None:
            if not create:
                raise KeyUnavailable(f"no data key is stored for scope {scope}")
            lock = self._creating.setdefault(scope, asyncio.Lock())
            async with lock:
                found = self._keys.get(scope)
                if found is not None:
                    return found
                wrapped = await self._create(scope)
        else:
            wrapped = str(row[0])
        data_key = unwrap(self._master, scope, wrapped)
        key = ScopeKey(data_key)
        self._keys[scope] = key
        return key

    async def _create(self, scope: str) -> str:
        assert self._master is not None
        candidate = wrap(self._master, scope, os.urandom(DATA_KEY_BYTES))
        async with self._db.write() as tx:
            await tx.lock(KEYRING_LOCK, shared=True)
            stored = await stored_check(tx)
            if stored is not None and stored != self._kcv:
                raise KeyUnavailable(
                    "the master key was rotated since this process started: restart it with"
                    " the new FILESVC_MASTER_KEY"
                )
            if stored is None:
                await tx.execute(
                    "INSERT INTO key_check (id, kcv, set_at) VALUES (1, ?, ?)"
                    " ON CONFLICT (id) DO NOTHING",
                    self._kcv,
                    _now_ms(),
                )
            # Another process may have made the scope's key a moment ago: keep the first.
            await tx.execute(
                "INSERT INTO scope_keys (scope, wrapped, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (scope) DO NOTHING",
                scope,
                candidate,
                _now_ms(),
            )
            row = await tx.fetchrow("SELECT wrapped FROM scope_keys WHERE scope = ?", scope)
        assert row is not None
        return str(row[0])


async def rotate(db: Engine, old: bytes, new: bytes, *, batch: int = 500) -> int:
    """Re-wrap every scope's data key from ``old`` to ``new`` and switch the check value, in one
    transaction holding the keyring lock exclusively (blobs are not touched).  Returns the keys
    re-wrapped.  KeyUnavailable when ``old`` is not the store's key or a row does not unwrap
    (then nothing changed)."""
    old_kcv, new_kcv = key_check_value(old), key_check_value(new)
    async with db.write() as tx:
        await tx.lock(KEYRING_LOCK)
        stored = await stored_check(tx)
        if stored == new_kcv:
            return 0  # done already (a repeated run after a crash or by mistake)
        if stored is not None and stored != old_kcv:
            raise KeyUnavailable(WRONG_KEY)
        rows = await tx.fetch("SELECT scope, wrapped FROM scope_keys ORDER BY scope")
        rewrapped = [
            (wrap(new, str(r[0]), unwrap(old, str(r[0]), str(r[1]))), str(r[0])) for r in rows
        ]
        for i in range(0, len(rewrapped), batch):
            await tx.executemany(
                "UPDATE scope_keys SET wrapped = ? WHERE scope = ?", rewrapped[i : i + batch]
            )
        await tx.execute(
            "INSERT INTO key_check (id, kcv, set_at) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET kcv = excluded.kcv, set_at = excluded.set_at",
            new_kcv,
            _now_ms(),
        )
    return len(rewrapped)


def _now_ms() -> int:
    return int(time.time() * 1000)
