"""Hostile PDFs made on the fly (nothing here is from the corpus): small
files that cost a parser far more than their size."""

from __future__ import annotations

import zlib


def _pdf(objects: list[bytes]) -> tuple[bytes, list[int]]:
    """The header and ``objects`` (numbered from 1, the first the catalog)
    of a PDF, and each object's offset; the caller adds the cross-reference
    section."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for i, body in enumerate(objects):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n".encode() + body + b"\nendobj\n"
    return bytes(out), offsets


def xref_bomb(entries: int = 24_000_000) -> bytes:
    """A valid one-page PDF whose cross-reference stream declares
    ``entries`` entries, deflated to a few hundred bytes per million: PDFium
    allocates and walks every one when it opens the file (24 million: a
    164 KB file that takes seconds and over a gigabyte to open)."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"]
    body, offsets = _pdf(objs)
    xref_at = len(body)
    rows = bytearray(b"\x00" + (0).to_bytes(4, "big") + (65535).to_bytes(2, "big"))
    for offset in [*offsets, xref_at]:
        rows += b"\x01" + offset.to_bytes(4, "big") + (0).to_bytes(2, "big")
    rows += bytes(7 * (entries - len(objs) - 2))  # free entries
    data = zlib.compress(bytes(rows), 9)
    return (body + (f"{len(objs) + 1} 0 obj\n<< /Type /XRef /Size {entries} /W [1 4 2] "
                    f"/Root 1 0 R /Length {len(data)} /Filter /FlateDecode >>\nstream\n").encode()
            + data + b"\nendstream\nendobj\n" + f"startxref\n{xref_at}\n%%EOF\n".encode())


def huge_pages(pages: int, width_pt: float = 14400, height_pt: float = 14400) -> bytes:
    """``pages`` empty pages of ``width_pt x height_pt`` points (14400 pt =
    200 in, the largest page PDF allows): a few KB that ask for hundreds of
    gigapixels at a high DPI."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            f"<< /Type /Pages /Kids [{' '.join(f'{3 + i} 0 R' for i in range(pages))}] "
            f"/Count {pages} /MediaBox [0 0 {width_pt:g} {height_pt:g}] >>".encode()]
    objs += [b"<< /Type /Page /Parent 2 0 R >>"] * pages
    body, offsets = _pdf(objs)
    table = f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    table += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    return (body + table + f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n"
            f"{len(body)}\n%%EOF\n".encode())
