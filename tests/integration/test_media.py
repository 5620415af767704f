"""Still images through the running stack, on the real photos, scans and RAW
files of ``../shared/corpus/media/``: each kind converts to a valid DZI
whose full-resolution pixels match an independent decode (Pillow with
LittleCMS, pillow-heif, LibRaw), upright, sRGB, with no metadata left; and
what must be refused is refused before anything is decoded."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import pyvips
from PIL import Image, ImageCms, ImageOps

from planzoom.v1 import jobs_pb2
from tests.dzi_check import check_page, psnr
from tests.helpers import rpc_reason, wait_ended

BOMB = "hostile-decompression-bomb-jpeg-280mp-sharp.jpg"
#: file, kind, pages, upright (width, height) of page 1, bands (1 = grey)
CASES = [
    ("photo-exif-orient6-stone-building-metadata-extractor-images.jpg", "jpeg", 1, (1932, 2576), 3),
    ("photo-exif-orient8-skyscrapers-metadata-extractor-images.jpg", "jpeg", 1, (2272, 1704), 3),
    ("photo-cmyk-park-sharp.jpg", "jpeg", 1, (500, 333), 3),
    ("photo-progressive-tractor-field-metadata-extractor-images.jpg", "jpeg", 1, (960, 1280), 3),
    ("hostile-lying-extension-jpeg-named-png-photoprism.png", "jpeg", 1, (240, 180), 3),
    ("png-rgba-alpha-dice-pillow.png", "png", 1, (200, 150), 3),
    ("png-16bit-rgb-flag-sharp.png", "png", 1, (900, 600), 3),
    ("png-palette-photo-libvips.png", "png", 1, (290, 442), 3),
    ("tiff-16bit-rgb-photo-libvips.tif", "tiff", 1, (290, 442), 3),
    ("tiff-multipage-3p-g4-fax-pillow.tiff", "tiff", 3, (3307, 4677), 1),
    ("tiff-scanned-document-1bit-ccitt-g4-pillow.tif", "tiff", 1, (2548, 3296), 1),
    ("tiff-bigtiff-hopper-pillow.tif", "tiff", 1, (128, 128), 3),
    ("tiff-geotiff-landsat-rgb-rasterio.tif", "tiff", 1, (791, 718), 3),
    ("tiff-tiled-cog-overviews-aerial-rasterio.tif", "tiff", 1, (1024, 1024), 3),
    ("tiff-flatbed-scan-epson-v800-metadata-extractor-images.tiff", "tiff", 1, (425, 640), 3),
    ("webp-lossy-exif-orient6-office-tower-metadata-extractor-images.webp", "webp", 1,
     (2736, 3648), 3),
    ("webp-lossless-alpha-rose-metadata-extractor-images.webp", "webp", 1, (400, 301), 3),
    ("gif-animated-42frames-pillow.gif", "gif", 1, (245, 245), 3),
    ("avif-irot-imir-hopper-pillow.avif", "avif", 1, (640, 427), 3),
    ("avif-iphonexs-portrait-p3-libvips.avif", "avif", 1, (3024, 4032), 3),
    ("heic-iphone7-building-exif-orient6-photoprism.heic", "heif", 1, (3024, 4032), 3),
    ("raw-dng-canon-eos6d-photoprism.dng", "raw", 1, (1224, 816), 3),
]


def reference(path, kind: str, page: int) -> np.ndarray:
    """An independent decode of the page as it should look: Pillow (with
    EXIF orientation and LittleCMS for embedded profiles), pillow-heif for
    HEIC (EXIF orientation 6 applied by hand: the file has no irot box),
    LibRaw for RAW."""
    if kind == "raw":
        import rawpy
        with rawpy.imread(str(path)) as raw:
            return raw.postprocess(use_camera_wb=True, output_bps=8)
    if kind == "heif":
        import pillow_heif
        return np.rot90(np.asarray(pillow_heif.open_heif(str(path))), k=-1)
    im = Image.open(path)
    im.seek(page - 1)
    im = ImageOps.exif_transpose(im)
    icc = im.info.get("icc_profile")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
    if icc and im.mode in ("RGB", "RGBA", "CMYK"):
        im = ImageCms.profileToProfile(
            im.convert("CMYK" if im.mode == "CMYK" else "RGB"),
            ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB")
    return np.asarray(im.convert("L" if im.mode in ("1", "L") else "RGB"))


@pytest.fixture(scope="module")
def converted(corpus, client):
    """Every case submitted at once, then each job's final record."""
    replies = {name: client.submit(str(corpus / "media" / name), jobs_pb2.PlanRef(
        org="acme", project="media", plan=f"case-{i}"), jobs_pb2.JobOptions())
        for i, (name, *_) in enumerate(CASES)}
    return {name: wait_ended(client, reply.job_id) for name, reply in replies.items()}


