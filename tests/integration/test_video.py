"""Videos through the running stack, on the real videos of
``../shared/corpus/media/``: HLS ladders whose playlists parse (``m3u8``)
and whose segments are H.264/AAC at the stated size, covering the source's
duration; a phone video upright; progress as it goes; cancel and a killed
worker; and what is refused before any transcode."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import grpc
import m3u8
import numpy as np
import pytest
import pyvips

from planzoom.v1 import jobs_pb2
from planzoom_cli.client import Client
from planzoom_devstack.samples import repeated_video
from tests.helpers import list_keys, rpc_reason, wait_ended, wait_until

MEDIA = "media"
#: file, upright (width, height), rungs, has audio
CASES = [
    ("video-h264-mp4-chaplin-moviepy.mp4", (640, 360), ["360p"], True),
    ("video-mov-iphone6-rotate90-metadata-extractor-images.mov", (320, 568), ["320p"], True),
    ("video-webm-vp8-bunny-moviepy.webm", (1280, 720), ["360p", "720p"], True),
    ("video-avi-mjpeg-digicam-metadata-extractor-images.avi", (320, 240), ["240p"], True),
]


def _get(s3, key: str) -> bytes:
    return s3.get_object(Bucket="planzoom", Key=key)["Body"].read()


def _longer(corpus, tmp_path, times: int):
    """The chaplin clip ``times`` over: a longer real video."""
    return repeated_video(corpus / MEDIA / "video-h264-mp4-chaplin-moviepy.mp4",
                          tmp_path / f"chaplin-x{times}.mp4", times)


def _under_way(corpus, client, tmp_path, times: int, plan: str):
    """A long video submitted, once its transcode has started."""
    reply = client.submit(str(_longer(corpus, tmp_path, times)), jobs_pb2.PlanRef(
        org="acme", project="video", plan=plan), jobs_pb2.JobOptions())
    wait_until("the transcode is under way",
               lambda: client.get_job(reply.job_id).percent > 5, timeout=120, interval=0.1)
    return reply


@pytest.fixture(scope="module")
def videos(corpus, client):
    replies = {name: client.submit(str(corpus / MEDIA / name), jobs_pb2.PlanRef(
        org="acme", project="video", plan=f"case-{i}"), jobs_pb2.JobOptions())
        for i, (name, *_) in enumerate(CASES)}
    return {name: wait_ended(client, r.job_id) for name, r in replies.items()}


@pytest.mark.parametrize("name,size,rungs,audio", CASES, ids=[c[0].split("-")[1] for c in CASES])
def test_each_video_becomes_an_hls_ladder(corpus, s3, videos, name, size, rungs, audio):
    job = videos[name]
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE, job.error
    assert job.total_pages == 1 and job.percent == 100.0
    page = job.pages[0]
    facts = page.video
    assert (page.width_px, page.height_px) == size
    assert [r.name for r in facts.renditions] == rungs
    assert facts.master_key.startswith(f"previews/acme/video/{job.plan.plan}/{job.job_id}/")
    master = m3u8.loads(_get(s3, facts.master_key).decode())
    assert master.is_variant and len(master.playlists) == len(rungs)
    for rendition, variant in zip(facts.renditions, master.playlists, strict=True):
        assert variant.uri == f"{rendition.name}/index.m3u8"
        assert variant.stream_info.resolution == (rendition.width, rendition.height)
        assert variant.stream_info.bandwidth == rendition.bandwidth > 0
        assert ("mp4a.40.2" in variant.stream_info.codecs) == audio
        media = m3u8.loads(_get(s3, rendition.playlist_key).decode())
        assert media.is_endlist and media.playlist_type == "vod"
        total = sum(s.duration for s in media.segments)
        assert abs(total - facts.duration_seconds) <= 6.0, (total, facts.duration_seconds)
        assert len(media.segments) == rendition.segments
        for segment in media.segments:
            data = _get(s3, rendition.playlist_key.rsplit("/", 1)[0] + "/" + segment.uri)
            with av.open(io.BytesIO(data)) as ts:
                v = ts.streams.video[0].codec_context
                assert (v.name, v.width, v.height) == ("h264", rendition.width, rendition.height)
                assert bool(ts.streams.audio) == audio
                if audio:
                    assert ts.streams.audio[0].codec_context.name == "aac"
    poster = pyvips.Image.new_from_buffer(_get(s3, facts.poster_key), "")
    thumb = pyvips.Image.new_from_buffer(_get(s3, facts.thumbnail_key), "")
    assert max(thumb.width, thumb.height) == 300 or (thumb.width, thumb.height) == size
    assert (poster.width > poster.height) == (size[0] > size[1])


def test_a_phone_video_plays_upright(s3, videos):
    """The iPhone MOV is stored 568 x 320 with a display matrix turning it a
    quarter: its rendition is portrait, and its first frame matches the
    poster (made by another path: numpy's rotation of a decoded frame)."""
    page = videos[CASES[1][0]].pages[0]
    assert page.video.rotation == -90
    rendition = page.video.renditions[0]
    assert rendition.height > rendition.width
    media = m3u8.loads(_get(s3, rendition.playlist_key).decode())
    with av.open(io.BytesIO(_get(s3, rendition.playlist_key.rsplit("/", 1)[0] + "/" +
                                 media.segments[0].uri))) as ts:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(40), ts.decode(video=0),
                                                                strict=False)]
    poster = pyvips.Image.new_from_buffer(_get(s3, page.video.poster_key), "")
    poster = np.ndarray(buffer=poster.write_to_memory(), dtype=np.uint8,
                        shape=(poster.height, poster.width, 3)).astype(float)
    best = min(np.abs(f.astype(float) - poster).mean() for f in frames
               if f.shape == poster.shape)
    flipped = min(np.abs(np.rot90(f, 2).astype(float) - poster).mean() for f in frames
                  if f.shape == poster.shape)
    assert best < 20 and best < flipped / 2, (best, flipped)


