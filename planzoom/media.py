"""What kind of file an upload is, from its first bytes (never its name).

planzoom takes PDF plan sets, still images: JPEG, PNG, WebP, GIF (its
first frame), TIFF (each page a page; BigTIFF, tiled, GeoTIFF, 1- and
16-bit), HEIC/HEIF and AVIF, and camera RAW (DNG, CR2, NEF, ARW and the
other formats LibRaw reads); and videos: MP4/M4V, MOV, MKV, WebM, AVI
(Matroska's EBML header, RIFF ``AVI ``). Signatures: ISO 32000-1 annex H.3 (PDF), JFIF /
ISO 10918-1 (JPEG), PNG spec 5.2, RIFF WebP container, GIF89a, TIFF 6.0
and BigTIFF headers, ISO/IEC 14496-12 ``ftyp`` brands (HEIF, AVIF), the
Canon CR2 header (``CR`` at byte 8), Phase One's (``IIII`` at byte 8), the
Olympus ORF, Panasonic RW2 and Fujifilm RAF headers, and, in a TIFF, the
structure of camera RAW (:func:`tiff_layout`).

A TIFF is told from a RAW on a TIFF structure by that structure, never by
the maker named in it (a photo exported as a TIFF from a Fujifilm or Nikon
RAW names its camera too): the DNG spec's DNGVersion tag (50706) in the
first directory, or a directory holding sensor data, whose
PhotometricInterpretation is a colour filter array (32803, TIFF/EP), linear
raw (34892, DNG) or sequential CFA (32892), whose compression is one only
RAW formats use, or that carries TIFF/EP's CFA pattern tags (33421, 33422).
The header shows the first directories only; the inspection worker reads the
whole file, and where the structure could hide a RAW it cannot show, asks
LibRaw (:func:`planzoom.engines.raw_or_tiff.effective_kind`).
"""

from __future__ import annotations

from dataclasses import dataclass

from planzoom.errors import InvalidInput

#: The PDF header may start anywhere in the first 1024 bytes (ISO 32000-1,
#: annex H.3, implementation note 13), as Acrobat and PDFium accept.
PDF_MAGIC = b"%PDF-"
PDF_WINDOW = 1024
#: Bytes read to recognise a file: enough for the directories a TIFF-based
#: RAW keeps near its start (a NEF's SubIFDs follow its first directory's
#: values and XMP packet, often past the first kilobyte).
HEADER_WINDOW = 64 * 1024


@dataclass(frozen=True)
class Kind:
    """A kind of input: its name (in job records), the suffix and content
    type of its stored source, and whether it is camera RAW (decoded with
    LibRaw) or a PDF (rendered with PDFium); anything else is an image
    libvips decodes."""

    name: str
    suffix: str
    content_type: str

    @property
    def is_pdf(self) -> bool:
        return self.name == "pdf"

    @property
    def is_raw(self) -> bool:
        return self.name == "raw"

    @property
    def is_video(self) -> bool:
        return self.name in VIDEO_KINDS


PDF = Kind("pdf", "pdf", "application/pdf")
JPEG = Kind("jpeg", "jpg", "image/jpeg")
PNG = Kind("png", "png", "image/png")
WEBP = Kind("webp", "webp", "image/webp")
GIF = Kind("gif", "gif", "image/gif")
TIFF = Kind("tiff", "tif", "image/tiff")
HEIF = Kind("heif", "heic", "image/heif")
AVIF = Kind("avif", "avif", "image/avif")
RAW = Kind("raw", "raw", "application/octet-stream")
MP4 = Kind("mp4", "mp4", "video/mp4")
MOV = Kind("mov", "mov", "video/quicktime")
MKV = Kind("mkv", "mkv", "video/x-matroska")
WEBM = Kind("webm", "webm", "video/webm")
AVI = Kind("avi", "avi", "video/x-msvideo")
VIDEO_KINDS = frozenset({"mp4", "mov", "mkv", "webm", "avi"})
KINDS = {k.name: k for k in (PDF, JPEG, PNG, WEBP, GIF, TIFF, HEIF, AVIF, RAW, MP4, MOV, MKV,
                             WEBM, AVI)}

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_AUDIO_ONLY_BRANDS = {b"M4A ", b"M4B ", b"M4P "}
_VIDEO_BRANDS = {b"isom", b"iso2", b"mp41", b"mp42", b"avc1", b"M4V ", b"qt  "}

