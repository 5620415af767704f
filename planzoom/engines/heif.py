"""HEIF and AVIF (libheif through pillow-heif): opened, their orientation
told apart from the transforms libheif applies itself, decoded."""

from __future__ import annotations

from planzoom.engines.base import ImageDamaged


def open_heif(path: str):
    """The HEIF/AVIF file at ``path`` opened by libheif (pillow-heif),
    HDR brought to 8 bits. Raises ImageDamaged."""
    import pillow_heif

    try:
        return pillow_heif.open_heif(path, convert_hdr_to_8bit=True)
    except (ValueError, RuntimeError, OSError) as e:
        raise ImageDamaged(f"the HEIF image cannot be read: {e}") from None


def heif_orientation(path: str, heif) -> int:
    """The EXIF orientation to apply to a HEIF that libheif decoded: none
    if the file has irot/imir transforms (libheif applied them)."""
    exif = heif.info.get("exif")
    if not exif:
        return 1
    with open(path, "rb") as f:
        head = f.read(1 << 18)
    if b"irot" in head or b"imir" in head:
        return 1
    from PIL import Image

    tags = Image.Exif()
    try:
        tags.load(exif)
    except Exception:
        return 1
    value = tags.get(0x0112, 1)
    return value if value in range(1, 9) else 1


def decoded_heif(path: str):
    """The primary image of a HEIF/AVIF decoded, as a libvips image with
    its ICC profile and the orientation still to apply."""
    import numpy as np
    import pyvips

    heif = open_heif(path)
    try:
        pixels = np.ascontiguousarray(np.asarray(heif))
    except (ValueError, RuntimeError) as e:
        raise ImageDamaged(f"the HEIF image cannot be decoded: {e}") from None
    bands = pixels.shape[2] if pixels.ndim == 3 else 1
    image = pyvips.Image.new_from_memory(pixels.data, pixels.shape[1], pixels.shape[0], bands,
                                         "uchar")
    image = image.copy(interpretation="srgb" if bands >= 3 else "b-w")
    icc = heif.info.get("icc_profile")
    if icc:
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
    image.set_type(pyvips.GValue.gint_type, "orientation", heif_orientation(path, heif))
    return image
