"""What goes into a job's zip (services/gateway/downloads.py sends it): the
entries of one ended job's pages (descriptors, tiles or archives, the sheet
index and word sidecars), a bundle's offline viewer, and the sized,
streamed ZipStream (PKZIP APPNOTE, stored entries, ZIP64 where needed;
zipstream-ng) whose objects are fetched a few dozen ahead as it is read.
Everything here that reads the bucket blocks: call it from a thread."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from zipstream import ZipStream

from planzoom.dzi import DziInfo, dzi_xml, level_size, tile_name
from planzoom.engines.archive import ArchiveIndex
from planzoom.errors import InvalidInput
from planzoom.keys import ARCHIVE_SUFFIX, MAX_WORDS_BYTES
from planzoom.pages import level_dpi
from planzoom.sheets import BOX_FIELDS
from planzoom.storage import ObjectStore
from services.gateway.viewer import STATIC_DIR, viewer_page

#: Objects fetched ahead of the one being written into the zip.
PREFETCH = 32
PAGES = re.compile(r"\s*(\d{1,6})\s*(?:-\s*(\d{1,6})\s*)?")


class ZipTooLarge(InvalidInput):
    reason = "ZIP_TOO_LARGE"


@dataclass
class Entry:
    """One file of the zip: bytes in hand, or an object (or ``size`` bytes
    of it from ``offset``) to fetch."""

    arcname: str
    size: int
    data: bytes | None = None
    key: str | None = None
    offset: int | None = None


def parse_pages(spec: str | None, total: int) -> list[int]:
    """``"1,3-5"`` → [1, 3, 4, 5] (all pages if ``spec`` is empty). Raises
    InvalidInput naming the part that is not a page or range of pages."""
    if not spec:
        return list(range(1, total + 1))
    pages: set[int] = set()
    for part in spec.split(","):
        match = PAGES.fullmatch(part)
        first, last = (int(match[1]), int(match[2] or match[1])) if match else (0, -1)
        if not match or not 1 <= first <= last <= total:
            raise InvalidInput(f"pages: {part.strip()!r} is not a page or range of pages "
                               f"within 1-{total}", field="pages")
        pages.update(range(first, last + 1))
    return sorted(pages)


def _bundle_page(record: dict, max_level: int | None) -> tuple[dict, DziInfo, int]:
    """A page's record and descriptor in the bundle, and its top level."""
    full = DziInfo(record["width_px"], record["height_px"], record["tile_size"],
                   record["overlap"], record["format"])
    top = full.levels - 1 if max_level is None else min(max_level, full.levels - 1)
    width, height = level_size(full.width, full.height, top)
    info = DziInfo(width, height, full.tile_size, full.overlap, full.format)
    if top == full.levels - 1:
        return record, info, top
    scaled = {**record, "width_px": width, "height_px": height, "levels": info.levels,
              "tile_count": str(info.tile_count()),
              "dpi": level_dpi(record.get("dpi", 0), full.width, width)}
    if "sheet" in record:
        scaled["sheet"] = _scaled_sheet(record["sheet"], width / full.width)
    return scaled, info, top


def _scaled_sheet(sheet: dict, factor: float) -> dict:
    """A page's sheet (protobuf JSON) with its boxes in the pixels of a
    bundle's top level."""
    def box(b: dict) -> dict:
        return {k: round(int(b.get(k, 0)) * factor) for k in ("x", "y", "w", "h")}

    out = {**sheet}
    for field in BOX_FIELDS:
        if field in out:
            out[field] = box(out[field])
    out["references"] = [{**r, **{f: box(r[f]) for f in ("box", "target_box") if f in r}}
                         for r in sheet.get("references", [])]
    return out


def _archive_tiles(store: ObjectStore, key: str, folder: str, page: int, top: int
                   ) -> list[Entry]:
    """The tiles of levels 0..``top`` of the page archive at ``key``, as
    the DZI layout's files (each read by a range of the archive)."""
    read = functools.partial(store.get_range, key)
    index = ArchiveIndex.load(read)
    return [Entry(f"{folder}/page-{page}_files/{tile_name(level, col, row, index.dzi.format)}",
                  length, key=key, offset=offset)
            for level, col, row, offset, length in index.tiles(read) if level <= top]


