"""The streamed DZI pyramid against vips dzsave, the raster it reads, DZI
arithmetic (planzoom.engines.pyramid, planzoom.engines.raster, planzoom.dzi)."""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import pyvips
import zstandard

from planzoom.dzi import level_count, parse_dzi, tile_name
from planzoom.engines.pyramid import (
    JpegEncoder,
    PyramidBuilder,
    cut_pyramid,
    save_pyramid,
    shrink,
)
from planzoom.engines.raster import RasterUnreadable, raster_rows


@pytest.mark.parametrize("w,h", [(1, 1), (2, 1), (255, 3), (256, 256), (257, 10), (10800, 7200)])
def test_level_count(w, h):
    expected = math.ceil(math.log2(max(w, h))) + 1 if max(w, h) > 1 else 1
    assert level_count(w, h) == expected


def _raster(w: int, h: int, bands: int) -> np.ndarray:
    """Line art on white with a few grey ramps: white tiles, edges, gradients."""
    rng = np.random.default_rng(w * h * bands)
    image = np.full((h, w, bands), 255, np.uint8)
    image[::7, :, 0] = 0
    image[:, ::11] = rng.integers(0, 256, (h, 1, bands), dtype=np.uint8)
    image[h // 3 : h // 2, : w // 2] = np.arange(w // 2, dtype=np.uint8)[None, :, None]
    return image


def _zstd_rows(image: np.ndarray) -> io.BytesIO:
    return io.BytesIO(zstandard.ZstdCompressor().compress(image.tobytes()))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def _decode(path) -> np.ndarray:
    im = pyvips.Image.new_from_file(str(path))
    return np.ndarray(buffer=im.write_to_memory(), dtype=np.uint8,
                      shape=(im.height, im.width, im.bands))


@pytest.mark.parametrize("bands", [1, 3])
def test_shrink_is_the_rounded_2x2_mean(bands):
    """Every pixel (a + b + c + d + 2) >> 2 of its block, an odd last column
    paired with itself, for odd and even widths and for rows that are a
    view into a bigger buffer (as the pyramid passes them)."""
    rng = np.random.default_rng(bands)
    for h in (2, 6, 264):
        for w in (1, 2, 3, 257, 10537):
            big = rng.integers(0, 256, (h + 2, w, bands), dtype=np.uint8)
            rows = big[1 : h + 1]
            padded = np.concatenate([rows, rows[:, -1:]], axis=1) if w % 2 else rows
            s = padded.astype(np.uint16)
            want = ((s[0::2, 0::2] + s[0::2, 1::2] + s[1::2, 0::2] + s[1::2, 1::2] + 2) >> 2)
            assert np.array_equal(shrink(rows), want.astype(np.uint8)), (h, w, bands)


@pytest.mark.parametrize("w,h,bands,tile,overlap,block", [
    (1000, 700, 3, 254, 1, 50_000), (513, 1025, 1, 256, 1, 7_000), (300, 1, 1, 256, 0, 10),
    (257, 257, 3, 128, 2, 1 << 20), (1, 1, 1, 256, 1, 1),
])
def test_pyramid_matches_vips_dzsave(tmp_path, w, h, bands, tile, overlap, block):
    """Same tiles as ``dzsave`` of the same raster, whatever the block
    boundaries: the same names, the same pixels before JPEG (against
    dzsave's lossless PNG tiles), and JPEGs as faithful to those pixels as
    libvips' own at the same quality; a descriptor OpenSeadragon's parser
    accepts."""
    image = _raster(w, h, bands)
    rows = raster_rows(_zstd_rows(image), w, h, bands, block_bytes=block)
    info = save_pyramid(rows, w, h, bands, str(tmp_path), "ours", tile, overlap, 90)
    assert parse_dzi((tmp_path / "ours.dzi").read_bytes()) == info
    vips = pyvips.Image.new_from_memory(image.tobytes(), w, h, bands, "uchar")
    for name, suffix in (("vips", ".jpg[Q=90]"), ("png", ".png")):
        vips.dzsave(str(tmp_path / name), layout="dz", depth="onepixel", tile_size=tile,
                    overlap=overlap, suffix=suffix, keep="none")
    ours = sorted(p.relative_to(tmp_path / "ours_files")
                  for p in (tmp_path / "ours_files").rglob("*.jpg"))
    theirs = sorted(p.relative_to(tmp_path / "vips_files")
                    for p in (tmp_path / "vips_files").rglob("*.jpg"))
    assert ours == theirs and len(ours) == info.tile_count()
    raw: dict = {}
    builder = PyramidBuilder(w, h, bands, tile, overlap,
                             lambda lv, c, r, px: raw.__setitem__(f"{lv}/{c}_{r}",
                                                                   np.concatenate(px)))
    for block_rows in raster_rows(_zstd_rows(image), w, h, bands, block_bytes=block):
        builder.feed(block_rows)
    builder.finish()
    gaps = []
    for rel in ours:
        key = str(rel).removesuffix(".jpg")
        exact = _decode(tmp_path / "png_files" / f"{key}.png")
        assert (raw[key] == exact).all(), f"{rel}: pixels before JPEG differ from dzsave's"
        a, b = _decode(tmp_path / "ours_files" / rel), _decode(tmp_path / "vips_files" / rel)
        assert a.shape == b.shape == exact.shape, rel
        # Above 45 dB both are visually lossless. Below, two libjpeg builds
        # round differently tile by tile (±1.5 dB on this harsh synthetic
        # art); on the whole neither is worse.
        ours_db, vips_db = min(_psnr(a, exact), 45), min(_psnr(b, exact), 45)
        assert ours_db >= vips_db - 1.5, rel
        gaps.append(ours_db - vips_db)
    assert sum(gaps) / len(gaps) >= -0.5, gaps


@pytest.mark.parametrize("data,message", [
    (zstandard.ZstdCompressor().compress(bytes(30 * 9)), "9 rows"),  # short
    (zstandard.ZstdCompressor().compress(bytes(30 * 11)), "more than the 10 rows"),
    (zstandard.ZstdCompressor().compress(bytes(30 * 10 + 3)), "3 bytes"),
    (b"not zstd at all", "zstd"),
])
def test_raster_rows_refuses_wrong_rasters(data, message):
    with pytest.raises(RasterUnreadable, match=message):
        list(raster_rows(io.BytesIO(data), 10, 10, 3, block_bytes=64))


def test_cut_pyramid_stops_on_store_error_and_on_check():
    image = _raster(600, 600, 1)
    stored: list[str] = []

    def put(level: int, col: int, row: int, data: bytes) -> None:
        if len(stored) >= 5:
            raise OSError("disk full")
        stored.append(tile_name(level, col, row, "jpg"))

    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(OSError, match="disk full"):
            cut_pyramid(raster_rows(_zstd_rows(image), 600, 600, 1, block_bytes=6000),
                        600, 600, 1, 256, 1, 90, lambda *tile: pool.submit(put, *tile),
                        max_in_flight=2)
        assert len(stored) == 5

        class Stop(Exception):
            pass

        def check() -> None:
            raise Stop

        with pytest.raises(Stop):
            cut_pyramid(raster_rows(_zstd_rows(image), 600, 600, 1), 600, 600, 1, 256, 1, 90,
                        lambda *tile: None, check=check)


def test_white_tiles_are_encoded_once():
    encoder = JpegEncoder(90)
    white = np.full((258, 258, 1), 255, np.uint8)
    assert encoder.encode(white) is encoder.encode(white.copy())
    assert _decode_bytes(encoder.encode(white)).min() == 255
    dark = white.copy()
    dark[100, 100] = 0
    assert encoder.encode(dark) != encoder.encode(white)
    with pytest.raises(ValueError):
        parse_dzi(b"<html/>")


def _decode_bytes(data: bytes) -> np.ndarray:
    im = pyvips.Image.new_from_buffer(data, "")
    return np.ndarray(buffer=im.write_to_memory(), dtype=np.uint8,
                      shape=(im.height, im.width, im.bands))
