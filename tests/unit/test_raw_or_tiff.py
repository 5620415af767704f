"""RAW or TIFF: a TIFF-structured upload is told by its structure, never by
the maker it names (planzoom.media.tiff_layout, sniff; the inspection and
render worker's planzoom.engines.raw_or_tiff.effective_kind).

Files: the corpus (../shared/corpus/media), tests/fixtures/media (see its
SOURCES.md: a real Kodak DC50 KDC, ExifTool's Nikon D70 NEF), and files
made here from those, each saying how."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import pyvips
from hypothesis import given, settings
from hypothesis import strategies as st

from planzoom import engines
from planzoom.engines.base import ImageDamaged, Limits
from planzoom.engines.image import decoded, image_pages, normalised
from planzoom.engines.raw_or_tiff import effective_kind
from planzoom.media import (
    HEADER_WINDOW,
    MAX_TIFF_WALK_DIRECTORIES,
    MAX_TIFF_WALK_ENTRIES,
    RAW,
    TIFF,
    sniff,
    tiff_layout,
)
from planzoom.v1 import events_pb2

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "media"
KDC = FIXTURES / "raw-kdc-kodak-dc50-rawpy.kdc"
NEF = FIXTURES / "raw-nef-nikon-d70-metadata-stub-exiftool.nef"
PHOTO = "tiff-16bit-rgb-photo-libvips.tif"  # a real photo, 290 x 442, 16-bit RGB
DNG = "raw-dng-canon-eos6d-photoprism.dng"
LIMITS = Limits(max_pages=2000, max_image_pixels=200_000_000, max_image_side=65536,
                max_tiff_directories=1000)

# TIFF field types
BYTE, ASCII, SHORT, LONG, RATIONAL = 1, 2, 3, 4, 5


def tiff_bytes(entries: list[tuple[int, int, object]], pixels: bytes, order: str = "<") -> bytes:
    """A classic single-directory TIFF laid out as Photoshop writes one: the
    header, the first directory at byte 8, the values it points to, then
    the pixels. ``entries`` are (tag, type, value): an int, a list of ints
    or a str (ASCII); StripOffsets (273) is filled in."""
    codes = {BYTE: "B", SHORT: "H", LONG: "I"}
    entries = sorted(entries + [(273, LONG, 0)])
    values_at = 8 + 2 + 12 * len(entries) + 4
    blobs, fields = b"", []
    for tag, kind, value in entries:
        if kind == ASCII:
            raw, count = value.encode() + b"\0", len(value) + 1
        elif kind == RATIONAL:
            raw, count = struct.pack(order + "II", value, 1), 1
        else:
            items = value if isinstance(value, list) else [value]
            raw, count = struct.pack(order + codes[kind] * len(items), *items), len(items)
        fields.append([tag, kind, count, raw])
    for field in fields:  # values of over 4 bytes go after the directory
        if len(field[3]) > 4:
            offset = values_at + len(blobs)
            blobs += field[3] + b"\0" * (len(field[3]) % 2)
            field[3] = struct.pack(order + "I", offset)
    data_at = values_at + len(blobs)
    out = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "IH", 8, len(fields))
    for tag, kind, count, raw in fields:
        if tag == 273:
            raw = struct.pack(order + "I", data_at)
        out += struct.pack(order + "HHI", tag, kind, count) + raw.ljust(4, b"\0")
    return out + struct.pack(order + "I", 0) + blobs + pixels


def exported_tiff(corpus: Path, path: Path, make: str, extra=()) -> Path:
    """A 16-bit RGB TIFF as Photoshop writes one when a camera's photo is
    exported (directory and EXIF-style Make/Model at the start, pixels
    after, uncompressed), made from the real 16-bit photo of the corpus:
    its pixels as libvips reads them, with ``make`` as the camera maker."""
    photo = pyvips.Image.new_from_file(str(corpus / "media" / PHOTO))
    pixels = photo.numpy().astype("<u2")
    height, width, _ = pixels.shape
    entries = [(254, LONG, 0), (256, LONG, width), (257, LONG, height),
               (258, SHORT, [16, 16, 16]), (259, SHORT, 1), (262, SHORT, 2),
               (271, ASCII, make), (272, ASCII, "X-T3"), (274, SHORT, 1), (277, SHORT, 3),
               (278, LONG, height), (279, LONG, pixels.nbytes), (282, RATIONAL, 300),
               (283, RATIONAL, 300), (284, SHORT, 1), (296, SHORT, 2),
               (305, ASCII, "planzoom tests: a 16-bit RGB export"),
               (306, ASCII, "2024:05:14 10:21:07"), *extra]
    path.write_bytes(tiff_bytes(entries, pixels.tobytes()))
    return path


def head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEADER_WINDOW)


def ifd_entries(data: bytes, offset: int, order: str):
    """(position, tag) of each entry of the directory at ``offset``."""
    count = struct.unpack_from(order + "H", data, offset)[0]
    return [(offset + 2 + 12 * i, struct.unpack_from(order + "H", data, offset + 2 + 12 * i)[0])
            for i in range(count)]


def page_geometry(info) -> events_pb2.PageGeometry:
    (width, height), = info.pixel_sizes
    return events_pb2.PageGeometry(page=1, width_px=width, height_px=height, dpi=info.dpis[0],
                                   source_index=info.indexes[0])


# -- TIFFs exported from a camera's photo -------------------------------------------

@pytest.mark.parametrize("make", ["FUJIFILM", "NIKON CORPORATION", "SONY", "OLYMPUS IMAGING CORP.",
                                  "PENTAX Corporation", "Panasonic", "Leica Camera AG"])
def test_a_tiff_exported_from_a_cameras_photo_is_a_tiff(corpus, tmp_path, make):
    """Refused as "LibRaw cannot read this RAW file" when the maker's name
    in its first bytes made it a RAW."""
    path = exported_tiff(corpus, tmp_path / "export.tif", make)
    assert make.encode() in head(path)[:1024]
    kind = sniff(head(path))
    assert kind == TIFF and effective_kind(str(path), kind, LIMITS) == TIFF
    info = engines.inspect(str(path), kind.name, LIMITS)
    assert info.pixel_sizes == [(290, 442)]


def test_a_fujifilm_export_renders_as_the_photo_it_holds(corpus, tmp_path):
    path = exported_tiff(corpus, tmp_path / "export.tif", "FUJIFILM")
    info = engines.inspect(str(path), sniff(head(path)).name, LIMITS)
    raster = engines.rasterize(str(path), "tiff", page_geometry(info), str(tmp_path / "r.zst"),
                               1 << 20)
    assert (raster.width_px, raster.height_px, raster.bands) == (290, 442, 3)
    page = image_pages(str(path), TIFF, LIMITS)[0]
    got = decoded(str(path), TIFF, page).numpy()
    want = normalised(pyvips.Image.new_from_file(str(corpus / "media" / PHOTO))).numpy()
    assert np.array_equal(got, want)


def test_a_tiff_with_a_stray_cfa_tag_is_a_tiff_when_libraw_refuses_it(corpus, tmp_path):
    """Sniffed RAW (TIFF/EP's CFA pattern tags in its one directory), but
    LibRaw refuses it and libvips reads it as an image as large as its
    "sensor data": a TIFF, rendered, not refused."""
    path = exported_tiff(corpus, tmp_path / "export.tif", "FUJIFILM",
                         extra=[(33421, SHORT, [2, 2]), (33422, BYTE, [0, 1, 1, 2])])
    kind = sniff(head(path))
    assert kind == RAW
    assert effective_kind(str(path), kind, LIMITS) == TIFF
    info = engines.inspect(str(path), kind.name, LIMITS)
    assert info.pixel_sizes == [(290, 442)] and info.kind == "tiff"


# -- RAWs on a TIFF structure, of makers on no list ----------------------------------

def test_a_kodak_kdc_is_a_raw_at_the_size_libraw_develops():
    """A real Kodak DC50 KDC: its first directory is a 96 x 64 thumbnail,
    its SubIFD the sensor data (CFA, Kodak's compression); it was published
    as the thumbnail when Kodak was on no list."""
    kind = sniff(head(KDC))
    assert kind == RAW
    assert tiff_layout(head(KDC)).image_pixels == 96 * 64
    assert engines.inspect(str(KDC), kind.name, LIMITS).pixel_sizes == [(768, 512)]
    # had ingest's sniff said TIFF, inspection still finds the RAW
    assert engines.inspect(str(KDC), "tiff", LIMITS).pixel_sizes == [(768, 512)]


def test_a_kodak_kdc_renders_through_libraw(tmp_path):
    info = engines.inspect(str(KDC), "raw", LIMITS)
    for sniffed in ("raw", "tiff"):
        raster = engines.rasterize(str(KDC), sniffed, page_geometry(info),
                                   str(tmp_path / f"{sniffed}.zst"), 1 << 20)
        assert (raster.width_px, raster.height_px, raster.bands) == (768, 512, 3)


def test_a_raw_whose_structure_shows_no_sensor_data_is_decided_by_libraw(tmp_path):
    """The KDC with its SubIFD made to look ordinary (photometric RGB,
    uncompressed, CFA tags renumbered to private ones): nothing in its
    structure says RAW, but it names a maker and its only image is a
    thumbnail, so the worker asks LibRaw, which knows the camera and
    unpacks 768 x 512."""
    data = bytearray(KDC.read_bytes())
    (pointer,) = [position for position, tag in ifd_entries(data, 8, ">") if tag == 330]
    subifd = struct.unpack_from(">I", data, pointer + 8)[0]  # one SubIFD: its offset inline
    for position, tag in ifd_entries(data, subifd, ">"):
        if tag == 262:
            struct.pack_into(">H", data, position + 8, 2)
        elif tag == 259:
            struct.pack_into(">H", data, position + 8, 1)
        elif tag in (33421, 33422):
            struct.pack_into(">H", data, position, tag + 30000)
    path = tmp_path / "hidden.kdc"
    path.write_bytes(bytes(data))
    layout = tiff_layout(bytes(data))
    assert not layout.raw and layout.could_hide_raw
    kind = sniff(head(path))
    assert kind == TIFF and effective_kind(str(path), kind, LIMITS) == RAW
    info = engines.inspect(str(path), kind.name, LIMITS)
    # the job records the kind found (ingest stores the source as a RAW)
    assert info.pixel_sizes == [(768, 512)] and info.kind == "raw"


def test_a_dng_without_its_dngversion_is_refused_not_shown_as_its_preview(corpus, tmp_path):
    """The corpus DNG with its DNGVersion tag renumbered: only its CFA
    SubIFD (past the first 64 KiB, after the preview) says RAW. LibRaw
    cannot read it without the tag, so it is refused as a RAW; it was
    published as its 256 x 171 preview."""
    data = bytearray((corpus / "media" / DNG).read_bytes())
    for position, tag in ifd_entries(data, 8, "<"):
        if tag == 50706:
            struct.pack_into("<H", data, position, 50000)
    path = tmp_path / "no-dngversion.dng"
    path.write_bytes(bytes(data))
    kind = sniff(head(path))
    assert kind == TIFF  # the header window holds only the preview
    assert effective_kind(str(path), kind, LIMITS) == RAW
    with pytest.raises(ImageDamaged, match="LibRaw cannot read this RAW file"):
        engines.inspect(str(path), kind.name, LIMITS)


def test_a_nefs_subifds_past_the_first_kilobyte_are_in_the_header_window():
    """ExifTool's Nikon D70 NEF: its first directory is a 160 x 106
    thumbnail; its SubIFDs start past byte 1024."""
    assert not tiff_layout(head(NEF)[:1024]).raw
    assert tiff_layout(head(NEF)).raw and sniff(head(NEF)) == RAW


@pytest.mark.parametrize("name", [
    "tiff-16bit-rgb-photo-libvips.tif", "tiff-bigtiff-hopper-pillow.tif",
    "tiff-flatbed-scan-epson-v800-metadata-extractor-images.tiff",
    "tiff-geotiff-landsat-rgb-rasterio.tif", "tiff-multipage-3p-g4-fax-pillow.tiff",
    "tiff-scanned-document-1bit-ccitt-g4-pillow.tif",
    "tiff-tiled-cog-overviews-aerial-rasterio.tif", DNG,
    "raw-cr2-canon-350d-metadata-stub-exiftool.cr2"])
def test_the_corpus_tiffs_and_raws_keep_their_kind(corpus, name):
    path = corpus / "media" / name
    expected = RAW if name.startswith("raw-") else TIFF
    kind = sniff(head(path))
    assert kind == expected and effective_kind(str(path), kind, LIMITS) == expected


@pytest.mark.parametrize("magic", [
    b"IIRO\x08\x00\x00\x00", b"IIRS\x08\x00\x00\x00", b"MMOR\x00\x00\x00\x08",  # Olympus ORF
    b"IIU\x00\x08\x00\x00\x00",  # Panasonic RW2
    b"II*\x00\x08\x0a\x00\x00IIIICwaR",  # Phase One IIQ
    b"FUJIFILMCCD-RAW 0201FF383501",  # Fujifilm RAF
])
def test_raw_headers_are_raw(magic):
    assert sniff(magic + b"\0" * 64) == RAW


# -- hostile directories ------------------------------------------------------------

class Counted:
    """Bytes that count how often they are read."""

    def __init__(self, data: bytes):
        self.data, self.reads = data, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, key):
        self.reads += 1
        return self.data[key]


def _entry(order: str, tag: int, kind: int, count: int, value: int) -> bytes:
    return struct.pack(order + "HHII", tag, kind, count, value)


def _chain(order: str, directories: int) -> bytes:
    """``directories`` one-entry directories, each pointing to the next."""
    out = b"II*\x00" + struct.pack(order + "I", 8)
    for i in range(directories):
        out += struct.pack(order + "H", 1) + _entry(order, 256, LONG, 1, 8)
        out += struct.pack(order + "I", 8 + 18 * (i + 1) if i + 1 < directories else 0)
    return out


HOSTILE = {
    "first directory past the end": b"II*\x00\xff\xff\xff\xff",
    "first directory inside the header": b"II*\x00\x04\x00\x00\x00" + b"\0" * 32,
    "directory pointing to itself": b"II*\x00\x08\x00\x00\x00\x01\x00"
    + _entry("<", 271, ASCII, 4, 0x41424344) + b"\x08\x00\x00\x00",
    "65535 entries in 20 bytes": b"II*\x00\x08\x00\x00\x00\xff\xff" + b"\x01" * 20,
    "SubIFDs: 2**32 - 1 of them, out of range": b"II*\x00\x08\x00\x00\x00\x01\x00"
    + _entry("<", 330, LONG, 0xFFFFFFFF, 0xFFFFFFF0) + b"\0\0\0\0",
    "SubIFDs: a million, in range, pointing back": b"II*\x00\x08\x00\x00\x00\x01\x00"
    + _entry("<", 330, LONG, 1_000_000, 8) + b"\0\0\0\0" + b"\x08\x00\x00\x00" * 64,
    "SubIFD pointing to itself, big-endian": b"MM\x00*\x00\x00\x00\x08\x00\x01"
    + _entry(">", 330, LONG, 1, 8) + b"\0\0\0\0",
    "BitsPerSample count 2**32 - 1": b"II*\x00\x08\x00\x00\x00\x02\x00"
    + _entry("<", 258, SHORT, 0xFFFFFFFF, 0x7FFFFFFF) + _entry("<", 271, ASCII, 0xFFFFFFFF, 1)
    + b"\0\0\0\0",
    "entry cut short": b"II*\x00\x08\x00\x00\x00\x03\x00" + _entry("<", 256, LONG, 1, 9)[:7],
    "10,000 directories in a chain": _chain("<", 10_000),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_the_directory_walk_is_bounded_and_never_raises(tmp_path, name):
    data = Counted(HOSTILE[name])
    layout = tiff_layout(data)
    assert layout is not None and not layout.raw
    assert not layout.complete or name.startswith("BitsPerSample")  # a value, not a directory
    # reads: a directory's entry count and three fields an entry, a few values, its next
    assert data.reads <= MAX_TIFF_WALK_DIRECTORIES * (3 * MAX_TIFF_WALK_ENTRIES + 64)
    assert sniff(HOSTILE[name][:HEADER_WINDOW]) in (TIFF, RAW)
    path = tmp_path / "hostile.tif"
    path.write_bytes(HOSTILE[name])
    assert effective_kind(str(path), TIFF, LIMITS) in (TIFF, RAW)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"II*\x00", b"MM\x00*"]), st.binary(max_size=4096))
def test_any_tiff_header_gives_a_layout(magic, rest):
    layout = tiff_layout(magic + rest)
    assert layout is not None
    assert sniff(magic + rest) in (TIFF, RAW)