_NOT_TAKEN = (
    (b"MZ", "a Windows executable"),
    (b"\x7fELF", "a Linux executable (ELF)"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office document"),
    (b"RIFF", "a RIFF file that is not an AVI video (WAV audio?)"),
    (b"8BPS", "a Photoshop document"),
)


class Unsupported(InvalidInput):
    """The bytes are not a kind planzoom takes; the message says what they
    look like."""

    reason = "UNSUPPORTED_FILE"

    def __init__(self, what: str):
        super().__init__(f"the file is {what}, which planzoom does not take; upload a PDF plan "
                         "set, a photo, scan or RAW image (JPEG, PNG, WebP, GIF, TIFF, "
                         "HEIC, AVIF, DNG, CR2, NEF, ARW) or a video (MP4, MOV, MKV, WebM, AVI)")


def _tiff_kind(head: bytes) -> Kind:
    """A TIFF-structured file: RAW if it has a Canon CR2 header or RAW
    structure in the directories its first bytes hold (:func:`tiff_layout`),
    else a TIFF image (which the inspection worker may still find to be a
    RAW, reading the whole file)."""
    if raw_magic(head):
        return RAW
    layout = tiff_layout(head)
    return RAW if layout is not None and layout.raw else TIFF


# -- TIFF structure ------------------------------------------------------------------

#: The Canon CR2 header: a little-endian TIFF with "CR" and version 2 at byte 8.
_CR2_MAGIC = b"CR\x02"
#: Phase One's raw header (IIQ), where LibRaw looks for it.
_PHASE_ONE_MAGICS = (b"IIII", b"MMMM")
#: Other RAW headers: Olympus ORF (IIRO, IIRS, MMOR), Panasonic/Leica RW2 (IIU),
#: Fujifilm RAF.
_RAW_MAGICS = (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00", b"FUJIFILMCCD-RAW")
#: TIFF tags read (TIFF 6.0, TIFF/EP, DNG 1.7).
_NEW_SUBFILE_TYPE, _WIDTH, _HEIGHT, _BITS, _COMPRESSION = 254, 256, 257, 258, 259
_PHOTOMETRIC, _MAKE, _SUB_IFDS, _DNG_VERSION = 262, 271, 330, 50706
#: TIFF/EP's CFARepeatPatternDim and CFAPattern: a directory of sensor data.
_CFA_TAGS = frozenset({33421, 33422})
#: PhotometricInterpretation of sensor data: colour filter array (TIFF/EP),
#: sequential colour filter (Sony ARQ), linear raw (DNG).
_RAW_PHOTOMETRICS = frozenset({32803, 32892, 34892})
#: Compression codes only camera RAW formats use (ExifTool's table of TIFF
#: compressions; LibRaw's decoders): Kodak 262, Sony ARW (32767), packed RAW
#: (32769: Epson, Nikon, Samsung), Samsung SRW (32770, 32772), Kodak KDC
#: (32867), Nikon NEF (34713), Panasonic RAW 1-4 (34316, 34826, 34828,
#: 34830), Kodak DCR (65000), Pentax PEF (65535). Not 32773, PackBits, an
#: ordinary TIFF compression.
_RAW_COMPRESSIONS = frozenset({262, 32767, 32769, 32770, 32772, 32867, 34713, 34316, 34826,
                               34828, 34830, 65000, 65535})
#: Compression codes and photometric interpretations of ordinary TIFF images
#: (TIFF 6.0 and the codecs libtiff reads); anything else in a file naming a
#: camera maker could be a RAW LibRaw knows and the structure does not show.
_IMAGE_COMPRESSIONS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 32773, 32946, 34661, 34676,
                                 34677, 34712, 34887, 34925, 34926, 34927, 34933, 50000,
                                 50001, 50002})
_IMAGE_PHOTOMETRICS = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 32844, 32845})
_IMAGE_BITS = frozenset({1, 2, 4, 8, 16, 32, 64})
#: Bounds of the walk over a TIFF's directories (the bytes are hostile):
#: directories read in all, entries read in one, SubIFDs followed from one.
MAX_TIFF_WALK_DIRECTORIES = 64
MAX_TIFF_WALK_ENTRIES = 1024
MAX_TIFF_WALK_SUB_IFDS = 16
#: The largest image on the directory chain of a TIFF naming a camera maker
#: that is still taken for a photo without asking LibRaw (a long side
#: under this is a preview or thumbnail size, as a RAW's first directory is).
SMALL_IMAGE_SIDE = 1024
_TYPE_SIZES = {1: 1, 3: 2, 4: 4, 13: 4}  # BYTE, SHORT, LONG, IFD


