"""The one result type of the feature, from a renderer through the worker pipe to the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["done", "error"]

# The reason given for a file that is none of the formats we preview.
NOT_PREVIEWABLE = "not an image, PDF, video or office document"


@dataclass(frozen=True)
class Thumbnail:
    """One encoded thumbnail; ``mime``, ``width`` and ``height`` describe ``data`` exactly."""

    data: bytes
    mime: str
    width: int
    height: int


@dataclass(frozen=True)
class Rendered:
    """The result of one render: the job status to record and the thumbnails to store.

    ``reason`` is None only for ``done`` with thumbnails; otherwise a short phrase of our own
    (with at most a size or a count in it), never a path or a library's message, so that it may
    be logged and shown in the file resource as it is.
    """

    status: Status
    thumbnails: tuple[Thumbnail, ...] = field(default=())
    reason: str | None = None


def done(*thumbnails: Thumbnail) -> Rendered:
    """Success with these thumbnails."""
    return Rendered("done", thumbnails, None)


def skipped(reason: str) -> Rendered:
    """Not something we make thumbnails of, or refused by a limit: ``done`` without any."""
    return Rendered("done", (), reason)


class RenderFailed(Exception):
    """The file looks like something we render but cannot be decoded: status ``error``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
