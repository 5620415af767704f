"""What every engine takes and gives: the limits a source is opened under
(:class:`Limits`), what opening it found (:class:`SourceInfo`), and the
refusals they share (:class:`TooManyPages`, :class:`ImageDamaged`).

These travel between a service and its sandboxed workers: :class:`Limits`
as a pickle (service to worker, trusted), :class:`SourceInfo` as JSON
(worker to service, rebuilt only as this class).
"""

from __future__ import annotations

from dataclasses import dataclass

from planzoom.engines.sandbox import sandbox_result
from planzoom.errors import InvalidInput, ResourceExhausted


class ImageDamaged(InvalidInput):
    """The image cannot be read: truncated, corrupt or not what it says."""

    reason = "IMAGE_DAMAGED"


class TooManyPages(ResourceExhausted):
    """A PDF or TIFF with more pages than ``Limits.max_pages``."""

    reason = "TOO_MANY_PAGES"


@dataclass(frozen=True)
class Limits:
    """What a source may hold before it is refused, checked from its
    headers before anything is decoded: pages per file, pixels per image
    page and on its longest side (0: no limit), the directories of a TIFF
    (each costs libvips a walk of the directory chain), and a video's length
    (seconds) and frame (pixels)."""

    max_pages: int
    max_image_pixels: int
    max_video_seconds: float = 0.0
    max_video_pixels: int = 0
    max_image_side: int = 0
    max_tiff_directories: int = 1000

    @classmethod
    def from_settings(cls, s) -> Limits:
        """The limits a service's :class:`~planzoom.config.Settings` set."""
        return cls(max_pages=s.max_pages, max_image_pixels=s.max_image_pixels,
                   max_video_seconds=s.max_video_seconds, max_video_pixels=s.max_video_pixels,
                   max_image_side=s.max_page_side_pixels,
                   max_tiff_directories=s.max_tiff_directories)


@sandbox_result
@dataclass(frozen=True)
class SourceInfo:
    """The pages of a source as opening it found them: each page's displayed
    size in points; for an image also its pixels, DPI, directory in the file
    and what its EXIF said; for a video its one frame size and what it holds
    (empty lists for a PDF, whose pixels follow from the job's DPI)."""

    page_sizes: list[tuple[float, float]]  # displayed (after /Rotate), points
    pixel_sizes: list[tuple[int, int]] = ()
    dpis: list[float] = ()
    indexes: list[int] = ()
    facts: list[dict] = ()  # ImageFacts fields, GPS included
    video: dict | None = None  # VideoInfo fields (planzoom.engines.video)
    kind: str = ""  # the kind found, where it is not the one sniffed ("raw" for "tiff")
