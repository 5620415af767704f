"""What kind of file an upload is, from its first bytes (never its name).

planzoom takes PDF plan sets, still images: JPEG, PNG, WebP, GIF (its
first frame), TIFF (each page a page; BigTIFF, tiled, GeoTIFF, 1- and
16-bit), HEIC/HEIF and AVIF, and camera RAW (DNG, CR2, NEF, ARW and the
other formats LibRaw reads); and videos: MP4/M4V, MOV, MKV, WebM, AVI
(Matroska's EBML header, RIFF ``AVI ``). Signatures: ISO 32000-1 annex H.3 (PDF), JFIF /
ISO 10918-1 (JPEG), PNG spec 5.2, RIFF WebP container, GIF89a, TIFF 6.0
and BigTIFF headers, ISO/IEC 14496-12 ``ftyp`` brands (HEIF, AVIF), the
Canon CR2 header (``CR`` at byte 8) and the DNG spec's DNGVersion tag
(50706) in a TIFF's first directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from planzoom.errors import InvalidInput

#: The PDF header may start anywhere in the first 1024 bytes (ISO 32000-1,
#: annex H.3, implementation note 13), as Acrobat and PDFium accept.
PDF_MAGIC = b"%PDF-"
#: Bytes read to recognise a file.
HEADER_WINDOW = 1024


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
#: RAW formats on a TIFF structure, by the maker in their first bytes.
_RAW_MAKERS = (b"NIKON", b"SONY", b"PENTAX", b"OLYMPUS", b"FUJIFILM", b"Panasonic", b"Leica")

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
    """A TIFF-structured file: RAW if it is a Canon CR2, has the DNGVersion
    tag, or names a RAW camera maker in its first bytes; else a TIFF image."""
    if head[8:10] == b"CR" or _dng_in_first_ifd(head) or any(m in head for m in _RAW_MAKERS):
        return RAW
    return TIFF


def _dng_in_first_ifd(head: bytes) -> bool:
    """True if the first IFD (classic TIFF) has the DNGVersion tag."""
    order = "little" if head[:2] == b"II" else "big"
    if head[2:4] not in (b"*\x00", b"\x00*"):
        return False  # BigTIFF: never DNG
    offset = int.from_bytes(head[4:8], order)
    if offset + 2 > len(head):
        return False
    count = int.from_bytes(head[offset:offset + 2], order)
    for i in range(min(count, 512)):
        entry = offset + 2 + 12 * i
        if entry + 2 > len(head):
            break
        if int.from_bytes(head[entry:entry + 2], order) == 50706:
            return True
    return False


def describe(head: bytes) -> str:
    """What ``head`` looks like, for a message about a file refused."""
    stripped = head.lstrip()[:256].lower()
    if stripped.startswith((b"<?xml", b"<svg")) and b"<svg" in head[:HEADER_WINDOW].lower():
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
    """The kind of a file from its first bytes (up to HEADER_WINDOW).
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
    if head.startswith(b"IIRO") or head.startswith(b"IIU\x00"):  # Olympus ORF, Panasonic RW2
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
    if PDF_MAGIC in head[:HEADER_WINDOW]:
        return PDF
    raise Unsupported(describe(head))
