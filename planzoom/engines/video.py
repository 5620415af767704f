"""FFmpeg's libraries (PyAV): what a video holds, probed before anything is
transcoded (:func:`probe`, :func:`inspect`), and the HLS ladder planzoom
makes of it (:func:`ladder`, :func:`transcode`). Both run in a sandboxed
worker process.

PyAV rather than the ffmpeg program: its wheel carries FFmpeg with libx264
and the native AAC encoder, so the images need no Debian package, and a
transcode runs inside planzoom's sandbox (memory and CPU limits, no
network), reports progress frame by frame and stops between two frames.

The transcode: the source is decoded once; each frame is turned upright
(the display matrix's rotation), brought to a constant frame rate and
scaled for every rung of :func:`ladder`, and encoded with libx264 (main
profile, 2-second closed GOPs, no scene-cut keyframes) and, when the source
has sound, AAC-LC at 128 kbit/s, 48 kHz stereo. FFmpeg's HLS muxer cuts
~6-second MPEG-TS segments at keyframes into ``<rung>/seg-NNNNN.ts`` with a
VOD media playlist ``<rung>/index.m3u8``; this module then writes the master
playlist ``master.m3u8`` (RFC 8216, 4.3.4.2: BANDWIDTH is the peak segment
bit rate, AVERAGE-BANDWIDTH the mean, CODECS per RFC 6381), a poster JPEG
(the largest rung's size) and a 300-pixel thumbnail. Names are fixed, so a
transcode run again writes the same files. Progress: the share of the
source's duration decoded so far is written to ``progress_path`` at most
twice a second, for the service to report.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass

from planzoom.engines.base import Limits, SourceInfo
from planzoom.engines.sandbox import sandbox_result
from planzoom.errors import InvalidInput, ResourceExhausted


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


#: FFmpeg's demuxer for each video kind :func:`planzoom.media.sniff` tells.
DEMUXERS = {"mp4": "mov", "mov": "mov", "mkv": "matroska", "webm": "matroska", "avi": "avi"}


def open_container(path: str):
    """``path`` opened by PyAV with the demuxer of the kind its first bytes
    show (:data:`DEMUXERS`), never FFmpeg's own guess, and with
    ``protocol_whitelist=file``: whatever a file or a future FFmpeg default
    says, no playlist, concat list, SDP or reference makes FFmpeg open
    anything but local files (an HLS or concat "video" that names
    ``http://…`` or ``/etc/passwd`` is refused). Raises VideoDamaged."""
    import av

    from planzoom.media import HEADER_WINDOW, sniff

    with open(path, "rb") as f:
        head = f.read(HEADER_WINDOW)
    try:
        demuxer = DEMUXERS[sniff(head).name]
    except (InvalidInput, KeyError):
        raise VideoDamaged("the file is not an MP4, MOV, Matroska, WebM or AVI video") from None
    try:
        return av.open(path, format=demuxer, metadata_errors="ignore",
                       options={"protocol_whitelist": "file"})
    except (av.FFmpegError, OSError) as e:
        raise VideoDamaged(f"the video cannot be opened: {e}") from None


def probe(path: str, max_seconds: float, max_pixels: int) -> VideoInfo:
    """Open the file, read its streams and decode its first frame. Raises
    VideoDamaged (unreadable, or no frame decodes), NoVideoStream, and
    VideoTooLarge over ``max_seconds`` or ``max_pixels`` per frame."""
    import av

    with open_container(path) as container:
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


def inspect(path: str, limits: Limits) -> SourceInfo:
    """A video's one "page" (its upright frame size) and what it holds (see
    :func:`probe` for what is refused)."""
    info = probe(path, limits.max_video_seconds, limits.max_video_pixels)
    return SourceInfo(page_sizes=[(float(info.width), float(info.height))],
                      pixel_sizes=[(info.width, info.height)], dpis=[72.0], indexes=[0],
                      facts=[{}], video=dataclasses.asdict(info))


SEGMENT_SECONDS = 6
GOP_SECONDS = 2
THUMBNAIL_PX = 300
#: RFC 6381 codec strings: H.264 main profile at level 3.1 / 4.0, AAC-LC.
AVC_MAIN = {"3.1": "avc1.4d401f", "4.0": "avc1.4d4028"}
AAC_LC = "mp4a.40.2"


def _graph(stream, rotation: int, width: int, height: int, fps: int):
    import av

    graph = av.filter.Graph()
    chain = [graph.add_buffer(template=stream)]
    if rotation in (90, -90):
        chain.append(graph.add("transpose", "clock" if rotation == -90 else "cclock"))
    elif rotation in (180, -180):
        chain += [graph.add("hflip"), graph.add("vflip")]
    chain += [graph.add("fps", str(fps)), graph.add("scale", f"{width}:{height}"),
              graph.add("format", "yuv420p"), graph.add("buffersink")]
    for a, b in zip(chain, chain[1:], strict=False):
        a.link_to(b)
    graph.configure()
    return graph


def _pull(graph):
    import av

    frames = []
    while True:
        try:
            frames.append(graph.pull())
        except (av.error.BlockingIOError, av.error.EOFError):
            return frames


def _still(frame, rotation: int, out_dir: str, sizes: tuple[int, int]) -> list[str]:
    """The poster (fitting ``sizes``) and the thumbnail of one frame."""
    import numpy as np
    import pyvips

    rgb = frame.to_ndarray(format="rgb24")
    rgb = np.ascontiguousarray(np.rot90(rgb, k={-90: -1, 90: 1, 180: 2, -180: 2}.get(
        rotation, 0)))
    image = pyvips.Image.new_from_memory(rgb.data, rgb.shape[1], rgb.shape[0], 3, "uchar")
    poster = image.thumbnail_image(sizes[0], height=sizes[1], size="down")
    poster.jpegsave(os.path.join(out_dir, "poster.jpg"), Q=85, keep="none")
    thumb = image.thumbnail_image(THUMBNAIL_PX, height=THUMBNAIL_PX, size="down")
    thumb.jpegsave(os.path.join(out_dir, "thumbnail.jpg"), Q=85, keep="none")
    return ["poster.jpg", "thumbnail.jpg"]


def _copy_audio(frame):
    import av

    copy = av.AudioFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name,
                                      layout=frame.layout.name)
    copy.sample_rate, copy.pts, copy.time_base = frame.sample_rate, frame.pts, frame.time_base
    return copy


