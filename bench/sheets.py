"""Sheet identity against what a person reads: ``python -m bench.sheets
[LABELS.json …] [--pdfs DIR] [--fields FIELDS.json] [--show]``.

LABELS is a list of ``{"file", "page", "sheet_number", "sheet_title",
"text_layer", "template", "references"}`` objects (the corpus's
``sheets.json`` by default, its PDFs beside it). Prints, per template and
in all: sheet numbers right (exact after collapsing spaces and dash
forms), "none" right on pages without one, accept-level answers
(``needs_review`` false) and how many of them are wrong, titles exact
(case and whitespace aside) and containing, revision marks and issue
dates against ``--fields`` labels, and the time to read a page's words at
p95. How it is measured and the last figures: docs/sheets.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import time
from collections import defaultdict

import pypdfium2 as pdfium

from planzoom.engines.sheet_set import identify_set
from planzoom.engines.sheets import page_candidates
from planzoom.engines.sidecar import page_text
from planzoom.engines.text import OCR_BELOW_GLYPHS, document_hints, read_words
from planzoom.engines.titleblock import fold, number_key
from planzoom.pages import raster_size

CORPUS = os.environ.get("PLANZOOM_CORPUS", os.path.join(os.path.dirname(__file__), "..", "..",
                                                        "shared", "corpus"))


def _norm_title(t: str | None) -> str:
    return re.sub(r"\s+", " ", fold(t or "")).strip()


def _same_number(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return number_key(a) == number_key(b)


def run(labels: list[dict], pdf_dir: str, dpi: float = 150.0, show: bool = False,
        ocr: bool = True, hints: bool = True) -> dict:
    by_file: dict[str, list[dict]] = defaultdict(list)
    for row in labels:
        by_file[row["file"]].append(row)
    results = []
    times = []
    ocr_times: list[float] = []
    sizes: list[int] = []  # word sidecars, gzipped bytes
    links = defaultdict(int)  # callouts: target sheets per page, against the labels
    for name, rows in sorted(by_file.items()):
        path = os.path.join(pdf_dir, name)
        try:
            doc = pdfium.PdfDocument(path)
        except pdfium.PdfiumError:
            for row in rows:
                results.append((row, None))
            continue
        cands = {}
        own = document_hints(doc) if hints else {}
        for n in range(1, len(doc) + 1):
            page = doc[n - 1]
            w, h = raster_size(*page.get_size(), dpi)
            t0 = time.perf_counter()
            words = read_words(page, w, h)
            times.append(time.perf_counter() - t0)
            if ocr and words.glyphs < OCR_BELOW_GLYPHS:
                t0 = time.perf_counter()
                words = page_text(page, w, h)
                ocr_times.append(time.perf_counter() - t0)
            sizes.append(len(gzip.compress(json.dumps(
                words.to_json(), separators=(",", ":"), ensure_ascii=False).encode())))
            cands[n] = page_candidates(words, own.get(n - 1, []))
            page.close()
        doc.close()
        sheets = {s.page: s for s in identify_set(cands)}
        in_set = {number_key(r["sheet_number"]) for r in rows if r["sheet_number"]}
        for row in rows:
            results.append((row, sheets.get(row["page"])))
            sheet = sheets.get(row["page"])
            if row.get("references") is None or sheet is None:
                continue  # the labeller did not look
            want = {number_key(ref.split("/")[-1]) for ref in row["references"]} & in_set
            want.discard(number_key(row["sheet_number"] or ""))
            got = {number_key(r["number"]) for r in sheet.references or []}
            links["true"] += len(want & got)
            links["false"] += len(got - want)
            links["missed"] += len(want - got)
    stats: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    for row, sheet in results:
        layer = row.get("text_layer") or "yes"
        kind = "text" if layer == "yes" else "no text"
        for key in ("all", f"template {row.get('template') or row['file'][:40]}", kind):
            st = stats[key]
            truth = row["sheet_number"]
            got = sheet.number if sheet else None
            ok = _same_number(truth, got)
            if truth is None:
                st["none pages"] += 1
                st["none right"] += ok
            else:
                st["numbered"] += 1
                st["number right"] += ok
            if sheet and sheet.number and not sheet.needs_review:
                st["accepted"] += 1
                st["accepted wrong"] += not ok
                if truth is not None:
                    st["accepted numbered"] += 1
            for field in ("revision", "issued"):
                if f"want_{field}" not in row:
                    continue  # not labelled
                want, got = row[f"want_{field}"], getattr(sheet, field, None) if sheet else None
                st[f"{field} labelled"] += 1
                st[f"{field} right"] += _norm_title(want) == _norm_title(got)
            if row.get("sheet_title"):
                st["titled"] += 1
                gt = _norm_title(sheet.title if sheet else None)
                tt = _norm_title(row["sheet_title"])
                st["title exact"] += gt == tt
                st["title containing"] += bool(gt) and tt in gt
        if show and sheet is not None:
            mark = "ok " if _same_number(row["sheet_number"], sheet.number) else "BAD"
            print(f"{mark} {row['file'][:44]:44} p{row['page']:<3} want {row['sheet_number']!r:24}"
                  f" got {sheet.number!r:24} c={sheet.confidence:.2f} | want "
                  f"{(row.get('sheet_title') or '')[:30]!r} got {(sheet.title or '')[:40]!r}")
    return {"stats": stats, "p95_ms": _p95(times) * 1000, "pages": len(times), "links": links,
            "ocr_p95_s": _p95(ocr_times), "ocr_pages": len(ocr_times),
            "sidecar_p95_kib": _p95(sizes) / 1024}


def _p95(values: list[float]) -> float:
    values = sorted(values)
    return values[int(0.95 * (len(values) - 1))] if values else 0.0


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:5.1f} % ({a}/{b})" if b else "    -"


def report(out: dict) -> None:
    stats = out["stats"]
    print(f"{'':52} {'number right':>18} {'none right':>16} {'accepted wrong':>16} "
          f"{'accept covers':>18} {'title exact':>18} {'title containing':>18}")
    order = ["all", "text", "no text"] + sorted(k for k in stats if k.startswith("template"))
    for key in order:
        if key not in stats:
            continue
        st = stats[key]
        print(f"{key[:52]:52} {_pct(st['number right'], st['numbered']):>18} "
              f"{_pct(st['none right'], st['none pages']):>16} "
              f"{_pct(st['accepted wrong'], st['accepted']):>16} "
              f"{_pct(st['accepted numbered'], st['numbered']):>18} "
              f"{_pct(st['title exact'], st['titled']):>18} "
              f"{_pct(st['title containing'], st['titled']):>18}")
    print(f"words of a page read in {out['p95_ms']:.1f} ms at p95 ({out['pages']} pages, 150 DPI);"
          f" word sidecar {out['sidecar_p95_kib']:.1f} KiB gzipped at p95; OCR of a page with "
          f"no text layer {out['ocr_p95_s']:.1f} s at p95 ({out['ocr_pages']} pages)")
    if stats["all"]["revision labelled"]:
        print(f"{'':52} {'revision right':>18} {'issue date right':>18}   "
              "(as printed; null when none is)")
        for key in order:
            st = stats.get(key)
            if st and st["revision labelled"]:
                print(f"{key[:52]:52} {_pct(st['revision right'], st['revision labelled']):>18} "
                      f"{_pct(st['issued right'], st['issued labelled']):>18}")
    lk = out["links"]
    print(f"callouts (sheets a page links to, of those in the set): precision "
          f"{_pct(lk['true'], lk['true'] + lk['false'])}, recall "
          f"{_pct(lk['true'], lk['true'] + lk['missed'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labels", nargs="*", help="label files (default: the corpus's sheets.json)")
    ap.add_argument("--pdfs", help="where the labels' PDFs are (default: beside the labels)")
    ap.add_argument("--show", action="store_true", help="print every page's answer")
    ap.add_argument("--fields", help="labels of revision marks and issue dates: a list of "
                    '{"file", "page", "revision", "issued"} (null where none is printed)')
    ap.add_argument("--no-ocr", action="store_true", help="the text layer only")
    ap.add_argument("--no-hints", action="store_true",
                    help="without the PDF's bookmarks and page labels")
    args = ap.parse_args()
    files = args.labels or [os.path.join(CORPUS, "sheets.json")]
    labels = []
    for f in files:
        labels.extend(json.load(open(f, encoding="utf-8")))
    if args.fields:
        fields = {(r["file"], r["page"]): r for r in json.load(open(args.fields, encoding="utf-8"))}
        for row in labels:
            got = fields.get((row["file"], row["page"]))
            if got:
                row["want_revision"], row["want_issued"] = got["revision"], got["issued"]
    pdf_dir = args.pdfs or os.path.dirname(os.path.abspath(files[0]))
    report(run(labels, pdf_dir, show=args.show, ocr=not args.no_ocr, hints=not args.no_hints))


if __name__ == "__main__":
    main()