def count_entries(manifest: dict, pages: list[int], max_level: int | None,
                  expand: bool = False, viewer: bool = False) -> int:
    """How many files :func:`job_entries` (and, with ``viewer``, the
    pages' variants) would list for these pages, from each page's DZI
    geometry: no bucket read. An upper bound (a page's words may be
    missing)."""
    archive = manifest.get("options", {}).get("layout") == "PYRAMID_LAYOUT_ARCHIVE"
    count = 2  # manifest.json, sheets.json
    for page in pages:
        record = manifest["pages"][page - 1]
        if record.get("state") != "PAGE_STATE_DONE":
            continue
        _, info, _ = _bundle_page(record, max_level)
        whole = archive and max_level is None and not expand
        count += 2 + (1 if whole else info.tile_count())  # .dzi, words, tiles
        count += len(record.get("variants", [])) if viewer else 0
    return count


def check_zip_size(count: int, most: int) -> None:
    """ZipTooLarge (400) if ``count`` files are more than ``most``."""
    if count > most:
        raise ZipTooLarge(f"this download would hold {count:,} files, more than the "
                          f"{most:,} one zip may; ask for fewer pages (?pages=) or levels "
                          "(?max_level=), fewer jobs at once, or convert with layout ARCHIVE "
                          "(one file per page)", field="max_level")


def job_entries(store: ObjectStore, manifest: dict, folder: str, pages: list[int],
                max_level: int | None, expand: bool = False) -> list[Entry]:
    """The zip entries of one ended job (``manifest``: its manifest.json),
    under ``folder/``: per page its ``.dzi`` and ``_files/`` tiles, or, for
    a job of layout ARCHIVE kept whole (no ``max_level``, not ``expand``),
    its ``.dzi`` and its archive as one file. Blocking (reads the bucket)."""
    prefix = manifest["tiles_prefix"]
    archive = manifest.get("options", {}).get("layout") == "PYRAMID_LAYOUT_ARCHIVE"
    records, entries = [], []
    for page in pages:
        record = manifest["pages"][page - 1]
        if record.get("state") != "PAGE_STATE_DONE":
            continue
        record, info, top = _bundle_page(record, max_level)
        records.append(record)
        entries.append(Entry(f"{folder}/page-{page}.dzi", 0, data=dzi_xml(info)))
        if archive:
            key = f"{prefix}page-{page}.{ARCHIVE_SUFFIX}"
            if max_level is None and not expand:
                entries.append(Entry(f"{folder}/{key[len(prefix):]}", store.size(key) or 0,
                                     key=key))
            else:
                entries += _archive_tiles(store, key, folder, page, top)
            continue
        files = f"{prefix}page-{page}_files/"
        for key, size in store.list_sizes(files):
            level = key[len(files):].split("/", 1)[0]
            if level.isdigit() and int(level) <= top:
                entries.append(Entry(f"{folder}/{key[len(prefix):]}", size, key=key))
    # The sheet index and each page's words (boxes in full-resolution pixels
    # of the job's pages: a bundle that cuts levels says so in "bundle").
    for key in [f"{prefix}sheets.json",
                *(f"{prefix}page-{r['page']}.words.json.gz" for r in records)]:
        size = store.size(key)
        if size is not None:
            entries.append(Entry(f"{folder}/{key[len(prefix):]}", size, key=key))
    kept = {**manifest, "pages": records}
    if len(records) != len(manifest["pages"]) or max_level is not None:
        kept["bundle"] = {"pages": [r["page"] for r in records], "max_level": max_level}
    entries.insert(0, Entry(f"{folder}/manifest.json", 0,
                            data=json.dumps(kept, indent=2).encode()))
    return entries


