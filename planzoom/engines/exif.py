"""What an image's EXIF block says that planzoom keeps (ImageFacts):
capture time, camera, stored size, orientation and, kept only when asked,
the GPS position. Parsed with Pillow's EXIF reader."""

from __future__ import annotations


def _text(value) -> str:
    return value.strip("\x00 ").strip()[:100] if isinstance(value, str) else ""


def _degrees(dms, ref) -> float | None:
    try:
        value = float(dms[0]) + float(dms[1]) / 60 + float(dms[2]) / 3600
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return None
    return -value if ref in ("S", "W") else value


def image_facts(exif: bytes | None, width: int, height: int, orientation: int) -> dict:
    """ImageFacts fields from an EXIF block (parsed with Pillow's reader):
    capture time, camera, the stored size and the orientation applied, and
    the GPS position if there is one (the caller keeps it only if asked)."""
    facts = {"original_width": width, "original_height": height,
             "orientation": orientation if orientation in range(1, 9) else 1}
    if not exif:
        return facts
    from PIL import Image

    tags = Image.Exif()
    try:
        tags.load(exif)
        detail, gps = tags.get_ifd(0x8769), tags.get_ifd(0x8825)
    except Exception:
        return facts
    facts["camera_make"], facts["camera_model"] = _text(tags.get(0x010F)), _text(tags.get(0x0110))
    taken = _text(detail.get(0x9003) or tags.get(0x0132))
    if len(taken) >= 19 and taken[4] == ":" and taken[7] == ":":
        facts["captured_at"] = taken[:10].replace(":", "-") + "T" + taken[11:19]
    if gps and 2 in gps and 4 in gps:
        lat, lon = _degrees(gps[2], gps.get(1)), _degrees(gps[4], gps.get(3))
        if lat is not None and lon is not None and abs(lat) <= 90 and abs(lon) <= 180:
            facts["gps_latitude"], facts["gps_longitude"] = round(lat, 7), round(lon, 7)
    return {k: v for k, v in facts.items() if v != ""}
