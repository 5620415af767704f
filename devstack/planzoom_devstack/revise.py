"""Revised sets made from a real one, for the demo, the tests and the bench
of sheet versions and overlays (docs/revisions.md): some pages of a PDF,
each re-plotted with a known move (shift, scale, rotation about the page's
centre: the page's content wrapped in a ``cm`` transform), with elements
added (drawn rectangles) or removed (painted over in white).

``python -m planzoom_devstack.revise SRC DST --pages 1,3 --shift 0.02,0.01
--scale 1.03 --rotate 1.5 --add 0.4,0.4,0.1,0.05`` writes DST and prints
the true transform of each page (previous pixels onto revised pixels).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field

import pikepdf


@dataclass
class Edit:
    """What happens to one page. Fractions are of the page as displayed
    (after /Rotate): ``shift`` (dx, dy) right and down, boxes (x, y, w, h)
    from its top-left; ``rotate`` in degrees, clockwise as displayed."""

    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    rotate: float = 0.0
    add: list[tuple[float, float, float, float]] = field(default_factory=list)
    remove: list[tuple[float, float, float, float]] = field(default_factory=list)
    #: Then the whole sheet turned clockwise (90, 180 or 270: /Rotate).
    turn: int = 0


def _display(page: pikepdf.Page) -> tuple[list[float], int]:
    box = [float(v) for v in (page.obj.get("/CropBox") or page.mediabox)]
    return box, int(page.obj.get("/Rotate", 0)) % 360


def user_to_display(page: pikepdf.Page) -> list[float]:
    """The affine [a, b, c, d, e, f] taking the page's user space (points,
    y up) to its display (points, from the top-left, y down, /Rotate
    applied): x' = a x + c y + e, y' = b x + d y + f."""
    (x0, y0, x1, y1), rot = _display(page)
    return {0: [1, 0, 0, -1, -x0, y1], 90: [0, 1, 1, 0, -y0, -x0],
            180: [-1, 0, 0, 1, x1, -y0], 270: [0, -1, -1, 0, y1, x1]}[rot]


def _mul(m: list[float], n: list[float]) -> list[float]:
    """m after n (both [a, b, c, d, e, f] as PDF writes them)."""
    a, b, c, d, e, f = n
    A, B, C, D, E, F = m
    return [A * a + C * b, B * a + D * b, A * c + C * d, B * c + D * d,
            A * e + C * f + E, B * e + D * f + F]


def _inverse(m: list[float]) -> list[float]:
    a, b, c, d, e, f = m
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    return [ia, ib, ic, id_, -(ia * e + ic * f), -(ib * e + id_ * f)]


def display_move(page: pikepdf.Page, edit: Edit) -> list[float]:
    """The move of ``edit`` in display points: scale and rotation about the
    page's centre, then the shift."""
    (x0, y0, x1, y1), rot = _display(page)
    w, h = (x1 - x0, y1 - y0) if rot in (0, 180) else (y1 - y0, x1 - x0)
    cx, cy = w / 2, h / 2
    t = math.radians(edit.rotate)
    cos, sin = edit.scale * math.cos(t), edit.scale * math.sin(t)
    # Clockwise on a y-down display is the usual counter-clockwise matrix.
    return [cos, sin, -sin, cos, cx - cos * cx + sin * cy + edit.shift[0] * w,
            cy - sin * cx - cos * cy + edit.shift[1] * h]


def _rect(page: pikepdf.Page, box, to_user: list[float]) -> bytes:
    (x0, y0, x1, y1), rot = _display(page)
    w, h = (x1 - x0, y1 - y0) if rot in (0, 180) else (y1 - y0, x1 - x0)
    bx, by, bw, bh = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    pts = [(bx, by), (bx + bw, by), (bx + bw, by + bh), (bx, by + bh)]
    a, b, c, d, e, f = to_user
    user = [(a * x + c * y + e, b * x + d * y + f) for x, y in pts]
    path = f"{user[0][0]:.3f} {user[0][1]:.3f} m " + " ".join(
        f"{x:.3f} {y:.3f} l" for x, y in user[1:]) + " h"
    return path.encode()


def revise_page(pdf: pikepdf.Pdf, page: pikepdf.Page, edit: Edit) -> list[float]:
    """Apply ``edit`` to ``page``; returns the move in display points."""
    to_display = user_to_display(page)
    to_user = _inverse(to_display)
    move = display_move(page, edit)
    cm = _mul(to_user, _mul(move, to_display))  # user → display → moved → user
    # The page's own content in a q/Q of its own: whatever state it ends in
    # (a CTM, a clip), the removals and additions after it start clean.
    before = b"q " + " ".join(f"{v:.6f}" for v in cm).encode() + b" cm\nq\n"
    after = b"\nQ\n"
    # Removed: painted white inside the move (it hides the old content
    # where it now lies); added: drawn black over everything, in place.
    for box in edit.remove:
        after += b"q 1 g " + _rect(page, box, to_user) + b" f Q\n"
    after += b"Q\n"
    if edit.turn % 360:
        (x0, y0, x1, y1), rot = _display(page)
        w, h = (x1 - x0, y1 - y0) if rot in (0, 180) else (y1 - y0, x1 - x0)
        turn = {90: [0, 1, -1, 0, h, 0], 180: [-1, 0, 0, -1, w, h],
                270: [0, -1, 1, 0, 0, w]}[edit.turn % 360]
        page.obj["/Rotate"] = (rot + edit.turn) % 360
        move = _mul(turn, move)
    to_user = _inverse(user_to_display(page))  # the sheet as it is now displayed
    for box in edit.add:
        after += b"q 0 g " + _rect(page, box, to_user) + b" f Q\n"
    page.contents_add(pikepdf.Stream(pdf, before), prepend=True)
    page.contents_add(pikepdf.Stream(pdf, after), prepend=False)
    return move


def revise(src: str, dst: str, pages: list[int], edits: dict[int, Edit]) -> dict[int, list]:
    """Write ``dst``: ``pages`` (1-based) of ``src`` in that order, each
    edited as ``edits`` says (none: as it was). Returns, per page of
    ``dst``, the move in display points [a, b, c, d, e, f]: a point (x, y)
    of the original page's display is at (a x + c y + e, b x + d y + f) on
    the revised one (the same in pixels at any DPI once e and f are scaled)."""
    with pikepdf.open(src) as source, pikepdf.new() as out:
        for n in pages:
            out.pages.append(source.pages[n - 1])
        moves = {}
        for i, n in enumerate(pages, 1):
            moves[i] = revise_page(out, out.pages[i - 1], edits.get(n, Edit()))
        out.save(dst)
    return moves


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--pages", default="", help="1-based, comma separated (default: all)")
    ap.add_argument("--shift", default="0,0")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--rotate", type=float, default=0.0)
    ap.add_argument("--turn", type=int, default=0, help="then turn the sheet: 90, 180, 270")
    ap.add_argument("--add", action="append", default=[], help="x,y,w,h fractions")
    ap.add_argument("--remove", action="append", default=[], help="x,y,w,h fractions")
    a = ap.parse_args()
    with pikepdf.open(a.src) as pdf:
        count = len(pdf.pages)
    pages = [int(p) for p in a.pages.split(",")] if a.pages else list(range(1, count + 1))
    edit = Edit(shift=_floats(a.shift), scale=a.scale, rotate=a.rotate,
                add=[_floats(b) for b in a.add], remove=[_floats(b) for b in a.remove],
                turn=a.turn)
    print(json.dumps(revise(a.src, a.dst, pages, {p: edit for p in pages})))


if __name__ == "__main__":
    main()
