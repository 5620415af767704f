"""A sheet laid over its previous version (docs/revisions.md): the move
between them, what changed, and the overlay image in the Bluebeam
convention (previous in red, current in blue, unchanged in grey).

Both versions come as grey images of about the same resolution (the
stored pyramid's level nearest :data:`WORK_DPI`) and, for PDF pages, their
words with boxes in full-resolution pixels.

Registration (:func:`register`): a similarity (shift, scale, rotation,
any angle) fitted with RANSAC to the centres of words printed once on each
page (OpenCV ``estimateAffinePartial2D``); where words are too few (a scan,
outlined text), to ORB features of the line work matched between the
images (Rublee et al. 2011); either fit then refined by phase correlation
of windows of the images at their own resolution. ECC image alignment (``cv2.findTransformECC``)
is not used: on thin line work it does not converge from any but a very
close start (``python -m bench.overlay`` compares it).

Changes (:func:`changes`): the previous image warped onto the current one;
ink of one with :data:`INK_MASS` more blurred darkness than the other has
within :data:`TOLERANCE_PX`, in specks
of at least :data:`MIN_SPECK_PX`, gathered into regions
:data:`GATHER_PX` apart: ``added`` (current only), ``removed`` (previous
only) or ``changed`` (both).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np

from planzoom.engines.sandbox import sandbox_result

#: Resolution registration and change finding work at, DPI.
WORK_DPI = 150
#: Below this grey level a pixel is ink.
INK = 128
#: Ink differs where one version's blurred darkness (Gaussian, sigma in
#: pixels at WORK_DPI) exceeds the other's by this much (0-255).
INK_BLUR = 0.8
INK_MASS = 80
#: Ink too light for INK or INK_MASS (a faint grey line) differs where it
#: and its blurred darkness are at least FAINT_MASS darker than paper and
#: the other version has no more than PAPER_MASS within TOLERANCE_PX: it is
#: gone, not drawn otherwise.
FAINT_MASS = 40
PAPER_MASS = 8
#: Ink of one version within this many pixels (at WORK_DPI) of the other's
#: is the same ink: registration error and re-rasterisation.
TOLERANCE_PX = 2
#: Ink is a fill, not a line, where this share of the square of this side
#: (pixels at WORK_DPI) around it is ink.
FILL_SIDE, FILL_SHARE = 7, 0.5
#: Differences this close to either version's sheet edge are not compared
#: (pixels at WORK_DPI).
EDGE_PX = TOLERANCE_PX + 1
#: Smaller specks of difference are noise (pixels at WORK_DPI).
MIN_SPECK_PX = 24
#: Differences closer than this (pixels at WORK_DPI) are one region.
GATHER_PX = 24
#: Word centres needed for a fit from words, and the share that must agree.
MIN_WORD_PAIRS = 8
MIN_INLIER_SHARE = 0.3
#: Longest side images are matched by ORB features at, pixels.
FEATURE_SIDE = 1600
#: Side of the windows a fit from features is refined on, pixels.
REFINE_WINDOW = 256


class RegistrationFailed(Exception):
    """Nothing on the two versions could be matched."""


@sandbox_result
@dataclass(frozen=True)
class Overlay:
    """How a version lies over its previous one: ``transform`` [a, b, c, d,
    e, f] maps the previous version's full-resolution pixels onto this
    version's (x' = a x + b y + c, y' = d x + e y + f); ``residual_px`` the
    median distance, in this version's full-resolution pixels, between
    where the fit puts the previous version's once-printed words and where
    they are (None without words); ``method`` words or features;
    ``changes`` [{"box": [x, y, w, h] in this version's full-resolution
    pixels, "kind": added | removed | changed}]."""

    transform: list
    residual_px: float | None
    method: str
    changes: list


def _word_centres(words: list, min_chars: int = 3) -> dict[str, tuple[float, float]]:
    """Centre of each word printed exactly once (3 characters or more)."""
    counts = Counter(w[0] for w in words)
    return {w[0]: (w[1] + w[3] / 2, w[2] + w[4] / 2) for w in words
            if counts[w[0]] == 1 and len(w[0]) >= min_chars}


def _fit(src: np.ndarray, dst: np.ndarray, threshold: float) -> tuple[np.ndarray, float] | None:
    """A similarity fitted with RANSAC: (2x3 matrix, share of inliers)."""
    if len(src) < MIN_WORD_PAIRS:
        return None
    m, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                             ransacReprojThreshold=threshold, maxIters=4000,
                                             confidence=0.999, refineIters=20)
    if m is None or inliers is None:
        return None
    share = float(inliers.sum()) / len(src)
    return (m, share) if share >= MIN_INLIER_SHARE and inliers.sum() >= MIN_WORD_PAIRS else None


def _from_words(prev_words: list, cur_words: list, threshold: float) -> np.ndarray | None:
    a, b = _word_centres(prev_words), _word_centres(cur_words)
    common = sorted(set(a) & set(b))
    if len(common) < MIN_WORD_PAIRS:
        return None
    src = np.float32([a[t] for t in common])
    dst = np.float32([b[t] for t in common])
    found = _fit(src, dst, threshold)
    return found[0] if found else None


def _from_features(prev: np.ndarray, cur: np.ndarray) -> np.ndarray | None:
    """A similarity in the images' pixels from ORB features of the line work."""
    k = FEATURE_SIDE / max(*prev.shape, *cur.shape, FEATURE_SIDE)
    small = [cv2.resize(im, None, fx=k, fy=k, interpolation=cv2.INTER_AREA) for im in (prev, cur)]
    orb = cv2.ORB_create(nfeatures=6000, scaleFactor=1.2, nlevels=8)
    (ka, da), (kb, db) = (orb.detectAndCompute(im, None) for im in small)
    if da is None or db is None or len(ka) < MIN_WORD_PAIRS or len(kb) < MIN_WORD_PAIRS:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(da, db, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
    if len(good) < MIN_WORD_PAIRS:
        return None
    # Pixel centres of the reduced images, as centres of the full ones.
    src = (np.float32([ka[m.queryIdx].pt for m in good]) + 0.5) / k - 0.5
    dst = (np.float32([kb[m.trainIdx].pt for m in good]) + 0.5) / k - 0.5
    found = _fit(src, dst, 3.0 / k)
    return found[0] if found else None


def _scaled(m: np.ndarray, from_scale: float, to_scale: float) -> np.ndarray:
    """``m`` (pixels at one scale → pixels at another) for pixels ``from_scale``
    and ``to_scale`` times as large."""
    out = m.astype(np.float64).copy()
    out[:, :2] *= from_scale / to_scale
    out[:, 2] /= to_scale
    return out


def _centred(m: np.ndarray, sign: float) -> np.ndarray:
    """``m`` between pixel edges (a box's corner at 0, as words are) as a map
    between pixel centres (as images are indexed): sign +1; back: -1."""
    out = m.astype(np.float64).copy()
    out[:, 2] += sign * (out[:, :2] @ np.array([0.5, 0.5]) - 0.5)
    return out


def register(prev: np.ndarray, cur: np.ndarray, prev_scale: float, cur_scale: float,
             prev_words: list | None = None, cur_words: list | None = None,
             ) -> tuple[np.ndarray, str]:
    """The 2x3 affine taking ``prev``'s pixels onto ``cur``'s (between pixel
    edges, as word boxes are: a box's corner at 0) and how it was found.
    Both are grey images, ``*_scale`` full-resolution pixels per image
    pixel; words as in the word sidecar, in full-resolution pixels. Raises
    RegistrationFailed."""
    if prev_words and cur_words:
        m = _from_words(prev_words, cur_words, threshold=2.0 * cur_scale)
        if m is not None:
            m = _centred(_scaled(m, prev_scale, cur_scale), 1)
            return _centred(_refine(prev, cur, m), -1), "words"
    found = _from_features(prev, cur)
    if found is None:
        raise RegistrationFailed("the two versions share no words or line work to match")
    return _centred(_refine(prev, cur, found), -1), "features"


def _refine(prev: np.ndarray, cur: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``m`` (between pixel centres) corrected by what is left between
    ``prev`` warped by it and ``cur``: the shift of each inked window of
    :data:`REFINE_WINDOW` pixels by phase correlation, a similarity fitted
    to those shifts with RANSAC. Features are found on reduced images; this
    brings the fit to the images' own pixels."""
    h, w = cur.shape
    warped = cv2.warpAffine(prev, m.astype(np.float32), (w, h), flags=cv2.INTER_AREA,
                            borderValue=255)
    win = REFINE_WINDOW
    hann = cv2.createHanningWindow((win, win), cv2.CV_32F)
    src, dst = [], []
    for y in range(0, h - win + 1, max(win // 2, (h - win) // 8 or 1)):
        for x in range(0, w - win + 1, max(win // 2, (w - win) // 8 or 1)):
            a, b = warped[y:y + win, x:x + win], cur[y:y + win, x:x + win]
            if (a < INK).mean() < 0.005 or (b < INK).mean() < 0.005:
                continue
            (dx, dy), response = cv2.phaseCorrelate(a.astype(np.float32), b.astype(np.float32),
                                                    hann)
            if response > 0.1 and abs(dx) < win / 8 and abs(dy) < win / 8:
                c = (x + win / 2, y + win / 2)
                src.append(c)
                dst.append((c[0] + dx, c[1] + dy))
    if len(src) < MIN_WORD_PAIRS:
        return m
    fit = _fit(np.float32(src), np.float32(dst), 1.5)
    if fit is None:
        return m
    correction = np.vstack([fit[0], [0, 0, 1]])
    return (correction @ np.vstack([m, [0, 0, 1]]))[:2]


def _ink(im: np.ndarray) -> np.ndarray:
    return (im < INK).astype(np.uint8)


def _lines(im: np.ndarray) -> np.ndarray:
    """Ink that is part of a line, not of a fill: under
    :data:`FILL_SHARE` of its :data:`FILL_SIDE`-pixel square is ink (a
    line screened lighter than :data:`INK`, as existing work is drawn, is
    not ink). 255 where so, else 0."""
    ink = (im < INK).astype(np.float32)
    share = cv2.blur(ink, (FILL_SIDE, FILL_SIDE))
    return ((ink > 0) & (share < FILL_SHARE)).astype(np.uint8) * 255


def changes(prev: np.ndarray, cur: np.ndarray, m: np.ndarray) -> tuple[list, np.ndarray]:
    """Regions where ``cur`` differs from ``prev`` warped by ``m`` (prev
    pixels → cur pixels, between edges as :func:`register` gives it):
    ([{"box": [x, y, w, h] in cur's pixels, "kind"}], the overlay image,
    RGB, cur's size)."""
    h, w = cur.shape
    mi = _centred(m, 1).astype(np.float32)
    warped = cv2.warpAffine(prev, mi, (w, h), flags=cv2.INTER_AREA, borderValue=255)
    inside = cv2.warpAffine(np.ones_like(prev), mi, (w, h), flags=cv2.INTER_NEAREST,
                            borderValue=0)
    # Along either sheet's edge a line one version clips and the other does
    # not (the plot moved) differs in the pixels, not on the sheet.
    inside[:EDGE_PX], inside[-EDGE_PX:], inside[:, :EDGE_PX], inside[:, -EDGE_PX:] = 0, 0, 0, 0
    inside = cv2.erode(inside, cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                         (2 * EDGE_PX + 1,) * 2))
    a, b = _ink(warped), _ink(cur)
    # Ink compared as mass (blurred darkness), so that one line drawn thin
    # and dark by one version and wide and light by the other is the same
    # line, while black drawn over a grey fill is not; the other's most
    # ink within TOLERANCE_PX counts.
    near = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * TOLERANCE_PX + 1,) * 2)
    mass_a = cv2.GaussianBlur(255 - warped, (0, 0), INK_BLUR).astype(np.int16)
    mass_b = cv2.GaussianBlur(255 - cur, (0, 0), INK_BLUR).astype(np.int16)
    most_a, most_b = cv2.dilate(mass_a, near), cv2.dilate(mass_b, near)
    faint_a = (warped <= 255 - FAINT_MASS) & (mass_a >= FAINT_MASS) & (most_b <= PAPER_MASS)
    faint_b = (cur <= 255 - FAINT_MASS) & (mass_b >= FAINT_MASS) & (most_a <= PAPER_MASS)
    removed = (a & ((mass_a - most_b) > INK_MASS) | faint_a).astype(np.uint8) & inside
    added = (b & ((mass_b - most_a) > INK_MASS) | faint_b).astype(np.uint8) & inside
    # Ink darker than a line the other version draws in the same place is
    # that line drawn again (two strokes on top of each other, a hairline
    # rasterised across two pixel rows); darker than a fill, or than a
    # screened line (existing work drawn again as new), is a change.
    removed &= cv2.bitwise_not(cv2.dilate(_lines(cur), near)) // 255
    added &= cv2.bitwise_not(cv2.dilate(_lines(warped), near)) // 255
    removed, added = _without_specks(removed), _without_specks(added)
    gather = cv2.getStructuringElement(cv2.MORPH_RECT, (GATHER_PX,) * 2)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        cv2.dilate(removed | added, gather), connectivity=8)
    found = []
    for i in range(1, count):
        x, y, bw, bh, _ = stats[i]
        region = labels[y:y + bh, x:x + bw] == i
        plus, minus = added[y:y + bh, x:x + bw] & region, removed[y:y + bh, x:x + bw] & region
        kind = "changed" if plus.any() and minus.any() else "added" if plus.any() else "removed"
        # The box of the differing ink itself, not of the gathered region.
        tx, ty, tw, th = cv2.boundingRect(plus | minus)
        found.append({"box": [int(x + tx), int(y + ty), int(tw), int(th)], "kind": kind})
    image = np.full((h, w, 3), 255, np.uint8)
    image[(b > 0) | (a > 0)] = (150, 150, 150)
    image[removed > 0] = (220, 40, 40)
    image[added > 0] = (40, 90, 230)
    return found, image


def _without_specks(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = np.zeros(count, np.uint8)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= MIN_SPECK_PX
    return keep[labels]


def draw_clouds(image: np.ndarray, regions: list, colour=(200, 30, 200)) -> None:
    """Revision clouds (scalloped outlines) around ``regions``' boxes, drawn
    into ``image`` (its pixels)."""
    for r in regions:
        x, y, w, h = r["box"]
        pad = GATHER_PX // 2
        x, y, w, h = x - pad, y - pad, w + 2 * pad, h + 2 * pad
        step = max(8, min(w, h) // 6)
        for sx in range(x, x + w, step):
            for cy in (y, y + h):
                cv2.ellipse(image, (sx + step // 2, cy), (step // 2, step // 2), 0,
                            180 if cy == y else 0, 360 if cy == y else 180, colour, 2)
        for sy in range(y, y + h, step):
            for cx in (x, x + w):
                cv2.ellipse(image, (cx, sy + step // 2), (step // 2, step // 2), 0,
                            90 if cx == x else -90, 270 if cx == x else 90, colour, 2)


def overlay(prev: np.ndarray, cur: np.ndarray, prev_scale: float, cur_scale: float,
            prev_words: list | None = None, cur_words: list | None = None,
            ) -> tuple[Overlay, np.ndarray]:
    """:func:`register` then :func:`changes`: the :class:`Overlay` (in
    full-resolution pixels) and the overlay image with its clouds (RGB,
    ``cur``'s size)."""
    m, method = register(prev, cur, prev_scale, cur_scale, prev_words, cur_words)
    found, image = changes(prev, cur, m)
    draw_clouds(image, found)
    full = _scaled(m, 1.0 / prev_scale, 1.0 / cur_scale)
    residual = _residual(prev_words, cur_words, full) if prev_words and cur_words else None
    regions = [{"box": [round(v * cur_scale) for v in r["box"]], "kind": r["kind"]}
               for r in found]
    return Overlay(transform=[float(v) for v in full.reshape(-1)],
                   residual_px=None if residual is None else round(residual, 2),
                   method=method, changes=regions), image


def _residual(prev_words: list, cur_words: list, full: np.ndarray) -> float | None:
    """Median distance (full-resolution pixels) between where ``full`` puts
    the previous version's once-printed words and where they are."""
    a, b = _word_centres(prev_words), _word_centres(cur_words)
    common = sorted(set(a) & set(b))
    if not common:
        return None
    src = np.float64([a[t] for t in common])
    dst = np.float64([b[t] for t in common])
    moved = src @ full[:, :2].T + full[:, 2]
    return float(np.median(np.linalg.norm(moved - dst, axis=1)))