@dataclass(frozen=True)
class TiffLayout:
    """What a classic TIFF's directories show, as far as the bytes read
    reach (:func:`tiff_layout`).

    - ``raw``: the first directory has DNGVersion, or a directory holds
      sensor data;
    - ``raw_pixels``: the largest directory of sensor data, its width x
      height (0 if none gave its size);
    - ``image_pixels``, ``image_side``: the largest ordinary image on the
      chain of directories (what libvips shows as pages), its pixels and
      longest side; ``image_reduced``: that image is marked a reduced-
      resolution copy (NewSubfileType bit 0);
    - ``make``: the first directory names a maker (tag 271);
    - ``unusual``: a directory has a compression, photometric
      interpretation or bit depth no ordinary TIFF image has;
    - ``complete``: every directory pointed to was read whole (not out of
      the bytes, cut short, looping or past the walk's bounds).
    """

    raw: bool = False
    raw_pixels: int = 0
    image_pixels: int = 0
    image_side: int = 0
    image_reduced: bool = False
    make: bool = False
    unusual: bool = False
    complete: bool = True

    @property
    def could_hide_raw(self) -> bool:
        """A TIFF with no RAW structure in sight that could still be a RAW:
        it names a maker and has no full-size ordinary image (only a small
        or reduced-resolution one), or a directory of a kind no ordinary
        image has, or directories the walk could not read."""
        if self.raw or not self.make:
            return False
        return (self.image_side < SMALL_IMAGE_SIDE or self.image_reduced or self.unusual
                or not self.complete)


def raw_magic(head: bytes) -> bool:
    """True for the headers only RAW formats have: Canon CR2, Phase One IIQ
    (its raw header, ``IIII`` or ``MMMM``, right after a TIFF header),
    Olympus ORF, Panasonic/Leica RW2, Fujifilm RAF."""
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return head[8:11] == _CR2_MAGIC or head[8:12] in _PHASE_ONE_MAGICS
    return head.startswith(_RAW_MAGICS)


