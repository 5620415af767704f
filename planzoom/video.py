"""Videos: what a file holds, probed with PyAV (FFmpeg's libraries) in a
sandboxed worker before anything is transcoded (:func:`probe`), and the
HLS ladder planzoom makes of it (:func:`ladder`).

PyAV rather than the ffmpeg program: its wheel carries FFmpeg with libx264
and the native AAC encoder, so the images need no Debian package, and a
transcode runs inside planzoom's sandbox (memory and CPU limits, no
network), reports progress frame by frame and stops between two frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planzoom.errors import InvalidInput, ResourceExhausted
from planzoom.procpool import sandbox_result


class VideoDamaged(InvalidInput):
    """FFmpeg cannot open or decode the file."""

    reason = "VIDEO_DAMAGED"


class NoVideoStream(InvalidInput):
    reason = "VIDEO_NO_STREAM"


class VideoTooLarge(ResourceExhausted):
    """Longer, or larger per frame, than the limits."""

    reason = "VIDEO_TOO_LARGE"


@sandbox_result
@dataclass(frozen=True)
class VideoInfo:
    duration_seconds: float
    frame_rate: float
    width: int  # displayed, after rotation
    height: int
    rotation: int  # degrees, as FFmpeg's display matrix says (-90: turn clockwise)
    video_codec: str
    audio_codec: str  # "" without audio


#: (name, short side in pixels, video bits per second) of the ladder's rungs.
RUNGS = (("360p", 360, 800_000), ("720p", 720, 2_800_000), ("1080p", 1080, 5_000_000))
AUDIO_BITRATE = 128_000


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def ladder(width: int, height: int) -> list[tuple[str, int, int, int]]:
    """The renditions of an upright ``width x height`` video: (name, width,
    height, video bits per second) for each rung whose short side the
    source reaches (never upscaled), at least one: the source's own size
    when it is smaller than the first rung."""
    short, out = min(width, height), []
    for name, side, bitrate in RUNGS:
        if side > short:
            break
        scale = side / short
        out.append((name, _even(width * scale), _even(height * scale), bitrate))
    if not out:
        bitrate = max(200_000, int(RUNGS[0][2] * width * height / (640 * 360)))
        out.append((f"{short}p", _even(width), _even(height), bitrate))
    return out


def probe(path: str, max_seconds: float, max_pixels: int) -> VideoInfo:
    """Open the file, read its streams and decode its first frame. Raises
    VideoDamaged (unreadable, or no frame decodes), NoVideoStream, and
    VideoTooLarge over ``max_seconds`` or ``max_pixels`` per frame."""
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError) as e:
        raise VideoDamaged(f"the video cannot be opened: {e}") from None
    with container:
        if not container.streams.video:
            raise NoVideoStream("the file has no video stream (an audio-only file?); upload "
                                "a video")
        stream = container.streams.video[0]
        duration = (container.duration / av.time_base if container.duration else
                    float(stream.duration * stream.time_base) if stream.duration else 0.0)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > max_pixels:
            raise VideoTooLarge(f"its frames are {width} x {height} pixels, more than the "
                                f"{max_pixels:,} allowed (PLANZOOM_MAX_VIDEO_PIXELS)")
        if duration > max_seconds:
            raise VideoTooLarge(f"it lasts {duration:.0f} s, longer than the {max_seconds:.0f} "
                                "s allowed (PLANZOOM_MAX_VIDEO_SECONDS)")
        try:
            frame = next(container.decode(stream))
        except (av.FFmpegError, StopIteration) as e:
            raise VideoDamaged(f"no frame of the video decodes: {e or 'it is empty'}") from None
        if not duration or not math.isfinite(duration):
            raise VideoDamaged("the video's duration cannot be read; it may be truncated")
        rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
        rotation = rotation - 360 if rotation > 180 else rotation
        if rotation in (90, -90):
            width, height = height, width
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else ""
        return VideoInfo(duration_seconds=round(duration, 3), frame_rate=round(rate, 3),
                         width=width, height=height, rotation=rotation,
                         video_codec=stream.codec_context.name, audio_codec=audio)
