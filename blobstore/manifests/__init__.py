"""Per-file manifests: chunk number -> (blob ref, size), plus the file's other blobs.  This module
owns the ``manifests`` and ``manifest_entries`` tables: every statement on them is in this
package (``per_file`` for one file's manifest, ``store_walks`` for fsck, gc and stat, ``schema``
for the tables' creation).

A manifest row is written only after its blob is durable (the caller puts the blob first), so a
crash leaves orphan blobs, never a dangling reference.  Every function runs inside a transaction
the caller holds, so the service can change manifests and its own tables atomically.

Slots: ``chunk`` is the live content; ``staged`` holds an overwrite in progress until it is whole
and swapped in by :func:`promote_staged`; ``thumb`` the derived blobs (thumbnails).  ``owner`` and
``staged_owner`` are opaque tags: the blob store compares them, it never interprets them.
"""

from __future__ import annotations

from blobstore.manifest_model import Entry as Entry
from blobstore.manifest_model import Head as Head
from blobstore.manifest_model import Holder as Holder
from blobstore.manifest_model import NewManifest as NewManifest
from blobstore.manifest_model import PendingUpload as PendingUpload
from blobstore.manifest_model import Slot as Slot
from blobstore.manifest_model import StagedSession as StagedSession
from blobstore.manifest_model import Totals as Totals
from blobstore.manifest_model import completeness as completeness
from blobstore.manifests.per_file import clear as clear
from blobstore.manifests.per_file import create as create
from blobstore.manifests.per_file import create_many as create_many
from blobstore.manifests.per_file import decode_entry as decode_entry
from blobstore.manifests.per_file import delete as delete
from blobstore.manifests.per_file import entries as entries
from blobstore.manifests.per_file import head as head
from blobstore.manifests.per_file import lock as lock
from blobstore.manifests.per_file import mark as mark
from blobstore.manifests.per_file import promote_staged as promote_staged
from blobstore.manifests.per_file import put_entry as put_entry
from blobstore.manifests.per_file import record_activity as record_activity
from blobstore.manifests.per_file import replace_ref as replace_ref
from blobstore.manifests.per_file import set_expected as set_expected
from blobstore.manifests.per_file import staged_session as staged_session
from blobstore.manifests.per_file import start_staged as start_staged
from blobstore.manifests.schema import STEP_TABLES as STEP_TABLES
from blobstore.manifests.store_walks import claimed_sizes as claimed_sizes
from blobstore.manifests.store_walks import count as count
from blobstore.manifests.store_walks import expire as expire
from blobstore.manifests.store_walks import holders as holders
from blobstore.manifests.store_walks import is_referenced as is_referenced
from blobstore.manifests.store_walks import live_refs as live_refs
from blobstore.manifests.store_walks import pending_uploads as pending_uploads
from blobstore.manifests.store_walks import probe as probe
from blobstore.manifests.store_walks import referenced as referenced
from blobstore.manifests.store_walks import totals as totals
from blobstore.manifests.store_walks import walk as walk
