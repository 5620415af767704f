"""A page's whole DZI pyramid in one object: a PMTiles v3 archive
(https://github.com/protomaps/PMTiles/blob/main/spec/v3/spec.md, the
``pmtiles`` package's encoding), written as the tiles come and read by
HTTP range requests.

The mapping: DZI level ``L`` is PMTiles zoom ``L``, a tile's column and row
its ``x`` and ``y`` (a DZI level is at most ``2**L`` pixels wide, so its
tiles fit the zoom's grid); tiles are stored as they are (JPEG, no
compression on top); identical tiles (blank paper) are stored once; the
metadata holds the DZI descriptor (``{"dzi": {"width", "height",
"tile_size", "overlap", "format"}}``). Any PMTiles reader (the ``pmtiles``
npm package in a browser, the Python package) opens it.

Writing (:class:`ArchiveWriter`) is streamed for an S3 multipart upload:
tile data goes out in parts of ``part_bytes`` as it accumulates, while the
archive's head (header, root directory, metadata, leaf directories, then
the first ``part_bytes`` of tile data, held back) is made last and becomes
part 1, since S3 joins parts in number order whatever order they arrived
in. Memory: two parts, and one directory entry per tile. A pyramid of less
than one part is one object, one PUT.

Reading: :class:`ArchiveIndex` parses the head (the first
:data:`HEAD_BYTES` hold the header and the root directory) and finds a
tile's byte range, fetching a leaf directory when the root points to one.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pmtiles.tile import (
    Compression,
    Entry,
    TileType,
    deserialize_directory,
    deserialize_header,
    find_tile,
    serialize_header,
    tileid_to_zxy,
    zxy_to_tileid,
)
from pmtiles.writer import optimize_directories

from planzoom.dzi import DziInfo, parse_dzi
from planzoom.errors import InvalidInput

CONTENT_TYPE = "application/vnd.pmtiles"
#: Bytes at the start of an archive that hold its header and root directory
#: (the spec keeps both within the first 16 KiB).
HEAD_BYTES = 16_384
HEADER_BYTES = 127
#: The smallest S3 multipart part but the last.
MIN_PART_BYTES = 5 * 1024 * 1024
#: A part's bytes when none are given.
DEFAULT_PART_BYTES = 32 * 1024 * 1024
_TILE_TYPES = {"jpg": TileType.JPEG, "jpeg": TileType.JPEG, "png": TileType.PNG,
               "webp": TileType.WEBP}

#: ``emit(part_number, data)``: send one part (2, 3, ...) of the archive;
#: returns None once it is kept, or a Future done when it is.
PartSink = Callable[[int, bytes], object]


class ArchiveUnreadable(InvalidInput):
    """The object is not a PMTiles v3 archive of a DZI pyramid."""

    reason = "RASTER_UNREADABLE"


def tile_id(level: int, col: int, row: int) -> int:
    """The PMTiles tile id of DZI tile (``level``, ``col``, ``row``)."""
    return zxy_to_tileid(level, col, row)


@dataclass(frozen=True)
class Written:
    """How an archive ended: ``head`` is the whole archive if ``parts`` is
    0, else its part 1, parts 2 .. ``parts`` + 1 having been emitted."""

    head: bytes
    parts: int
    size: int  # the archive's bytes
    tiles: int  # tiles addressed
    stored: int  # tile contents stored (identical tiles once)


class ArchiveWriter:
    """Tiles in, an archive out in parts (see the module docstring).
    :meth:`add` may be called from several threads."""

    def __init__(self, dzi: DziInfo, emit: PartSink, part_bytes: int = DEFAULT_PART_BYTES):
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"parts are at least {MIN_PART_BYTES} bytes (S3's smallest)")
        self.dzi, self.emit, self.part_bytes = dzi, emit, part_bytes
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._stored: dict[bytes, tuple[int, int]] = {}  # digest -> (offset, length)
        self._offset = 0  # tile data bytes so far
        self._held = bytearray()  # the first part_bytes of tile data, for part 1
        self._buffer = bytearray()  # tile data not sent yet
        self._parts = 0

    def add(self, level: int, col: int, row: int, data: bytes) -> object:
        """Add one tile; returns what ``emit`` returned if this tile filled
        a part (an upload in flight), else None."""
        digest = hashlib.blake2b(data, digest_size=16).digest()
        with self._lock:
            found = self._stored.get(digest)
            if found is None:
                found = self._stored[digest] = (self._offset, len(data))
                self._offset += len(data)
                room = self.part_bytes - len(self._held)
                self._held += data[:room]
                self._buffer += data[room:] if room < len(data) else b""
            self._entries.append(Entry(tile_id(level, col, row), found[0], found[1], 1))
            if len(self._buffer) < self.part_bytes:
                return None
            part = bytes(self._buffer[:self.part_bytes])
            del self._buffer[:self.part_bytes]
            self._parts += 1
            number = self._parts + 1
        return self.emit(number, part)

    def finish(self) -> Written:
        """The archive's head (see :class:`Written`), with the rest of the
        tile data as a last part emitted first if any parts went out."""
        with self._lock:
            if self._parts and self._buffer:
                self._parts += 1
                self.emit(self._parts + 1, bytes(self._buffer))
                self._buffer.clear()
            entries = _runs(sorted(self._entries, key=lambda e: e.tile_id))
            head = self._head(entries)
            size = len(head) - len(self._held) + self._offset
            if not self._parts:
                head += self._buffer
            return Written(head=bytes(head), parts=self._parts, size=size,
                           tiles=len(self._entries), stored=len(self._stored))

    def _head(self, entries: list[Entry]) -> bytearray:
        if not entries:
            raise ValueError("an archive holds at least one tile")
        root, leaves, _ = optimize_directories(entries, HEAD_BYTES - HEADER_BYTES)
        dzi = self.dzi
        metadata = gzip.compress(json.dumps({"dzi": {
            "width": dzi.width, "height": dzi.height, "tile_size": dzi.tile_size,
            "overlap": dzi.overlap, "format": dzi.format}}).encode(), mtime=0)
        header = {
            "root_offset": HEADER_BYTES, "root_length": len(root),
            "metadata_offset": HEADER_BYTES + len(root), "metadata_length": len(metadata),
            "leaf_directory_offset": HEADER_BYTES + len(root) + len(metadata),
            "leaf_directory_length": len(leaves),
            "tile_data_offset": HEADER_BYTES + len(root) + len(metadata) + len(leaves),
            "tile_data_length": self._offset, "addressed_tiles_count": len(self._entries),
            "tile_entries_count": len(entries), "tile_contents_count": len(self._stored),
            "clustered": False, "internal_compression": Compression.GZIP,
            "tile_compression": Compression.NONE,
            "tile_type": _TILE_TYPES.get(dzi.format, TileType.UNKNOWN),
            "min_zoom": 0, "max_zoom": dzi.levels - 1,
            "min_lon_e7": 0, "min_lat_e7": 0, "max_lon_e7": 0, "max_lat_e7": 0,
            "center_zoom": 0, "center_lon_e7": 0, "center_lat_e7": 0,
        }
        return bytearray(serialize_header(header)) + root + metadata + leaves + self._held


def _runs(entries: list[Entry]) -> list[Entry]:
    """Sorted entries with consecutive tile ids of the same bytes (blank
    paper, mostly) folded into one entry with a run length."""
    out: list[Entry] = []
    for e in entries:
        last = out[-1] if out else None
        if last is not None and e.tile_id == last.tile_id + last.run_length and \
                (e.offset, e.length) == (last.offset, last.length):
            last.run_length += 1
        else:
            out.append(Entry(e.tile_id, e.offset, e.length, 1))
    return out


@dataclass
class ArchiveIndex:
    """An archive's header, descriptor and root directory, parsed from its
    first :data:`HEAD_BYTES` (or all of it, if shorter); leaf directories
    are fetched when a tile needs one (``read(offset, length)``) and kept."""

    header: dict
    dzi: DziInfo
    root: list[Entry]
    leaves: dict[int, list[Entry]]

    @classmethod
    def load(cls, read: Callable[[int, int], bytes]) -> ArchiveIndex:
        """The index of the archive ``read(offset, length)`` reads from (one
        read of its head, more only if its metadata lies beyond it)."""
        return cls.parse(read(0, HEAD_BYTES), read)

    @classmethod
    def parse(cls, head: bytes, read: Callable[[int, int], bytes]) -> ArchiveIndex:
        """Raises ArchiveUnreadable for anything but a PMTiles v3 archive
        whose metadata holds a DZI descriptor."""
        try:
            header = deserialize_header(head[:HEADER_BYTES])
            end = header["root_offset"] + header["root_length"]
            root = deserialize_directory(head[header["root_offset"]:end]
                                         if end <= len(head) else
                                         read(header["root_offset"], header["root_length"]))
            meta_at, meta_length = header["metadata_offset"], header["metadata_length"]
            raw = (head[meta_at:meta_at + meta_length] if meta_at + meta_length <= len(head)
                   else read(meta_at, meta_length))
            spec = json.loads(gzip.decompress(raw))["dzi"]
            dzi = DziInfo(width=int(spec["width"]), height=int(spec["height"]),
                          tile_size=int(spec["tile_size"]), overlap=int(spec["overlap"]),
                          format=str(spec["format"]))
        except Exception as e:  # noqa: BLE001 - whatever the bytes were, the same answer
            raise ArchiveUnreadable(f"not a planzoom archive: {type(e).__name__}") from None
        return cls(header=header, dzi=dzi, root=root, leaves={})

    def leaf_to_read(self, level: int, col: int, row: int) -> tuple[int, int] | None:
        """(offset, length) in the archive of the leaf directory that tile
        needs and that is not kept yet (pass its bytes to
        :meth:`keep_leaf`), or None."""
        entry = self._leaf_entry(level, col, row)
        if entry is None or entry.offset in self.leaves:
            return None
        return self.header["leaf_directory_offset"] + entry.offset, entry.length

    def keep_leaf(self, offset: int, data: bytes) -> None:
        """Keep the leaf directory read from ``offset`` (as
        :meth:`leaf_to_read` gave it)."""
        self.leaves[offset - self.header["leaf_directory_offset"]] = \
            deserialize_directory(data)

    def locate(self, level: int, col: int, row: int,
               read: Callable[[int, int], bytes] | None = None) -> tuple[int, int] | None:
        """(offset, length) in the archive of the tile, or None if it has
        none. Reads (``read(offset, length)``) and keeps a leaf directory if
        the tile is in one not kept yet; without ``read``, that leaf must
        have been kept (:meth:`leaf_to_read`)."""
        leaf = self.leaf_to_read(level, col, row)
        if leaf is not None:
            self.keep_leaf(leaf[0], read(*leaf))
        if not self._in_grid(level, col, row):
            return None
        wanted = tile_id(level, col, row)
        entry = find_tile(self.root, wanted)
        if entry is not None and entry.run_length == 0:  # in a leaf directory
            entry = find_tile(self.leaves[entry.offset], wanted)
        if entry is None or entry.run_length == 0:
            return None
        return self.header["tile_data_offset"] + entry.offset, entry.length

    def _in_grid(self, level: int, col: int, row: int) -> bool:
        if not 0 <= level < self.dzi.levels:
            return False
        cols, rows = self.dzi.grid(level)
        return 0 <= col < cols and 0 <= row < rows

    def _leaf_entry(self, level: int, col: int, row: int) -> Entry | None:
        """The root's entry for the leaf directory holding the tile, if it
        is in one."""
        if not self._in_grid(level, col, row):
            return None
        entry = find_tile(self.root, tile_id(level, col, row))
        return entry if entry is not None and entry.run_length == 0 else None

    def tiles(self, read: Callable[[int, int], bytes]) -> Iterator[tuple[int, int, int, int,
                                                                         int]]:
        """Every tile as (level, col, row, offset, length), in the order of
        its bytes in the archive (a reader of the whole object streams
        them)."""
        found = []
        for entry in self.root:
            if entry.run_length:
                found.append(entry)
                continue
            found += deserialize_directory(read(
                self.header["leaf_directory_offset"] + entry.offset, entry.length))
        found.sort(key=lambda e: (e.offset, e.tile_id))
        base = self.header["tile_data_offset"]
        for entry in found:
            for n in range(entry.run_length):
                level, col, row = tileid_to_zxy(entry.tile_id + n)
                yield level, col, row, base + entry.offset, entry.length


def page_descriptor(key: str, read: Callable[[str, int, int], bytes],
                    read_all: Callable[[str], bytes]) -> DziInfo:
    """The DZI descriptor of a finished page from the object that marks it
    complete (planzoom.keys.done_key): an archive's head (``read(key,
    offset, length)``) or a ``.dzi`` (``read_all(key)``)."""
    if key.endswith(".dzi"):
        return parse_dzi(read_all(key))
    return ArchiveIndex.load(lambda offset, length: read(key, offset, length)).dzi