def test_progress_is_reported_as_it_goes(corpus, client, tmp_path):
    path = _longer(corpus, tmp_path, 6)
    reply = client.submit(str(path), jobs_pb2.PlanRef(org="acme", project="video",
                                                       plan="progress"), jobs_pb2.JobOptions())
    seen = [j.percent for j in client.follow(reply.job_id)]
    assert seen[-1] == 100.0
    assert any(0 < p < 100 for p in seen), seen
    assert seen == sorted(seen), "progress went backwards"


def test_cancel_stops_the_transcode_and_keeps_nothing(corpus, stack, client, s3, tmp_path):
    reply = _under_way(corpus, client, tmp_path, 12, "cancelled")
    client.cancel(reply.job_id, "wrong video")
    cancelled_at = time.time()

    def stopped() -> float | None:
        log = (stack.log_dir / "transcode.log").read_text()
        return cancelled_at if "transcode stopped" in log and reply.job_id in log else None

    wait_until("the transcode stops", stopped, timeout=10, interval=0.1)
    assert time.time() - cancelled_at < 3
    time.sleep(1)
    prefix = f"previews/acme/video/cancelled/{reply.job_id}/"
    assert list_keys(s3, prefix) == [], "a cancelled transcode left output"
    assert client.get_job(reply.job_id).state == jobs_pb2.JOB_STATE_CANCELLED


def test_a_killed_transcode_worker_is_redelivered(corpus, stack, client, s3, tmp_path):
    reply = _under_way(corpus, client, tmp_path, 8, "killed")
    stack.kill("transcode")
    stack.start_service("transcode")
    job = wait_ended(client, reply.job_id, timeout=300)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE, job.error
    assert job.pages[0].attempts >= 2
    rendition = job.pages[0].video.renditions[0]
    media = m3u8.loads(_get(s3, rendition.playlist_key).decode())
    names = {s.uri for s in media.segments}
    stored = {k.rsplit("/", 1)[1] for k in list_keys(s3, rendition.playlist_key.rsplit("/", 1)[0])
              if k.endswith(".ts")}
    assert stored == names, "segments of two runs are mixed"


