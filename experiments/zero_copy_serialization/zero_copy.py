"""The seed's zero-copy layout: MessageBuilder writes it, MessageReader reads it in place.

What the seed gives (shared/seed/000_9b7c13862b3e8389.txt, section 3.4 "零拷贝序列化", lines
134-149) and how this file follows it:

- "Cap'n Proto风格布局" (line 136, Cap'n Proto-style layout): a fixed-size header, then one
  fixed-size slot per record (its scalars inline, like a Cap'n Proto struct's data section, and
  an (offset, length) pair per variable-size field, like its pointer section), then the bytes
  those offsets point at. A record is found by arithmetic, never by scanning.
- "MessageBuilder/MessageReader" (line 137): the two classes below.
- `struct User<'a> { name: &'a str, email: &'a str }` (lines 142-145): fields are references
  into the buffer. Here MessageReader hands out `memoryview` slices of the caller's buffer for
  name, email and values (`.obj` is that buffer; nothing is copied); only the scalars id and
  score are unpacked into Python numbers, as Rust would read an i64 into a register.
- `assert!(ptr::eq(user.name.as_ptr(), &buffer[16]))` (line 148): the first variable-size
  field begins right after a 16-byte header in the seed. The header here is 16 bytes too; the
  record slots come before the first string, so tests/test_zero_copy_serialization.py makes the
  same pointer check at the offset the slot names, by buffer address and by `.obj` identity.

The seed gives no byte-level layout, so these choices are ours (all little-endian):

    header (16 B):  magic b"ZCS1" | version u16 = 1 | slot size u16 = 40 | record count u32
                    | total size u32 (must equal the buffer's length)
    slot i (40 B, at 16 + 40 i):  id i64 | score f64 | name offset u32 | name length u32
                    | email offset u32 | email length u32 | values offset u32 | values count u32
    data:           per record: name UTF-8, email UTF-8, zero padding to 8 bytes, values i64[]

Offsets are from the start of the buffer. The reader checks the header once and every offset
and length against the buffer before it slices (Cap'n Proto also checks pointers when they are
followed, not up front). Strings are returned as UTF-8 bytes, not decoded or validated: decoding
would be the copy the layout exists to avoid. `values` is a memoryview cast to int64 ('q'),
which needs a little-endian host (checked at import).
"""

import struct
import sys
from collections.abc import Iterator
from typing import NamedTuple

if sys.byteorder != "little":
    raise ImportError("zero_copy: the values view is cast to native int64; this host is big-endian")

MAGIC = b"ZCS1"
VERSION = 1
HEADER = struct.Struct("<4sHHII")
SLOT = struct.Struct("<qdIIIIII")
assert HEADER.size == 16 and SLOT.size == 40
_INT64 = struct.Struct("<q")
_EXTENT = struct.Struct("<II")
# Byte offset of each field within a slot.
_SCORE_AT, _NAME_AT, _EMAIL_AT, _VALUES_AT = 8, 16, 24, 32


class LayoutError(ValueError):
    """The buffer is not a message of this layout, or an offset points outside it."""


class Record(NamedTuple):
    """One record as MessageReader returns it: name, email and values are views of the buffer."""

    id: int
    score: float
    name: memoryview
    email: memoryview
    values: memoryview


class MessageBuilder:
    """Collects records, then lays them out in one bytes object (the encoder: it copies)."""

    def __init__(self) -> None:
        self._records: list[tuple[int, float, bytes, bytes, list[int]]] = []

    def add(self, id: int, score: float, name: str, email: str, values: list[int]) -> None:
        self._records.append((id, score, name.encode(), email.encode(), values))

    def to_bytes(self) -> bytes:
        count = len(self._records)
        slots_end = HEADER.size + SLOT.size * count
        slots, data = bytearray(), bytearray()
        for id, score, name, email, values in self._records:
            name_at = slots_end + len(data)
            data += name
            email_at = slots_end + len(data)
            data += email
            data += bytes(-len(data) % 8)  # values start 8-aligned (the buffer itself may not be)
            values_at = slots_end + len(data)
            data += struct.pack(f"<{len(values)}q", *values)
            slots += SLOT.pack(id, score, name_at, len(name), email_at, len(email), values_at, len(values))
        total = slots_end + len(data)
        if total > 0xFFFFFFFF:
            raise LayoutError(f"message of {total} bytes: offsets are 32-bit")
        return HEADER.pack(MAGIC, VERSION, SLOT.size, count, total) + bytes(slots) + bytes(data)