#: Words a bundle's offline viewer carries inline for its search, at most
#: (a browser cannot read the word sidecars from disk): about 30 bytes each.
MAX_OFFLINE_WORDS = 300_000


def offline_words(store: ObjectStore, bundle: dict, manifest: dict) -> dict[str, list] | None:
    """Each page's words for the offline viewer's search: ``{page: [[text,
    x, y, w, h], …]}``, boxes in the bundle's pixels of the page; None when
    the job has none or more than :data:`MAX_OFFLINE_WORDS`. Blocking."""
    prefix, out, count = manifest["tiles_prefix"], {}, 0
    for record in bundle["pages"]:
        n = record["page"]
        doc = store.get_json(f"{prefix}page-{n}.words.json.gz", MAX_WORDS_BYTES, gzipped=True)
        if doc is None:
            continue
        factor = record["width_px"] / max(1, manifest["pages"][n - 1]["width_px"])
        out[str(n)] = [[w[0], *(round(v * factor) for v in w[1:5])] for w in doc["words"]]
        count += len(out[str(n)])
        if count > MAX_OFFLINE_WORDS:
            return None
    return out or None


def viewer_entries(manifest: dict, folder: str, words: dict | None = None) -> list[Entry]:
    """What makes a bundle open by itself (``?viewer=true``): ``index.html``
    with ``manifest`` (the bundle's) and ``words`` (:func:`offline_words`,
    for its search) inline and its pages under ``folder/``, and the
    viewer's static files under ``static/``."""
    config = {"mode": "static", "job": manifest, "base": f"{folder}/", "static": "static"}
    if words:
        config["words"] = words
    page = viewer_page(config, "static").encode()
    files = [path for path in sorted(STATIC_DIR.rglob("*"))
             if path.is_file() and path.name != "viewer.html"]
    return [Entry("index.html", len(page), data=page),
            *(Entry(f"static/{path.relative_to(STATIC_DIR)}", 0, data=path.read_bytes())
              for path in files)]


def variant_entries(store: ObjectStore, manifest: dict, folder: str) -> list[Entry]:
    """The variant files (thumbnail, overview, ...) of the pages in
    ``manifest`` (a bundle's), under ``folder/`` beside their pyramids."""
    prefix = manifest["tiles_prefix"]
    wanted = {f"{prefix}page-{r['page']}.{v['name']}.{v['format']}"
              for r in manifest["pages"] for v in r.get("variants", [])}
    return [Entry(f"{folder}/{key[len(prefix):]}", size, key=key)
            for key, size in store.list_sizes(prefix, recursive=False) if key in wanted]


def build_zip(store: ObjectStore, entries: list[Entry]) -> ZipStream:
    """A sized ZipStream whose objects are fetched in order, PREFETCH ahead,
    by a thread pool, as the stream is read."""
    fetched = _prefetch(store, [(e.key, e.offset, e.size) for e in entries if e.key])
    zs = ZipStream(sized=True)
    for entry in entries:
        if entry.data is not None:
            zs.add(entry.data, entry.arcname)
        else:
            zs.add(_Next(fetched), entry.arcname, size=entry.size)
    return zs


class _Next:
    """An entry's data: the next object the prefetcher delivers."""

    def __init__(self, fetched: Iterator[bytes]):
        self.fetched = fetched

    def __iter__(self):
        yield next(self.fetched)


def _prefetch(store: ObjectStore, wanted: list[tuple[str, int | None, int]]
              ) -> Iterator[bytes]:
    """The bytes of each (key, offset, size): a whole object, or a range."""

    def fetch(key: str, offset: int | None, size: int) -> bytes:
        return store.get_bytes(key) if offset is None else store.get_range(key, offset, size)

    def generate():
        with ThreadPoolExecutor(8) as pool:
            window = [pool.submit(fetch, *w) for w in wanted[:PREFETCH]]
            for i in range(len(wanted)):
                data = window.pop(0).result()
                if i + PREFETCH < len(wanted):
                    window.append(pool.submit(fetch, *wanted[i + PREFETCH]))
                yield data
    return generate()