@pytest.mark.parametrize("name,kind,pages,size,bands", CASES,
                         ids=[c[0].split("-")[0] + "-" + c[0].split("-")[1] for c in CASES])
def test_each_kind_converts_upright_and_true_to_its_colours(corpus, s3, converted, name, kind,
                                                            pages, size, bands):
    job = converted[name]
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE, job.error
    assert job.source_kind == kind and job.total_pages == pages
    first = job.pages[0]
    assert (first.width_px, first.height_px) == size, "not upright, or not its own size"
    assert first.bands == bands
    for record in job.pages:
        # JPEG tiles at quality 90 against an exact decode: photos land at
        # 36-50 dB; a page turned the wrong way or with wrong colours is
        # under 15 dB.
        check_page(s3, record, None, reference=reference(corpus / "media" / name, kind,
                                                         record.page), min_psnr=33.0)
    assert job.source_key.startswith("sources/acme/media/")


def test_outputs_carry_no_metadata(s3, converted):
    """The photo with GPS and maker notes: its tiles have no EXIF or XMP."""
    job = converted["photo-exif-orient6-stone-building-metadata-extractor-images.jpg"]
    prefix = job.pages[0].dzi_key.removesuffix(".dzi") + "_files/"
    top = job.pages[0].levels - 1
    tile = pyvips.Image.new_from_buffer(
        s3.get_object(Bucket="planzoom", Key=f"{prefix}{top}/0_0.jpg")["Body"].read(), "")
    fields = tile.get_fields()
    assert not [f for f in fields if f.startswith(("exif", "xmp", "iptc"))], fields