def encode(message: dict) -> bytes:
    """A records.make_message() message in this layout."""
    builder = MessageBuilder()
    for r in message["records"]:
        builder.add(r["id"], r["score"], r["name"], r["email"], r["values"])
    return builder.to_bytes()


class RecordView:
    """Record i, read field by field on access: reading one field touches only its bytes."""

    __slots__ = ("_view", "_at")

    def __init__(self, view: memoryview, at: int) -> None:
        self._view, self._at = view, at

    @property
    def id(self) -> int:
        return _INT64.unpack_from(self._view, self._at)[0]

    @property
    def score(self) -> float:
        return struct.unpack_from("<d", self._view, self._at + _SCORE_AT)[0]

    @property
    def name(self) -> memoryview:
        return self._bytes_at(_NAME_AT)

    @property
    def email(self) -> memoryview:
        return self._bytes_at(_EMAIL_AT)

    @property
    def values(self) -> memoryview:
        offset, count = _EXTENT.unpack_from(self._view, self._at + _VALUES_AT)
        return _slice(self._view, offset, 8 * count).cast("q")

    def _bytes_at(self, field_at: int) -> memoryview:
        offset, length = _EXTENT.unpack_from(self._view, self._at + field_at)
        return _slice(self._view, offset, length)

    def record(self) -> Record:
        return Record(self.id, self.score, self.name, self.email, self.values)


def _slice(view: memoryview, offset: int, length: int) -> memoryview:
    # A memoryview slice past the end would silently come out short: check first.
    if offset + length > len(view):
        raise LayoutError(f"field at {offset}+{length} runs past the {len(view)}-byte buffer")
    return view[offset : offset + length]


class MessageReader:
    """Reads a message in place. Keeps a memoryview of `buffer` (bytes, bytearray, mmap, ...)
    and never copies it; every view it returns has `.obj is buffer`."""

    __slots__ = ("_view", "_count")

    def __init__(self, buffer) -> None:
        view = memoryview(buffer)
        if view.ndim != 1 or view.format not in ("B", "b", "c"):
            raise LayoutError("buffer must be flat bytes")
        if len(view) < HEADER.size:
            raise LayoutError(f"{len(view)} bytes: shorter than the {HEADER.size}-byte header")
        magic, version, slot_size, count, total = HEADER.unpack_from(view, 0)
        if magic != MAGIC or version != VERSION or slot_size != SLOT.size:
            raise LayoutError(f"not a ZCS1 v{VERSION} message (magic {magic!r}, version {version}, slot {slot_size})")
        if total != len(view) or HEADER.size + SLOT.size * count > total:
            raise LayoutError(f"header says {count} records in {total} bytes; the buffer has {len(view)}")
        self._view, self._count = view, count

    def __len__(self) -> int:
        return self._count

    def record(self, index: int) -> RecordView:
        if not 0 <= index < self._count:
            raise IndexError(f"record {index} of {self._count}")
        return RecordView(self._view, HEADER.size + SLOT.size * index)

    def records(self) -> Iterator[Record]:
        """Every record in order, each slot unpacked in one call (the fast path for reading all)."""
        view = self._view
        size = len(view)
        slots = view[HEADER.size : HEADER.size + SLOT.size * self._count]
        for index, (id, score, name_at, name_len, email_at, email_len, values_at, count) in enumerate(
            SLOT.iter_unpack(slots)
        ):
            if name_at + name_len > size or email_at + email_len > size or values_at + 8 * count > size:
                raise LayoutError(f"record {index}: a field runs past the {size}-byte buffer")
            yield Record(
                id,
                score,
                view[name_at : name_at + name_len],
                view[email_at : email_at + email_len],
                view[values_at : values_at + 8 * count].cast("q"),
            )
