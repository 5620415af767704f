"""Longer inputs made from the corpus, for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path


def repeated_video(source: Path, out: Path, times: int) -> Path:
    """``source`` played ``times`` over, one after another, remuxed into one
    MP4 at ``out`` (packets copied, timestamps shifted: nothing re-encoded).
    Its video and audio streams are kept; returns ``out``."""
    import av

    with av.open(str(out), "w") as sink:
        with av.open(str(source)) as first:
            streams = {s.index: sink.add_stream_from_template(s) for s in first.streams
                       if s.type in ("video", "audio")}
            duration = first.duration / av.time_base
        for n in range(times):
            with av.open(str(source)) as src:
                for packet in src.demux(*[s for s in src.streams if s.index in streams]):
                    if packet.dts is None:
                        continue
                    shift = int(n * duration / packet.time_base)
                    packet.pts += shift
                    packet.dts += shift
                    packet.stream = streams[packet.stream.index]
                    sink.mux(packet)
    return out