def _segments(playlist: str) -> list[tuple[float, str]]:
    """(duration, file) of each segment of a media playlist."""
    out, duration = [], None
    with open(playlist) as f:
        for line in f:
            line = line.strip()
            if line.startswith("#EXTINF:"):
                duration = float(line[8:].split(",")[0])
            elif line and not line.startswith("#") and duration is not None:
                out.append((duration, line))
                duration = None
    return out


def transcode(path: str, out_dir: str, info: dict, progress_path: str) -> dict:
    """Transcode ``path`` (probed as ``info``, a VideoInfo's fields) into
    ``out_dir``. Returns ``{"renditions": [{name, width, height, bandwidth,
    average_bandwidth, codecs, segments, files}], "files": [...every file,
    the master playlist last]}``, paths relative to ``out_dir``."""
    import av

    rungs = ladder(info["width"], info["height"])
    fps = max(1, min(60, round(info["frame_rate"] or 25)))
    gop = GOP_SECONDS * fps
    rotation, duration = info["rotation"], max(info["duration_seconds"], 0.001)
    source = open_container(path)
    video = source.streams.video[0]
    video.thread_type = "AUTO"
    audio = source.streams.audio[0] if source.streams.audio else None
    outputs = []
    for name, width, height, bitrate in rungs:
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        level = "3.1" if width * height <= 1280 * 720 else "4.0"
        out = av.open(os.path.join(out_dir, name, "index.m3u8"), "w", format="hls", options={
            "hls_time": str(SEGMENT_SECONDS), "hls_playlist_type": "vod", "hls_list_size": "0",
            "hls_flags": "independent_segments",
            "hls_segment_filename": os.path.join(out_dir, name, "seg-%05d.ts")})
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt, vs.bit_rate = width, height, "yuv420p", bitrate
        vs.options = {"preset": "veryfast", "profile": "main", "level": level,
                      "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0",
                      "maxrate": str(bitrate * 3 // 2), "bufsize": str(bitrate * 2)}
        aus = None
        if audio is not None:
            aus = out.add_stream("aac", rate=48000, layout="stereo")
            aus.bit_rate = AUDIO_BITRATE
        outputs.append({"name": name, "width": width, "height": height, "container": out,
                        "video": vs, "audio": aus, "level": level,
                        "graph": _graph(video, rotation, width, height, fps)})
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000) if audio else None
    files, still_done, last_report = [], False, 0.0
    streams = [video] + ([audio] if audio is not None else [])
    for packet in source.demux(*streams):
        for frame in packet.decode():
            if packet.stream.type == "video":
                if not still_done and frame.time is not None and \
                        frame.time >= min(1.0, duration / 10):
                    files += _still(frame, rotation, out_dir,
                                    (outputs[-1]["width"], outputs[-1]["height"]))
                    still_done = True
                for o in outputs:
                    o["graph"].push(frame)
                    for out_frame in _pull(o["graph"]):
                        for p in o["video"].encode(out_frame):
                            o["container"].mux(p)
                now = time.monotonic()
                if frame.time is not None and now - last_report > 0.5:
                    with open(progress_path, "w") as f:
                        f.write(f"{min(1.0, frame.time / duration):.4f}")
                    last_report = now
            elif resampler is not None:
                for resampled in resampler.resample(frame):
                    for o in outputs:  # an encoder takes its frame over: one copy each
                        for p in o["audio"].encode(_copy_audio(resampled)):
                            o["container"].mux(p)
    for o in outputs:  # drain filters and encoders
        o["graph"].push(None)
        for out_frame in _pull(o["graph"]):
            for p in o["video"].encode(out_frame):
                o["container"].mux(p)
        for p in o["video"].encode(None):
            o["container"].mux(p)
        if o["audio"] is not None:
            for p in o["audio"].encode(None):
                o["container"].mux(p)
        o["container"].close()
    source.close()
    if not still_done:
        raise VideoDamaged("no frame of the video decoded")
    renditions, master = [], ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for o in outputs:
        segments = _segments(os.path.join(out_dir, o["name"], "index.m3u8"))
        sizes = [(d, os.path.getsize(os.path.join(out_dir, o["name"], f))) for d, f in segments]
        peak = max(int(8 * size / max(d, 0.1)) for d, size in sizes)
        average = int(8 * sum(s for _, s in sizes) / max(sum(d for d, _ in sizes), 0.1))
        codecs = AVC_MAIN[o["level"]] + (f",{AAC_LC}" if o["audio"] is not None else "")
        renditions.append({"name": o["name"], "width": o["width"], "height": o["height"],
                           "bandwidth": peak, "average_bandwidth": average, "codecs": codecs,
                           "segments": len(segments)})
        files += [f"{o['name']}/{f}" for _, f in segments] + [f"{o['name']}/index.m3u8"]
        master += [f"#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},"
                   f"RESOLUTION={o['width']}x{o['height']},FRAME-RATE={fps:.3f},"
                   f'CODECS="{codecs}"', f"{o['name']}/index.m3u8"]
    with open(os.path.join(out_dir, "master.m3u8"), "w") as f:
        f.write("\n".join(master) + "\n")
    with open(progress_path, "w") as f:
        f.write("1.0000")
    return {"renditions": renditions, "files": files + ["master.m3u8"]}