def _audio_only(corpus, tmp_path):
    src_path = corpus / MEDIA / "video-mov-iphone6-rotate90-metadata-extractor-images.mov"
    out_path = tmp_path / "voice.mp4"
    with av.open(str(src_path)) as src, av.open(str(out_path), "w", format="mp4") as out:
        audio = src.streams.audio[0]
        stream = out.add_stream_from_template(audio)
        for packet in src.demux(audio):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return out_path


def test_what_cannot_be_used_is_refused_before_any_transcode(corpus, stack, client, tmp_path):
    whole = (corpus / MEDIA / "video-h264-mp4-chaplin-moviepy.mp4").read_bytes()
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(whole[: len(whole) // 3])
    cases = [(truncated, "VIDEO_DAMAGED"), (_audio_only(corpus, tmp_path), "VIDEO_NO_STREAM")]
    for path, reason in cases:
        with pytest.raises(grpc.RpcError) as refused:
            client.submit(str(path), jobs_pb2.PlanRef(org="acme", project="video",
                                                       plan="refused"), jobs_pb2.JobOptions())
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert rpc_reason(refused.value) == reason, refused.value.details()
    name = stack.start_service("ingest", replica=5, env={"PLANZOOM_MAX_VIDEO_SECONDS": "5",
                                                         "PLANZOOM_MAX_VIDEO_PIXELS": "500000"})
    limited = Client(stack.addrs[name], stack.env()["PLANZOOM_PROGRESS_ADDR"],
                     token=stack.token("acme", "uploader"))
    try:
        for video, what in (("video-h264-mp4-chaplin-moviepy.mp4", "lasts"),
                            ("video-webm-vp8-bunny-moviepy.webm", "pixels")):
            with pytest.raises(grpc.RpcError) as refused:
                limited.submit(str(corpus / MEDIA / video), jobs_pb2.PlanRef(
                    org="acme", project="video", plan="limits"), jobs_pb2.JobOptions())
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert rpc_reason(refused.value) == "VIDEO_TOO_LARGE"
            assert what in refused.value.details()
    finally:
        limited.close()
        stack.stop_service(name)


def test_the_gateway_serves_a_preview_with_bearer_or_signed_link(stack, videos):
    import httpx

    job = videos[CASES[0][0]]
    viewer = {"Authorization": f"Bearer {stack.token('acme', 'viewer')}"}
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as http:
        base = f"/v1/jobs/{job.job_id}/video/"
        master = http.get(base + "master.m3u8", headers=viewer)
        assert master.status_code == 200
        assert master.headers["content-type"] == "application/vnd.apple.mpegurl"
        assert "360p/index.m3u8\n" in master.text
        cap = http.get(f"/v1/jobs/{job.job_id}/links", headers=viewer).json()["cap"]
        signed = m3u8.loads(http.get(base + "master.m3u8", params={"cap": cap}).text)
        assert signed.playlists[0].uri == f"360p/index.m3u8?cap={cap}"
        media = m3u8.loads(http.get(base + "360p/index.m3u8", params={"cap": cap}).text)
        segment = http.get(base + "360p/" + media.segments[0].uri.split("?")[0],
                           params={"cap": cap})
        assert segment.status_code == 200 and segment.headers["content-type"] == "video/mp2t"
        for bad in ("../../tiles/x", "360p/../../secret", "master.m3u8x", "720p/seg-1.ts"):
            assert http.get(base + bad, headers=viewer).status_code == 404, bad
        intruder = {"Authorization": f"Bearer {stack.token('intruder', 'viewer')}"}
        assert http.get(base + "master.m3u8", headers=intruder).status_code == 404
        assert http.get(base + "master.m3u8").status_code == 401


def test_the_cli_submits_a_walkthrough(corpus, stack):
    env = {**os.environ, **stack.env(), "PLANZOOM_TOKEN": stack.token("acme", "uploader")}
    mov = corpus / MEDIA / CASES[1][0]
    run = subprocess.run([Path(sys.executable).parent / "planzoom", "submit", mov,
                          "--org", "acme", "--project", "video", "--plan", "walkthrough",
                          "--watch"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "COMPLETE" in run.stdout
