"""Registration and change finding of sheet overlays against known moves:
``python -m bench.overlay [--cases N] [--seed S] [--dpi 150] [--no-words]``;
``--pipeline``: the time from a revised A1 sheet's page being done to its
overlay, through the embedded stack.

Each case takes a real sheet of the corpus and re-plots it with
planzoom_devstack.revise: a shift of up to 5 % of the sheet, a scale of
0.9-1.1, a rotation of up to ±2° (and one case per sheet turned 90°),
half of them with a mark added (1.2 x 0.6 % of the sheet) and a 5 % square
painted out. Both versions are drawn by PDFium at ``--dpi`` with their
words (as render reads them), and planzoom.engines.overlay registers them.
Prints per case and in all: the error of the fitted transform against the
true one over a grid of points on the sheet (pixels at ``--dpi``: median
and p95), whether every added or removed element was found and nothing
else reported, and the time per overlay. The same cases are registered by
OpenCV's ECC alone (the image registration a user could pick: affine, from
the identity) beside it.
How it is measured and the last figures: docs/revisions.md.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pypdfium2 as pdfium

from planzoom.engines.overlay import overlay
from planzoom.engines.text import read_words
from planzoom_devstack.revise import Edit, revise

CORPUS = os.environ.get("PLANZOOM_CORPUS", os.path.join(os.path.dirname(__file__), "..", "..",
                                                        "shared", "corpus"))
SHEETS = [
    ("arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf", 1),
    ("arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf", 5),
    ("arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf", 7),
    ("arch-siteplan-archd-36x24in-autocad-drawingparser.pdf", 1),
    ("arch-floorplan-70x45cm-archicad-atriumhouse.pdf", 1),
    ("arch-facades-58x30cm-archicad-atriumhouse.pdf", 1),
    ("arch-renovation-plans-7p-a4-affinity-latirasse.pdf", 2),
    ("arch-floorplan-a1-rot90-heavyvector-scaledetection-drawing.pdf", 1),
]


def draw(path: str, page: int, dpi: float) -> tuple[np.ndarray, list]:
    """The page in grey at ``dpi`` and its words ([text, x, y, w, h], pixels)."""
    doc = pdfium.PdfDocument(path)
    try:
        p = doc[page - 1]
        image = p.render(scale=dpi / 72, grayscale=True).to_numpy()
        if image.ndim == 3:
            image = image[:, :, 0]
        h, w = image.shape
        words = [[x.text, x.x, x.y, x.w, x.h] for x in read_words(p, w, h).words]
        p.close()
        return np.ascontiguousarray(image), words
    finally:
        doc.close()


def grid(shape: tuple[int, int]) -> np.ndarray:
    """A 20 x 20 grid of points over a sheet of ``shape`` (h, w) pixels, as (x, y) rows."""
    h, w = shape
    xs, ys = np.meshgrid(np.linspace(0, w, 20), np.linspace(0, h, 20))
    return np.stack([xs.ravel(), ys.ravel()], 1)


def grid_error(truth: list, found: list, shape: tuple[int, int], dpi: float) -> np.ndarray:
    """Distances (pixels) between where ``truth`` (display points) and
    ``found`` (pixels) put a 20 x 20 grid of the previous sheet."""
    pts = grid(shape)
    a, b, c, d, e, f = truth
    s = dpi / 72
    true = np.stack([a * pts[:, 0] + c * pts[:, 1] + e * s,
                     b * pts[:, 0] + d * pts[:, 1] + f * s], 1)
    m = np.array(found).reshape(2, 3)
    got = pts @ m[:, :2].T + m[:, 2]
    return np.linalg.norm(true - got, axis=1)


def ecc_alone(prev: np.ndarray, cur: np.ndarray) -> list | None:
    """OpenCV ECC, affine, from the identity at half resolution (blurred)."""
    k = 0.5
    a = cv2.GaussianBlur(cv2.resize(prev, None, fx=k, fy=k, interpolation=cv2.INTER_AREA),
                         (0, 0), 1.5)
    b = cv2.GaussianBlur(cv2.resize(cur, None, fx=k, fy=k, interpolation=cv2.INTER_AREA),
                         (0, 0), 1.5)
    h, w = b.shape
    a = cv2.copyMakeBorder(a, 0, max(0, h - a.shape[0]), 0, max(0, w - a.shape[1]),
                           cv2.BORDER_CONSTANT, value=255)[:h, :w]
    warp = np.eye(2, 3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_AFFINE,
                                       (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5),
                                       None, 3)
    except cv2.error:
        return None
    warp = warp.astype(np.float64)
    warp[:, 2] /= k
    return cv2.invertAffineTransform(warp).reshape(-1).tolist()


def pipeline(dpi: float) -> None:
    """Through the embedded stack: three A1 sheets, then the set again with
    the first sheet revised, in the same plan; seconds from the revised
    page being done (its record's ``finished_at``) to its overlay's answer,
    and whether its job was still rendering the other sheets then."""
    import requests

    from bench.stacks import unthrottled
    from planzoom.v1 import jobs_pb2

    plan = jobs_pb2.PlanRef(org="bench", project="overlay", plan="a1")
    src = os.path.join(CORPUS, SHEETS[0][0])
    with tempfile.TemporaryDirectory() as tmp, unthrottled(Path(tmp)) as (stack, client):
        revised = os.path.join(tmp, "revised.pdf")
        # Its title block kept on the sheet and upright: the overlay asked
        # for as the page is done pairs by the number read on it alone.
        revise(src, revised, [1, 2, 3], {1: Edit(shift=(0.02, 0.01), scale=1.02,
                                                 add=[(0.4, 0.4, 0.04, 0.03)])})
        first = os.path.join(tmp, "first.pdf")
        revise(src, first, [1, 2, 3], {})
        options = jobs_pb2.JobOptions(dpi=dpi)
        job = client.submit(first, plan, options)
        list(client.watch(job.job_id))
        job = client.submit(revised, plan, options)
        url = f"{stack.gateway_url}/v1/jobs/{job.job_id}/pages/1/overlay"
        headers = {"Authorization": f"Bearer {stack.token('bench', 'viewer')}"}
        while (r := requests.get(url, headers=headers, timeout=10)).status_code in (404, 409):
            time.sleep(0.1)
        answered = time.time()
        record = client.get_job(job.job_id)
        page = record.pages[0]
        done = page.finished_at.ToNanoseconds() / 1e9
        state = jobs_pb2.JobState.Name(record.state).removeprefix("JOB_STATE_").lower()
        print(f"A1 sheet at {dpi:g} DPI ({page.width_px} x {page.height_px} px), page 1 of 3: "
              f"overlay answered {answered - done:.1f} s after its page was done; its job "
              f"was {state} then, {record.completed_pages} of {record.total_pages} pages "
              f"done (HTTP {r.status_code}, {len(r.json().get('changes', []))} changes, "
              f"method {r.json().get('method')}, provisional {r.json().get('provisional')})")
        list(client.watch(job.job_id))
        for name in ("progress", "tile"):
            for line in (stack.log_dir / f"{name}.log").read_text(errors="replace").splitlines():
                if "overlay" in line:
                    print(" ", line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=3, help="moves per sheet (and one turn)")
    ap.add_argument("--seed", type=int, default=26)
    ap.add_argument("--dpi", type=float, default=150)
    ap.add_argument("--no-words", action="store_true",
                    help="register from the images alone (as for a scan)")
    ap.add_argument("--pipeline", action="store_true",
                    help="instead: time an A1 overlay through the embedded stack at --dpi")
    a = ap.parse_args()
    if a.pipeline:
        pipeline(a.dpi)
        return
    rng = random.Random(a.seed)
    errors, ecc_errors, seconds, rows = [], [], [], []
    found_all = missed = extra = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, page in SHEETS:
            src = os.path.join(CORPUS, name)
            prev, prev_words = draw(src, page, a.dpi)
            edits = [Edit(shift=(rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)),
                          scale=rng.uniform(0.9, 1.1), rotate=rng.uniform(-2, 2))
                     for _ in range(a.cases)] + [Edit(turn=90, shift=(0.01, -0.01))]
            for i, edit in enumerate(edits):
                if i % 2 == 0:
                    edit.add = [(rng.uniform(0.1, 0.7), rng.uniform(0.1, 0.7), 0.012, 0.006)]
                    edit.remove = [(rng.uniform(0.2, 0.7), rng.uniform(0.2, 0.7), 0.05, 0.05)]
                out = os.path.join(tmp, f"{len(rows)}.pdf")
                truth = revise(src, out, [page], {page: edit})[1]
                cur, cur_words = draw(out, 1, a.dpi)
                started = time.perf_counter()
                result, _ = overlay(prev, cur, 1.0, 1.0, *(() if a.no_words
                                                           else (prev_words, cur_words)))
                seconds.append(time.perf_counter() - started)
                err = grid_error(truth, result.transform, prev.shape, a.dpi)
                errors.extend(err)
                ecc = ecc_alone(prev, cur)
                ecc_err = grid_error(truth, ecc, prev.shape, a.dpi) if ecc else None
                if ecc_err is not None:
                    ecc_errors.extend(ecc_err)
                # A removal painted over blank paper removes nothing.
                edit.remove = [r for r in edit.remove if _inked(prev, r, edit.turn)]
                want = len(edit.add) + len(edit.remove)
                # An element is found when a reported region covers its centre.
                hits = _covered(edit, truth, cur.shape, a.dpi, result.changes)
                found_all += hits == want
                missed += want - hits
                extra += max(0, len(result.changes) - hits) if want == 0 else 0
                rows.append((name[:38], page, _describe(edit), result.method,
                             float(np.median(err)), float(np.percentile(err, 95)),
                             "-" if ecc_err is None else f"{np.percentile(ecc_err, 95):.1f}",
                             f"{hits}/{want}", len(result.changes), seconds[-1]))
    print(f"{'sheet':38} {'pg':>2} {'move':26} {'method':16} {'med':>5} {'p95':>6} "
          f"{'ecc p95':>8} {'found':>5} {'regions':>7} {'s':>5}")
    for r in rows:
        print(f"{r[0]:38} {r[1]:>2} {r[2]:26} {r[3]:16} {r[4]:5.2f} {r[5]:6.2f} {r[6]:>8} "
              f"{r[7]:>5} {r[8]:>7} {r[9]:5.2f}")
    e, x = np.array(errors), np.array(ecc_errors) if ecc_errors else np.array([np.inf])
    print(f"\n{len(rows)} cases at {a.dpi:g} DPI: planzoom median {np.median(e):.2f} px, "
          f"p95 {np.percentile(e, 95):.2f} px; ECC alone median {np.median(x):.2f} px, "
          f"p95 {np.percentile(x, 95):.2f} px")
    print(f"changes: every element found in {found_all} of {len(rows)} cases, {missed} missed; "
          f"regions on identical content: {extra}")
    print(f"seconds per overlay: median {np.median(seconds):.2f}, max {max(seconds):.2f}")


def _covered(edit: Edit, truth: list, shape, dpi: float, regions: list) -> int:
    """Added and removed elements of ``edit`` that a reported region overlaps."""
    h, w = shape
    s = dpi / 72
    a, b, c, d, e, f = truth
    # Added boxes are in the revised sheet's display; removed ones in the
    # previous sheet's, moved with it.
    boxes = [(x * w, y * h, (x + bw) * w, (y + bh) * h) for x, y, bw, bh in edit.add]
    ph, pw = (w, h) if edit.turn % 180 else (h, w)
    for x, y, bw, bh in edit.remove:
        corners = [((x + i * bw) * pw, (y + j * bh) * ph) for i in (0, 1) for j in (0, 1)]
        moved = [(a * px + c * py + e * s, b * px + d * py + f * s) for px, py in corners]
        xs, ys = [p[0] for p in moved], [p[1] for p in moved]
        boxes.append((min(xs), min(ys), max(xs), max(ys)))
    hit = [any(r["box"][0] < x1 and x0 < r["box"][0] + r["box"][2]
               and r["box"][1] < y1 and y0 < r["box"][1] + r["box"][3] for r in regions)
           for x0, y0, x1, y1 in boxes]
    if os.environ.get("BENCH_DEBUG") and not all(hit):
        print("missed", [b for b, ok in zip(boxes, hit, strict=True) if not ok], regions)
    return sum(hit)


def _inked(prev: np.ndarray, box, turn: int) -> bool:
    h, w = prev.shape
    x, y, bw, bh = box
    return bool((prev[int(y * h):int((y + bh) * h), int(x * w):int((x + bw) * w)] < 128).sum()
                > 50)


def _describe(edit: Edit) -> str:
    if edit.turn:
        return f"turn {edit.turn}"
    return (f"{edit.shift[0]:+.3f},{edit.shift[1]:+.3f} x{edit.scale:.3f} "
            f"{edit.rotate:+.2f}°")


if __name__ == "__main__":
    main()