def tiff_layout(data) -> TiffLayout | None:
    """The :class:`TiffLayout` of a classic TIFF from ``data`` (its first
    bytes, or the whole file as bytes or an mmap), or None if ``data`` is
    not a classic TIFF (BigTIFF, ORF and RW2 are not walked).

    A bounded walk over hostile bytes: the chain of directories from the
    first and the SubIFDs (tag 330) of each, at most
    MAX_TIFF_WALK_DIRECTORIES directories, MAX_TIFF_WALK_ENTRIES entries and
    MAX_TIFF_WALK_SUB_IFDS SubIFDs a directory, each directory read once
    (loops end), every offset checked against ``data``; never raises for
    any bytes."""
    head = bytes(data[:8])
    if head[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order = "little" if head[:2] == b"II" else "big"
    size = len(data)

    def number(at: int, width: int) -> int | None:
        if at < 0 or at + width > size:
            return None
        return int.from_bytes(data[at:at + width], order)

    facts = {"raw": False, "raw_pixels": 0, "image_pixels": 0, "image_side": 0,
             "image_reduced": False, "make": False, "unusual": False, "complete": True}
    first_directory = number(4, 4) or 0
    queue: list[tuple[int, bool]] = [(first_directory, True)]  # (offset, on the chain)
    seen: set[int] = set()
    while queue:
        offset, chained = queue.pop(0)
        if offset == 0:
            continue
        if offset in seen or len(seen) >= MAX_TIFF_WALK_DIRECTORIES:
            facts["complete"] = False  # a loop, or more than the walk reads
            continue
        seen.add(offset)
        count = number(offset, 2)
        if offset < 8 or count is None:
            facts["complete"] = False
            continue
        if count > MAX_TIFF_WALK_ENTRIES or offset + 2 + 12 * count + 4 > size:
            facts["complete"] = False
        tags: dict[int, tuple[int, int, int]] = {}  # tag -> (type, count, value field)
        for i in range(min(count, MAX_TIFF_WALK_ENTRIES)):
            entry = offset + 2 + 12 * i
            if entry + 12 > size:
                break
            tags[number(entry, 2)] = (number(entry + 2, 2), number(entry + 4, 4), entry + 8)
        first = {tag: (_values(number, tags, tag) or [None])[0] for tag in (
            _NEW_SUBFILE_TYPE, _WIDTH, _HEIGHT, _BITS, _COMPRESSION, _PHOTOMETRIC)}
        width, height = first[_WIDTH] or 0, first[_HEIGHT] or 0
        sensor = (first[_PHOTOMETRIC] in _RAW_PHOTOMETRICS
                  or first[_COMPRESSION] in _RAW_COMPRESSIONS)
        if offset == first_directory:
            facts["make"] = _MAKE in tags
            facts["raw"] = _DNG_VERSION in tags  # a DNG's first directory may be its preview
        if sensor or _CFA_TAGS & tags.keys():
            facts["raw"] = True
            facts["raw_pixels"] = max(facts["raw_pixels"], width * height)
        if not sensor:  # CFA tags on an RGB image: both, LibRaw decides (effective_kind)
            if ((first[_COMPRESSION] or 1) not in _IMAGE_COMPRESSIONS
                    or (first[_PHOTOMETRIC] or 0) not in _IMAGE_PHOTOMETRICS
                    or (first[_BITS] or 1) not in _IMAGE_BITS):
                facts["unusual"] = True
            if chained and width * height > facts["image_pixels"]:
                facts["image_pixels"], facts["image_side"] = width * height, max(width, height)
                facts["image_reduced"] = bool((first[_NEW_SUBFILE_TYPE] or 0) & 1)
        subs = _values(number, tags, _SUB_IFDS, MAX_TIFF_WALK_SUB_IFDS + 1)
        declared = tags.get(_SUB_IFDS, (0, 0, 0))[1]
        if len(subs) > MAX_TIFF_WALK_SUB_IFDS or len(subs) < min(declared,
                                                                 MAX_TIFF_WALK_SUB_IFDS):
            facts["complete"] = False  # more than the walk follows, or out of the bytes
        queue.extend((sub, False) for sub in subs[:MAX_TIFF_WALK_SUB_IFDS])
        if chained:
            following = number(offset + 2 + 12 * count, 4)
            if following is None:
                facts["complete"] = False
            else:
                queue.append((following, True))
    return TiffLayout(**facts)


def _values(number, tags: dict, tag: int, limit: int = 1) -> list[int]:
    """The first ``limit`` values of ``tag`` (a BYTE, SHORT, LONG or IFD
    entry) of a directory's ``tags``, as far as ``number`` can read them."""
    kind, n, field = tags.get(tag, (0, 0, 0))
    width = _TYPE_SIZES.get(kind)
    if not width or not n:
        return []
    at = field if width * n <= 4 else number(field, 4)
    if at is None:
        return []
    out = (number(at + width * k, width) for k in range(min(n, limit)))
    return [v for v in out if v is not None]


def describe(head: bytes) -> str:
    """What ``head`` looks like, for a message about a file refused."""
    stripped = head.lstrip()[:256].lower()
    if stripped.startswith((b"<?xml", b"<svg")) and b"<svg" in head[:PDF_WINDOW].lower():
        return "an SVG drawing (vector XML, which may carry scripts)"
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if head[4:8] == b"ftyp":
        return f"an ISO media file of brand {head[8:12].decode('latin-1')!r}"
    for magic, what in _NOT_TAKEN:
        if head.startswith(magic):
            return what
    return f"a file that starts with bytes {head[:8].hex(' ')}"


def sniff(head: bytes) -> Kind:
    """The kind of a file from its first bytes (up to HEADER_WINDOW; a PDF's
    header counts in the first PDF_WINDOW).
    Raises Unsupported, naming what was detected, for anything else."""
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return _tiff_kind(head)
    if raw_magic(head):  # Olympus ORF, Panasonic RW2, Fujifilm RAF
        return RAW
    if head[4:8] == b"ftyp":
        brands = {head[8:12]} | {head[i:i + 4] for i in range(16, min(len(head), 64), 4)}
        if brands & _AVIF_BRANDS:
            return AVIF
        if brands & _HEIF_BRANDS:
            return HEIF
        if b"crx " in brands:
            return RAW  # Canon CR3
        if head[8:12] == b"qt  ":
            return MOV
        if brands & _AUDIO_ONLY_BRANDS and not brands & _VIDEO_BRANDS:
            raise Unsupported("an audio file (MPEG-4 audio)")
        return MP4
    if head.startswith(b"\x1aE\xdf\xa3"):
        return WEBM if b"webm" in head[:64] else MKV
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return AVI
    if PDF_MAGIC in head[:PDF_WINDOW]:
        return PDF
    raise Unsupported(describe(head))
