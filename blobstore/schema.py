"""The blob store's schema track: its tables' steps in order (each defined by the table's owner)."""

from __future__ import annotations

from blobstore import confirmations, inline, keyring, manifests
from blobstore.engine.migrate import Track

TRACK = Track(
    "blobstore",
    (
        manifests.STEP_TABLES,
        confirmations.STEP_TABLE,
        keyring.STEP_TABLES,
        inline.STEP_TABLE,
        inline.STEP_ADDED_AT,
    ),
)
