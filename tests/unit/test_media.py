"""What an upload is, from its first bytes (planzoom.media)."""

from __future__ import annotations

import pytest

from planzoom.media import Unsupported, sniff


@pytest.mark.parametrize("head,expected", [
    (b"%PDF-1.7\n", "pdf"), (b"\n\n%PDF-1.4", "pdf"), (b"\xff\xd8\xff\xe0", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"), (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
    (b"GIF89a", "gif"), (b"II*\x00\x08\x00\x00\x00", "tiff"), (b"II+\x00", "tiff"),
    (b"II*\x00\x10\x00\x00\x00CR\x02\x00", "raw"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "heif"),
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "avif"),
    (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", "mp4"),
    (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ", "mov"),
    (b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81\x01B\xf2\x81\x04B\xf3\x81\x08B\x82\x84webm",
     "webm"),
    (b"\x1aE\xdf\xa3\xa3B\x86\x81\x01B\x82\x88matroska", "mkv"),
    (b"RIFF\x00\x00\x00\x00AVI LIST", "avi"),
])
def test_sniff_recognises_kinds_by_their_bytes(head, expected):
    assert sniff(head).name == expected


@pytest.mark.parametrize("head,expected", [
    (b"MZ\x90\x00", "Windows executable"), (b"\x7fELF\x02", "ELF"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg">', "SVG"),
    (b"\x00\x00\x00\x14ftypM4A \x00\x00\x00\x00M4A ", "audio"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", "WAV"), (b"hello", "starts with bytes"),
])
def test_sniff_names_what_it_refuses(head, expected):
    with pytest.raises(Unsupported) as refused:
        sniff(head)
    assert expected in refused.value.message


@pytest.mark.parametrize("body", [
    # An HLS playlist and a concat list: FFmpeg's own guess would fetch what they name.
    "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:{port}/seg.ts\n"
    "#EXT-X-ENDLIST\n",
    "ffconcat version 1.0\nfile 'http://127.0.0.1:{port}/a.mp4'\n",
    # A video's magic with an HLS playlist behind it.
    "\x1a\x45\xdf\xa3#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:{port}/seg.ts\n",
])
def test_ffmpeg_opens_no_url_a_video_names(tmp_path, body):
    import socket
    import threading

    from planzoom.engines.video import VideoDamaged, open_container

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(1)
    reached = []

    def accept():
        try:
            reached.append(server.accept())
        except OSError:
            pass

    listener = threading.Thread(target=accept)
    listener.start()
    path = tmp_path / "video.mp4"
    path.write_bytes(body.format(port=server.getsockname()[1]).encode("latin-1"))
    try:
        with pytest.raises(VideoDamaged):
            open_container(str(path)).close()
    finally:
        server.close()
        listener.join()
    assert not reached


def test_image_headers_bound_a_tiffs_directories_and_a_pages_longest_side(tmp_path):
    import pyvips

    from planzoom.engines.base import Limits, TooManyPages
    from planzoom.engines.image import ImageTooLarge, image_pages
    from planzoom.media import PNG, TIFF

    limits = Limits(max_pages=2000, max_image_pixels=200_000_000, max_image_side=65536,
                    max_tiff_directories=1000)
    many = pyvips.Image.black(8, 8 * 3000).cast("uchar").copy()
    many.set_type(pyvips.GValue.gint_type, "page-height", 8)
    many.tiffsave(str(tmp_path / "many.tif"))  # 3,000 directories in 870 KB
    with pytest.raises(TooManyPages, match="3,000 directories"):  # from the count alone
        image_pages(str(tmp_path / "many.tif"), TIFF, limits)
    few = many.crop(0, 0, 8, 8 * 3).copy()
    few.set_type(pyvips.GValue.gint_type, "page-height", 8)
    few.tiffsave(str(tmp_path / "few.tif"))
    assert len(image_pages(str(tmp_path / "few.tif"), TIFF, limits)) == 3

    # 70,000 x 2: few pixels, but a side past the limit.
    pyvips.Image.black(70_000, 2).cast("uchar").pngsave(str(tmp_path / "strip.png"))
    with pytest.raises(ImageTooLarge, match="longest side"):
        image_pages(str(tmp_path / "strip.png"), PNG, limits)
    pyvips.Image.black(60_000, 2).cast("uchar").pngsave(str(tmp_path / "ok.png"))
    assert image_pages(str(tmp_path / "ok.png"), PNG, limits)[0].width_px == 60_000
