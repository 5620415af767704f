"""Which OCR engine reads sheet numbers off scanned and outlined title
blocks: ``python -m bench.ocr LABELS.json [...] --pdfs DIR [...]``.

For every labelled page whose title block has no text layer
(``text_layer`` "no" or "outlined") and that has a sheet number, the
regions planzoom reads by OCR (:data:`~planzoom.engines.text.OCR_REGIONS`,
drawn as :func:`~planzoom.engines.text.ocr_words` draws them) are read
upright and turned both ways by Tesseract (``--psm 11``, as planzoom runs
it) and, when the ``rapidocr_onnxruntime`` package is installed, by
RapidOCR (ONNX models shipped in its wheel; not a planzoom dependency:
``pip install --no-deps rapidocr_onnxruntime onnxruntime pyclipper
shapely`` beside planzoom's OpenCV). A page counts when the labelled
number is in what the engine read (compared as
:func:`~planzoom.engines.titleblock.number_key` does, all of the page's
text run together): what each engine gives the sheet reader to pick from,
not what planzoom picks. Prints pages found and seconds per region read,
side by side. ``--dirs`` pairs each LABELS file with its PDF directory.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pypdfium2 as pdfium

from planzoom.engines.text import OCR_DPI, OCR_MAX_PIXELS, OCR_REGIONS
from planzoom.engines.titleblock import number_key

TURNS = (0, 90, 270)


def regions(labels: list[dict], pdf_dir: str):
    """(label row, [greyscale PIL images of its OCR regions]) per page."""
    for row in labels:
        if row.get("text_layer", "yes") == "yes" or not row["sheet_number"]:
            continue
        page = pdfium.PdfDocument(os.path.join(pdf_dir, row["file"]))[row["page"] - 1]
        width_pt, height_pt = page.get_size()
        images = []
        for fx0, fy0, fx1, fy1 in OCR_REGIONS:
            area = (fx1 - fx0) * width_pt * (fy1 - fy0) * height_pt
            dpi = min(OCR_DPI, 72.0 * (OCR_MAX_PIXELS / max(area, 1.0)) ** 0.5)
            images.append(page.render(scale=dpi / 72.0, grayscale=True, crop=(
                fx0 * width_pt, (1 - fy1) * height_pt, (1 - fx1) * width_pt,
                fy0 * height_pt)).to_pil())
        yield row, images


def tesseract():
    import shutil

    import pytesseract

    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    pytesseract.pytesseract.tesseract_cmd = shutil.which("tesseract")
    return lambda image: pytesseract.image_to_string(image, config="--psm 11", timeout=120)


def rapidocr():
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError:
        return None
    engine = RapidOCR()

    def read(image) -> str:
        found, _ = engine(np.asarray(image.convert("RGB")))
        return " ".join(r[1] for r in found or ())
    return read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labels", nargs="+")
    ap.add_argument("--pdfs", nargs="+", required=True,
                    help="the PDFs' directory for each LABELS file, in order")
    args = ap.parse_args()
    engines = {"tesseract": tesseract(), "rapidocr": rapidocr()}
    engines = {k: v for k, v in engines.items() if v is not None}
    found = {k: 0 for k in engines}
    seconds = {k: 0.0 for k in engines}
    pages = reads = 0
    for labels, pdf_dir in zip(args.labels, args.pdfs, strict=True):
        for row, images in regions(json.load(open(labels)), pdf_dir):
            pages += 1
            want = number_key(row["sheet_number"])
            marks = []
            for name, read in engines.items():
                text = []
                for image in images:
                    for turn in TURNS:
                        t0 = time.perf_counter()
                        text.append(read(image.rotate(-turn % 360, expand=True)
                                         if turn else image))
                        seconds[name] += time.perf_counter() - t0
                hit = want in number_key(" ".join(text))
                found[name] += hit
                marks.append(f"{name} {'yes' if hit else 'no ':3}")
            reads += len(images) * len(TURNS)
            print(f"{row['file'][:44]:44} p{row['page']:<3} {row['sheet_number']!r:26} "
                  + "  ".join(marks), flush=True)
    print(f"\n{pages} scanned or outlined pages, {reads} region readings each engine")
    print(f"{'engine':12} {'number read':>14} {'s per region read':>18}")
    for name in engines:
        print(f"{name:12} {found[name]:>6} of {pages:<5} {seconds[name] / max(reads, 1):>18.2f}")


if __name__ == "__main__":
    main()
