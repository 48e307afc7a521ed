"""Dedup scopes: content is shared between files of one company only.

A company must not be able to learn whether another company stores some content (the dedup
oracle: upload a guessed document and watch for a dedup hit in metrics, timing or space).  So
every blob is put in its company's scope, an opaque value the blob store carries in the ref
(``xxh3_128-<hash>-s<scope>``) without knowing what it means.  The scope is a keyed hash of the
company id: no name on disk is built from client input, and the names do not reveal which
company a blob belongs to.  A cross-company duplicate is therefore written exactly like new
content.  See docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac

# Domain separation: the key is derived from the JWT secret but never usable as it (or the
# other way round).
_KEY_LABEL = b"filesvc dedup scope key v1"


class DedupScopes:
    """Company id -> dedup scope (32 hex digits), keyed by a secret of the deployment."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()
        self._cache: dict[str, str] = {}

    def of(self, company_id: str) -> str:
        """The scope of ``company_id``'s blobs."""
        scope = self._cache.get(company_id)
        if scope is None:
            digest = hmac.new(self._key, company_id.encode(), hashlib.sha256).hexdigest()
            scope = digest[:32]
            if len(self._cache) < 100_000:  # company ids are few; bound it anyway
                self._cache[company_id] = scope
        return scope