@pytest.mark.parametrize("name,code,reason", [
    ("hostile-decompression-bomb-jpeg-280mp-sharp.jpg", grpc.StatusCode.RESOURCE_EXHAUSTED,
     "IMAGE_TOO_LARGE"),
    ("hostile-decompression-bomb-gif-pillow.gif", grpc.StatusCode.INVALID_ARGUMENT,
     "IMAGE_DAMAGED"),
    ("hostile-truncated-jpeg-phone-photo-metadata-extractor-images.jpg",
     grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_DAMAGED"),
    ("raw-cr2-canon-350d-metadata-stub-exiftool.cr2", grpc.StatusCode.INVALID_ARGUMENT,
     "IMAGE_DAMAGED"),
    ("hostile-svg-with-script-svg-sanitizer.svg", grpc.StatusCode.INVALID_ARGUMENT,
     "UNSUPPORTED_FILE"),
])
def test_what_cannot_be_taken_is_refused_up_front(corpus, client, name, code, reason):
    with pytest.raises(grpc.RpcError) as refused:
        client.submit(str(corpus / "media" / name),
                      jobs_pb2.PlanRef(org="acme", project="media", plan="refused"),
                      jobs_pb2.JobOptions())
    assert refused.value.code() == code and rpc_reason(refused.value) == reason, \
        refused.value.details()
    assert "/" not in refused.value.details(), "a path leaked"
    if name.endswith(".svg"):
        assert "SVG" in refused.value.details()


def test_a_bomb_is_refused_from_its_header_alone(corpus):
    """What ingest's worker does with the 280-megapixel JPEG, in a process of
    its own: refused, with a peak memory far below one decoded row band
    (decoding it would take 280 MB)."""
    # VmHWM: the peak of this program's own memory (ru_maxrss would count
    # the pytest process it was forked from).
    code = ("from planzoom.engines.base import Limits\n"
            "from planzoom.engines.image import image_pages, ImageTooLarge\n"
            "from planzoom.media import JPEG\n"
            "try:\n"
            f"    image_pages({str(corpus / 'media' / BOMB)!r}, JPEG, Limits(10, 200_000_000))\n"
            "except ImageTooLarge:\n"
            "    print(next(line.split()[1] for line in open('/proc/self/status')\n"
            "               if line.startswith('VmHWM:')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    peak_kib = int(out.stdout.strip())
    assert peak_kib < 150 * 1024, f"peak {peak_kib} KiB: the bomb was decoded"


def _image(s3, key: str) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(s3.get_object(Bucket="planzoom", Key=key)["Body"].read(),
                                        "")


def _pixels(image: pyvips.Image) -> np.ndarray:
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8,
                      shape=(image.height, image.width, image.bands))


def test_an_image_page_has_its_variants(corpus, s3, converted):
    name = "photo-exif-orient6-stone-building-metadata-extractor-images.jpg"
    page = converted[name].pages[0]
    variants = {v.name: v for v in page.variants}
    expected = {"thumbnail": (225, 300), "icon": (128, 128), "webp-400": (300, 400),
                "webp-800": (600, 800), "webp-1920": (1440, 1920), "display": (1440, 1920)}
    assert {n: (v.width, v.height) for n, v in variants.items()} == expected
    for variant in variants.values():
        image = _image(s3, variant.key)
        assert (image.width, image.height) == (variant.width, variant.height)
        assert image.get("vips-loader") == ("webpload_buffer" if variant.format == "webp"
                                            else "jpegload_buffer")
        assert not [f for f in image.get_fields() if f.startswith(("exif", "xmp", "iptc"))]
        assert variant.key.endswith(f"page-1.{variant.name}.{variant.format}")
    # upright: the thumbnail is the reference, made small
    upright = pyvips.Image.new_from_array(reference(corpus / "media" / name, "jpeg", 1))
    small = _pixels(upright.thumbnail_image(300, height=300))
    thumb = _pixels(_image(s3, variants["thumbnail"].key))
    assert small.shape == thumb.shape
    assert psnr(thumb, small) > 25, "the thumbnail is not the upright photo"
    # the display image carries its watermark at the bottom right: it differs
    # from the same-size preview there, and barely anywhere else
    display = _pixels(_image(s3, variants["display"].key)).astype(int)
    plain = _pixels(_image(s3, variants["webp-1920"].key)).astype(int)
    corner = np.abs(display[-150:, -700:] - plain[-150:, -700:]).mean()
    elsewhere = np.abs(display[:600, :600] - plain[:600, :600]).mean()
    assert corner > 4 * elsewhere and corner > 5, (corner, elsewhere)


def test_variants_never_upscale(converted):
    page = converted["png-rgba-alpha-dice-pillow.png"].pages[0]
    assert {(v.width, v.height) for v in page.variants if v.name != "icon"} == {(200, 150)}
    assert [(v.width, v.height) for v in page.variants if v.name == "icon"] == [(128, 128)]


def test_variant_options_choose_what_is_made(corpus, client, s3):
    reply = client.submit(
        str(corpus / "media" / "photo-exif-orient8-skyscrapers-metadata-extractor-images.jpg"),
        jobs_pb2.PlanRef(org="acme", project="media", plan="variants"),
        jobs_pb2.JobOptions(variants=jobs_pb2.VariantOptions(
            thumbnail_px=0, icon_px=64, webp_px=[256], display_px=0)))
    page = wait_ended(client, reply.job_id).pages[0]
    assert sorted((v.name, v.width, v.height) for v in page.variants) == [
        ("icon", 64, 64), ("webp-256", 256, 192)]
    with pytest.raises(grpc.RpcError) as refused:
        client.submit(str(corpus / "media" / "png-palette-photo-libvips.png"),
                      jobs_pb2.PlanRef(org="acme", project="media", plan="variants"),
                      jobs_pb2.JobOptions(variants=jobs_pb2.VariantOptions(display_px=5000)))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "display_px" in refused.value.details()


def test_pdf_pages_get_thumbnails_and_overviews_the_gateway_serves(corpus, client, stack, s3):
    reply = client.submit(str(corpus / "arch-renovation-plans-7p-a4-affinity-latirasse.pdf"),
                          jobs_pb2.PlanRef(org="acme", project="media", plan="pdf-thumbs"),
                          jobs_pb2.JobOptions(dpi=100, variants=jobs_pb2.VariantOptions(
                              overview_px=600)))
    job = wait_ended(client, reply.job_id)
    for page in job.pages:
        made = {v.name: v for v in page.variants}
        assert sorted(made) == ["overview", "thumbnail"]
        thumb, overview = made["thumbnail"], made["overview"]
        assert max(thumb.width, thumb.height) == 300
        assert (thumb.width > thumb.height) == (page.width_pt > page.height_pt)
        # The level that fits 600 px: A4 at 100 DPI is about 1170 x 830 px,
        # so one level down, about 585 x 415.
        assert overview.level == page.levels - 2
        assert 500 < max(overview.width, overview.height) <= 600
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as http:
        for name in ("thumbnail", "overview"):
            resp = http.get(f"/v1/jobs/{job.job_id}/pages/2.{name}.jpg",
                            headers={"Authorization": f"Bearer {stack.token('acme', 'viewer')}"})
            assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
            key = next(v.key for v in job.pages[1].variants if v.name == name)
            assert resp.content == s3.get_object(Bucket="planzoom", Key=key)["Body"].read()
            assert "immutable" in resp.headers["cache-control"]
        missing = http.get(f"/v1/jobs/{job.job_id}/pages/2.icon.jpg",
                           headers={"Authorization": f"Bearer {stack.token('acme')}"})
        assert missing.status_code == 404


def test_the_cli_submits_a_photo_and_a_folder(corpus, stack, client, tmp_path):
    """``planzoom submit photo.heic`` and ``planzoom submit DIR``: one job per
    file, plan PLAN-<file name>; a refused file is reported, the rest go on,
    and the exit status says one was refused."""
    cli = Path(sys.executable).parent / "planzoom"
    env = {**os.environ, **stack.env(), "PLANZOOM_TOKEN": stack.token("acme", "uploader")}
    heic = corpus / "media" / "heic-iphone7-building-exif-orient6-photoprism.heic"
    one = subprocess.run([cli, "submit", heic, "--org", "acme", "--project", "cli", "--plan",
                          "one", "--watch"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stderr
    folder = tmp_path / "site visit"
    folder.mkdir()
    for name in ("photo-cmyk-park-sharp.jpg", "tiff-multipage-3p-g4-fax-pillow.tiff",
                 "hostile-svg-with-script-svg-sanitizer.svg"):
        (folder / name).write_bytes((corpus / "media" / name).read_bytes())
    (folder / ".DS_Store").write_bytes(b"\0")
    (folder / "nested").mkdir()
    run = subprocess.run([cli, "submit", folder, "--org", "acme", "--project", "cli",
                          "--plan", "visit", "--watch"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "2 of 3 files submitted" in run.stdout and "SVG" in run.stderr
    for plan, pages in (("visit-photo-cmyk-park-sharp-jpg", 1),
                        ("visit-tiff-multipage-3p-g4-fax-pillow-tiff", 3)):
        [job] = client.list_jobs(jobs_pb2.PlanRef(org="acme", project="cli", plan=plan))
        assert job.state == jobs_pb2.JOB_STATE_COMPLETE and job.total_pages == pages


def test_the_record_keeps_useful_facts_and_gps_only_when_asked(corpus, client):
    path = corpus / "media" / "photo-12mp-arch-building-galaxy-s7-metadata-extractor-images.jpg"
    facts = {}
    for keep in (False, True):
        reply = client.submit(str(path), jobs_pb2.PlanRef(org="acme", project="media",
                                                           plan=f"facts-{keep}"),
                              jobs_pb2.JobOptions(keep_gps=keep, tile_size=1024))
        assert reply.job.pages[0].HasField("image"), "ingest records the facts"
        job = wait_ended(client, reply.job_id)
        assert job.state == jobs_pb2.JOB_STATE_COMPLETE, job.error
        facts[keep] = job.pages[0].image
    plain, with_gps = facts[False], facts[True]
    assert (plain.camera_make, plain.camera_model) == ("samsung", "SM-G935L")
    assert plain.captured_at == "2017-02-09T19:51:38"
    assert (plain.original_width, plain.original_height, plain.orientation) == (4032, 3024, 1)
    assert not plain.HasField("gps_latitude") and not plain.HasField("gps_longitude")
    # 48° 53' 33" N, 2° 14' 11" E (SOURCES.md: the EXIF GPS block)
    assert abs(with_gps.gps_latitude - 48.8925) < 1e-4
    assert abs(with_gps.gps_longitude - 2.236389) < 1e-4


def test_an_oriented_photo_records_what_was_applied(converted):
    photo = "photo-exif-orient6-stone-building-metadata-extractor-images.jpg"
    facts = converted[photo].pages[0].image
    assert (facts.original_width, facts.original_height, facts.orientation) == (2576, 1932, 6)
    heic = converted["heic-iphone7-building-exif-orient6-photoprism.heic"].pages[0].image
    assert (heic.original_width, heic.original_height, heic.orientation) == (4032, 3024, 6)
    assert heic.camera_make == "Apple"
