"""The IIIF Image API's rules that need no stack: every parameter form and
error of Image API 3.0 (sections 4.1-4.5), the spec's own examples, the
pyramid level and tiles a request is cut from, and the cut itself from a
pyramid made in memory."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
import pyvips

from planzoom import iiif
from planzoom.config import Settings
from planzoom.dzi import DziInfo
from planzoom.engines.pyramid import cut_pyramid
from planzoom.iiif import IiifBadRequest, IiifEmpty, IiifTooLarge, IiifUpscale, Limits
from services.gateway.iiif.cut import Regions, RegionsBusy, compose
from services.gateway.iiif.image import IMAGE_ID, Iiif, info

LIMITS = Limits(10_000, 10_000, 25_000_000)


def plan(region="full", size="max", rotation="0", qf="default.jpg", w=300, h=200,
         limits=LIMITS) -> iiif.Plan:
    return iiif.resolve(iiif.parse(region, size, rotation, qf), w, h, limits)


def box(p: iiif.Plan) -> tuple[int, ...]:
    return p.x, p.y, p.w, p.h, p.width, p.height


# The spec's examples (section 4.1, 4.2): its example image is 300 x 200.
@pytest.mark.parametrize("region,size,expected", [
    ("full", "max", (0, 0, 300, 200, 300, 200)),
    ("square", "max", (50, 0, 200, 200, 200, 200)),
    ("125,15,120,140", "max", (125, 15, 120, 140, 120, 140)),
    ("pct:41.6,7.5,40,70", "max", (125, 15, 120, 140, 120, 140)),
    ("125,15,200,200", "max", (125, 15, 175, 185, 175, 185)),
    ("pct:41.6,7.5,66.6,100", "max", (125, 15, 175, 185, 175, 185)),
    ("full", "150,", (0, 0, 300, 200, 150, 100)),
    ("full", ",150", (0, 0, 300, 200, 225, 150)),
    ("full", "pct:50", (0, 0, 300, 200, 150, 100)),
    ("full", "225,100", (0, 0, 300, 200, 225, 100)),
    ("full", "!225,100", (0, 0, 300, 200, 150, 100)),
    ("full", "^360,", (0, 0, 300, 200, 360, 240)),
    ("full", "^,240", (0, 0, 300, 200, 360, 240)),
    ("full", "^pct:120", (0, 0, 300, 200, 360, 240)),
    ("full", "^360,360", (0, 0, 300, 200, 360, 360)),
    ("full", "^!360,360", (0, 0, 300, 200, 360, 240)),
    ("full", "^150,", (0, 0, 300, 200, 150, 100)),  # ^ allows, does not force
])
def test_the_specs_examples(region, size, expected):
    assert box(plan(region, size)) == expected


def test_max_keeps_within_the_limits_and_keeps_the_aspect_ratio():
    limits = Limits(3000, 2000, 4_000_000)  # the spec's section 5.2 example
    p = plan("full", "max", w=6000, h=4000, limits=limits)
    assert p.width <= 3000 and p.height <= 2000 and p.width * p.height <= 4_000_000
    assert abs(p.width / p.height - 1.5) < 0.002 and p.width * p.height > 3_990_000
    assert box(plan("full", "max", w=6000, h=4000, limits=Limits(3000, 3000, 10**9)))[4:] == (
        3000, 2000)
    # ^max is what the limits allow, upscaled if need be.
    assert box(plan("full", "^max", w=60, h=40, limits=Limits(3000, 3000, 10**9)))[4:] == (
        3000, 2000)
    for w, h in ((7, 3), (1, 9999), (9933, 7016), (12345, 17)):
        fw, fh = iiif.fit(w, h, limits, upscale=True)
        assert fw <= 3000 and fh <= 2000 and fw * fh <= 4_000_000 and fw >= 1 and fh >= 1


def test_confined_sizes_never_exceed_their_box_or_the_limits():
    for w, h, bw, bh in ((1000, 1000, 350, 750), (1000, 333, 100, 100), (3, 1000, 10, 10),
                         (9933, 7016, 1024, 1024)):
        p = plan("full", f"!{bw},{bh}", w=w, h=h)
        assert p.width <= bw and p.height <= bh and (p.width == bw or p.height == bh)
        # The other side is the region's aspect ratio rounded (at least 1 pixel).
        if p.width == bw:
            assert p.height == max(1, math.floor(h * bw / w + 0.5))
        else:
            assert p.width == max(1, math.floor(w * bh / h + 0.5))
    small = Limits(100, 100, 5000)
    p = plan("full", "!1000,1000", w=2000, h=1000, limits=small)
    assert p.width <= 100 and p.width * p.height <= 5000


@pytest.mark.parametrize("region,size,rotation,qf", [
    ("", "max", "0", "default.jpg"), ("fu11", "max", "0", "default.jpg"),
    ("1,2,3", "max", "0", "default.jpg"), ("-1,2,3,4", "max", "0", "default.jpg"),
    ("1.5,2,3,4", "max", "0", "default.jpg"), ("pct:1,2,3", "max", "0", "default.jpg"),
    ("pct:+1,2,3,4", "max", "0", "default.jpg"), ("pct:1e2,2,3,4", "max", "0", "default.jpg"),
    ("full", "full", "0", "default.jpg"), ("full", "", "0", "default.jpg"),
    ("full", ",", "0", "default.jpg"), ("full", "!100,", "0", "default.jpg"),
    ("full", "pct:", "0", "default.jpg"), ("full", "^^max", "0", "default.jpg"),
    ("full", "100,100,", "0", "default.jpg"), ("full", "max^", "0", "default.jpg"),
    ("full", "max", "-90", "default.jpg"), ("full", "max", "361", "default.jpg"),
    ("full", "max", "45", "default.jpg"), ("full", "max", "!22.5", "default.jpg"),
    ("full", "max", "90!", "default.jpg"), ("full", "max", "", "default.jpg"),
    ("full", "max", "0", "grey.jpg"), ("full", "max", "0", "native.jpg"),
    ("full", "max", "0", "default"), ("full", "max", "0", "default.gif"),
    ("full", "max", "0", "default.tif"), ("full", "max", "0", "default.JPG"),
    ("full", "max", "0", "default.jpg.png"),
])
def test_syntax_errors_are_400_naming_the_parameter(region, size, rotation, qf):
    with pytest.raises(IiifBadRequest) as e:
        iiif.parse(region, size, rotation, qf)
    assert e.value.field in ("region", "size", "rotation", "quality", "format")
    assert e.value.code.name == "INVALID_ARGUMENT" and e.value.reason == "IIIF_BAD_REQUEST"


def test_every_accepted_form_parses():
    r = iiif.parse("pct:0.5,10,99.25,3", "^!40,50", "!270", "bitonal.webp")
    assert r.region == ("pct", 0.5, 10.0, 99.25, 3.0) and r.size[:3] == ("confined", 40, 50)
    assert (r.upscale, r.mirror, r.rotation, r.quality, r.format) == (
        True, True, 270, "bitonal", "webp")
    for rotation, degrees in (("0", 0), ("90", 90), ("180.0", 180), ("360", 0), ("!0", 0)):
        assert iiif.parse("full", "max", rotation, "gray.png").rotation == degrees
    kinds = {s: iiif.parse("square", s, "0", "color.jpg").size[0]
             for s in ("max", "^max", "10,", ",10", "10,20", "!10,20", "pct:5", "^pct:500")}
    assert kinds == {"max": "max", "^max": "max", "10,": "w", ",10": "h", "10,20": "wh",
                     "!10,20": "confined", "pct:5": "pct", "^pct:500": "pct"}


@pytest.mark.parametrize("region,size,error", [
    ("0,0,0,10", "max", IiifEmpty), ("0,0,10,0", "max", IiifEmpty),
    ("300,0,10,10", "max", IiifEmpty), ("0,200,10,10", "max", IiifEmpty),
    ("pct:100,0,10,10", "max", IiifEmpty), ("pct:0,0,0.1,10", "max", IiifEmpty),
    ("full", "0,", IiifEmpty), ("full", ",0", IiifEmpty), ("full", "pct:0", IiifEmpty),
    ("full", "0,0", IiifEmpty), ("full", "!0,10", IiifEmpty), ("full", "pct:0.1", IiifEmpty),
    ("full", "301,", IiifUpscale), ("full", ",201", IiifUpscale),
    ("full", "pct:100.5", IiifUpscale), ("full", "301,200", IiifUpscale),
    ("full", "300,201", IiifUpscale), ("10,10,20,20", "21,", IiifUpscale),
    ("full", "!2000,3000", IiifUpscale),  # the validator's size_noup
    ("full", "^10001,", IiifTooLarge), ("full", "^,10001", IiifTooLarge),
    ("full", "^5001,5001", IiifTooLarge), ("full", "^pct:10000", IiifTooLarge),
])
def test_requests_an_image_cannot_answer_are_400(region, size, error):
    with pytest.raises(error) as e:
        plan(region, size)
    assert e.value.code.name == "INVALID_ARGUMENT" and e.value.message


def test_a_limit_refusal_names_the_limit():
    with pytest.raises(IiifTooLarge, match="maxWidth 10,000"):
        plan("full", "^10001,")
    with pytest.raises(IiifTooLarge, match="maxArea 25,000,000"):
        plan("full", "9933,7016", w=9933, h=7016)


def test_canonical_forms():
    assert iiif.canonical(plan(), LIMITS) == "full/max/0/default.jpg"
    assert iiif.canonical(plan("pct:41.6,7.5,40,70", "60,", "!90", "gray.png"), LIMITS) == \
        "125,15,120,140/60,70/!90/gray.png"
    assert iiif.canonical(plan("0,0,300,200", "pct:100"), LIMITS) == "full/max/0/default.jpg"
    assert iiif.canonical(plan("full", "^360,"), LIMITS) == "full/^360,240/0/default.jpg"
    assert iiif.canonical(plan("full", "^max", limits=Limits(600, 600, 10**6)),
                          Limits(600, 600, 10**6)) == "full/^max/0/default.jpg"
    assert plan("full", "max", "90").out_size == (200, 300)


def test_a_tile_request_maps_to_its_stored_tile():
    """The spec's tile arithmetic (implementation notes, section 3) at each
    scale factor info.json gives lands on one stored tile of the level."""
    for overlap in (0, 1):
        dzi = DziInfo(1001, 777, 256, overlap, "jpg")
        for k in range(dzi.levels):
            s = 2**k
            level = dzi.levels - 1 - k
            cols, rows = dzi.grid(level)
            for n, m in ((0, 0), (cols - 1, rows - 1), (cols // 2, 0)):
                xr, yr = n * 256 * s, m * 256 * s
                wr, hr = min(256 * s, 1001 - xr), min(256 * s, 777 - yr)
                ws, hs = math.ceil(wr / s), math.ceil(hr / s)
                p = plan(f"{xr},{yr},{wr},{hr}", f"{ws},{hs}", w=1001, h=777)
                src = iiif.source(dzi, p, 10**9)
                assert (src.level, src.scale) == (level, s)
                assert (src.w, src.h) == (ws, hs) == (p.width, p.height)
                parts = iiif.pieces(dzi, src)
                assert [(c, r) for c, r, _, _ in parts] == [(n, m)]
                single = cols == rows == 1
                assert (iiif.stored_tile(dzi, p, src) == (n, m)) == (overlap == 0 or single)


def test_the_level_has_the_outputs_pixels_and_no_more_than_twice():
    dzi = DziInfo(9933, 7016, 256, 1, "jpg")
    for region, size in (("full", "1024,"), ("1000,1000,4096,4096", "1024,"),
                         ("5,7,3000,100", "700,"), ("full", "!300,300")):
        p = plan(region, size, w=9933, h=7016)
        src = iiif.source(dzi, p, 10**9)
        assert src.w >= p.width and src.h >= p.height
        assert src.w < 2 * p.width + 2 or src.scale == 1
    # A size of another aspect ratio than its region: the canvas stays in budget.
    p = plan("full", "9000,1", w=9933, h=7016)
    src = iiif.source(dzi, p, 4_000_000)
    assert src.w * src.h <= 4_000_000


def test_pieces_tile_the_box_once_without_overlap():
    dzi = DziInfo(1000, 700, 256, 2, "jpg")
    src = iiif.Source(level=dzi.levels - 1, scale=1, x=100, y=250, w=700, h=300)
    covered = np.zeros((300, 700), int)
    for col, row, (sx, sy, w, h), (dx, dy) in iiif.pieces(dzi, src):
        tx, ty, tw, th = dzi.tile_box(src.level, col, row)
        assert 0 <= sx and sx + w <= tw and 0 <= sy and sy + h <= th
        assert (tx + sx, ty + sy) == (src.x + dx, src.y + dy)  # the same level pixel
        covered[dy:dy + h, dx:dx + w] += 1
    assert (covered == 1).all()


def _pyramid(pixels: np.ndarray, tile: int = 64, overlap: int = 1):
    tiles: dict[tuple[int, int, int], bytes] = {}

    def store(level, col, row, data):
        tiles[level, col, row] = data

    h, w, bands = pixels.shape
    dzi = cut_pyramid([pixels], w, h, bands, tile, overlap, 100, store, encode_threads=1)
    return dzi, tiles


def _image(data: bytes) -> np.ndarray:
    im = pyvips.Image.new_from_buffer(data, "")
    return np.ndarray(buffer=im.write_to_memory(), dtype=np.uint8,
                      shape=(im.height, im.width, im.bands))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.fixture(scope="module")
def photo():
    """A smooth RGB picture with edges, 500 x 300, and its pyramid."""
    y, x = np.mgrid[0:300, 0:500]
    pixels = np.dstack([(x * 255 // 499), (y * 255 // 299), ((x + y) % 64) * 4]).astype(np.uint8)
    pixels[100:140, 200:330] = (20, 200, 60)
    return (pixels, *_pyramid(pixels))


def _cut(dzi, tiles, p, budget=10**9):
    src = iiif.source(dzi, p, budget)
    parts = [(tiles[src.level, col, row], (col, row, piece, dest))
             for col, row, piece, dest in iiif.pieces(dzi, src)]
    return _image(compose(dzi, src, parts, p, 95))


def test_a_cut_region_is_the_region_of_the_full_image(photo):
    pixels, dzi, tiles = photo
    region = pixels[37:37 + 180, 61:61 + 250]
    got = _cut(dzi, tiles, plan("61,37,250,180", "max", w=500, h=300))
    assert got.shape == region.shape and _psnr(got, region) > 38
    # At a smaller level, against the region resized from full resolution:
    # edges on the level's pixels match closely; others within half a pixel.
    for x, y, least in ((60, 36, 35), (61, 37, 20)):
        want = pyvips.Image.new_from_array(pixels[y:y + 180, x:x + 250]).resize(100 / 250)
        want = np.ndarray(buffer=want.write_to_memory(), dtype=np.uint8, shape=(72, 100, 3))
        got = _cut(dzi, tiles, plan(f"{x},{y},250,180", "100,", w=500, h=300))
        assert got.shape == (72, 100, 3) and _psnr(got, want) > least


def test_rotation_mirror_quality_and_formats(photo):
    pixels, dzi, tiles = photo
    base = _cut(dzi, tiles, plan("0,0,100,60", "max", w=500, h=300, qf="default.png"))
    assert _psnr(base, pixels[:60, :100]) > 38
    rotated = _cut(dzi, tiles, plan("0,0,100,60", "max", "90", "default.png", 500, 300))
    assert rotated.shape == (100, 60, 3) and _psnr(rotated, np.rot90(base, -1)) > 45
    mirrored = _cut(dzi, tiles, plan("0,0,100,60", "max", "!180", "default.png", 500, 300))
    assert _psnr(mirrored, base[::-1, :, :]) > 45  # mirror, then 180: upside down
    gray = _cut(dzi, tiles, plan("0,0,100,60", "max", "0", "gray.png", 500, 300))
    assert gray.shape == (60, 100, 1)
    bitonal = _cut(dzi, tiles, plan("full", "max", "0", "bitonal.png", 500, 300))
    assert set(np.unique(bitonal)) <= {0, 255} and len(np.unique(bitonal)) == 2
    p = plan("full", "50,", qf="default.webp", w=500, h=300)
    src = iiif.source(dzi, p, 10**9)
    webp = compose(dzi, src, [(tiles[src.level, c, r], (c, r, piece, dest))
                              for c, r, piece, dest in iiif.pieces(dzi, src)], p, 80)
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"


def test_a_region_at_its_levels_scale_is_encoded_straight_and_matches_pyvips(photo):
    """A JPEG of the canvas as it is (no resize, rotation or conversion) is
    encoded without pyvips; the pixels are those pyvips would encode."""
    pixels, dzi, tiles = photo
    direct = _cut(dzi, tiles, plan("64,64,256,128", "max", w=500, h=300))
    through_vips = _cut(dzi, tiles, plan("64,64,256,128", "max", "!0", w=500, h=300))
    assert direct.shape == (128, 256, 3) and _psnr(direct, pixels[64:192, 64:320]) > 38
    assert _psnr(direct, through_vips[:, ::-1]) > 45


def test_grey_pyramids_stay_grey_unless_color_is_asked():
    pixels = np.tile(np.arange(200, dtype=np.uint8)[None, :, None], (120, 1, 1))
    dzi, tiles = _pyramid(pixels)
    assert _cut(dzi, tiles, plan("full", "max", w=200, h=120)).shape == (120, 200, 1)
    color = _cut(dzi, tiles, plan("full", "max", w=200, h=120, qf="color.png"))
    assert color.shape == (120, 200, 3) and _psnr(color[:, :, :1], pixels) > 38


def test_regions_wait_for_a_slot_then_refuse_with_a_retry_hint():
    async def scenario():
        regions = Regions(running=1, waiting=1, wait_seconds=0.2)
        order = []

        async def hold(name, seconds):
            async with regions.slot(org=name):  # each its own org
                order.append(name)
                await asyncio.sleep(seconds)

        first = asyncio.create_task(hold("first", 0.1))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(hold("second", 0))  # waits its turn
        await asyncio.sleep(0.01)
        with pytest.raises(RegionsBusy) as busy:
            await hold("third", 0)  # one runs, one waits: no room
        await asyncio.gather(first, second)
        assert order == ["first", "second"]
        assert busy.value.retry_after and "PLANZOOM_IIIF_MAX_CONCURRENT_REGIONS" in \
            busy.value.message
        blocker = asyncio.create_task(hold("long", 0.5))
        await asyncio.sleep(0.01)
        with pytest.raises(RegionsBusy):
            await hold("late", 0)  # waited 0.2 s, still held
        await blocker

    asyncio.run(scenario())


def test_one_org_holds_at_most_half_of_the_region_slots():
    """Two running and two waiting slots: one org's third cut is refused at
    once while another org's still gets a slot."""
    async def scenario():
        regions = Regions(running=2, waiting=2, wait_seconds=1.0)
        release = asyncio.Event()

        async def hold(org):
            async with regions.slot(org):
                await release.wait()

        held = [asyncio.create_task(hold("busy")) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(RegionsBusy) as busy:
            await hold("busy")
        assert "its share" in busy.value.message
        other = asyncio.create_task(hold("other"))  # waits for a running slot
        await asyncio.sleep(0.01)
        assert not other.done()
        release.set()
        await asyncio.gather(*held, other)
        assert not regions._by_org

    asyncio.run(scenario())


def test_info_json_describes_the_pyramid():
    dzi = DziInfo(9933, 7016, 256, 1, "jpg")
    doc = info(dzi, "https://x.example/iiif/3/0123456789abcdef012345-1", Iiif(Settings()).limits)
    assert list(doc)[:3] == ["@context", "id", "type"]
    assert (doc["type"], doc["profile"], doc["width"], doc["height"]) == (
        "ImageService3", "level2", 9933, 7016)
    assert doc["tiles"] == [{"width": 256, "height": 256,
                             "scaleFactors": [2**k for k in range(dzi.levels)]}]
    sizes = [(s["width"], s["height"]) for s in doc["sizes"]]
    assert sizes and all(s in [dzi.level_size(lv) for lv in range(dzi.levels)] for s in sizes)
    assert max(max(s) for s in sizes) <= 2048 and sizes == sorted(sizes)
    assert (doc["maxWidth"], doc["maxHeight"], doc["maxArea"]) == (10_000, 10_000, 25_000_000)
    assert "sizeUpscaling" in doc["extraFeatures"] and doc["extraFormats"] == ["webp"]
    assert IMAGE_ID.fullmatch("0123456789abcdef012345-12")
    for bad in ("0123456789abcdef012345-0", "0123456789abcdef01234-1", "x-1",
                "0123456789ABCDEF012345-1", "0123456789abcdef012345-1234567"):
        assert not IMAGE_ID.fullmatch(bad)
