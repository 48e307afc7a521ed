"""A renderer's plan: what a file is, what rendering it will decode, and how to render it.

Each format family's ``plan(...)`` reads headers only; ``pixels`` is then known before anything is
decoded (for the pool's memory admission), and ``render()`` does the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from filesvc.thumbnails.result import Rendered


class Plan(Protocol):
    """A decision about one file, made from its headers."""

    @property
    def pixels(self) -> int:
        """Pixels the render will hold decoded at once (an upper bound), 0 when none."""

    def render(self) -> Rendered:
        """Make the thumbnails; may raise ``RenderFailed`` or a library's error."""


@dataclass(frozen=True)
class Settled:
    """A file settled without decoding: not ours to render, or refused by a limit."""

    outcome: Rendered
    pixels: int = 0

    def render(self) -> Rendered:
        return self.outcome
