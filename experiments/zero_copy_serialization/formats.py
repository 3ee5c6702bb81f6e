"""One Codec per variant: encode records.py's message, then read it back two ways.

    read_one(buffer)  decode, then read one field: the name of the middle record (returned)
    read_all(buffer)  decode, then read every field of every record (a checksum over them)
    to_python(buffer) decode into plain {"records": [{...}]} with str and list, for the tests

"Reading" a field means getting it in the codec's own type and touching it: a string's length,
the sum of a list. Each codec keeps its natural types: stdlib json and orjson give dicts of
str and list, msgspec typed Structs, FlatBuffers bytes (a copy) and ints read one by one,
pycapnp str (a copy), and zero_copy memoryviews of the buffer (no copy). The JSON variants
all decode the same bytes (records.json_bytes).

Third-party codecs are imported when asked for, so json_stdlib and zero_copy need nothing
outside the standard library.
"""

import json
import os
from typing import Any, Callable, NamedTuple

import records
import zero_copy

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "message.capnp")


class Codec(NamedTuple):
    encode: Callable[[dict], bytes]
    read_one: Callable[[bytes], Any]
    read_all: Callable[[bytes], float]
    to_python: Callable[[bytes], dict]


def _dict_codec(loads: Callable[[bytes], dict]) -> Codec:
    def read_one(buffer):
        rows = loads(buffer)["records"]
        return rows[len(rows) // 2]["name"]

    def read_all(buffer):
        total = 0.0
        for r in loads(buffer)["records"]:
            total += r["id"] + r["score"] + len(r["name"]) + len(r["email"]) + sum(r["values"])
        return total

    return Codec(records.json_bytes, read_one, read_all, loads)


def _json_stdlib() -> Codec:
    return _dict_codec(json.loads)


def _orjson() -> Codec:
    import orjson

    return _dict_codec(orjson.loads)


def _msgspec() -> Codec:
    import msgspec

    class Record(msgspec.Struct):
        id: int
        score: float
        name: str
        email: str
        values: list[int]

    class Message(msgspec.Struct):
        records: list[Record]

    decode = msgspec.json.Decoder(Message).decode

    def read_one(buffer):
        rows = decode(buffer).records
        return rows[len(rows) // 2].name

    def read_all(buffer):
        total = 0.0
        for r in decode(buffer).records:
            total += r.id + r.score + len(r.name) + len(r.email) + sum(r.values)
        return total

    return Codec(records.json_bytes, read_one, read_all, lambda buffer: msgspec.to_builtins(decode(buffer)))


def _zero_copy() -> Codec:
    def read_one(buffer):
        reader = zero_copy.MessageReader(buffer)
        return reader.record(len(reader) // 2).name

    def read_all(buffer):
        total = 0.0
        for r in zero_copy.MessageReader(buffer).records():
            total += r.id + r.score + len(r.name) + len(r.email) + sum(r.values)
        return total

    def to_python(buffer):
        return {
            "records": [
                {
                    "id": r.id,
                    "score": r.score,
                    "name": str(r.name, "utf-8"),
                    "email": str(r.email, "utf-8"),
                    "values": r.values.tolist(),
                }
                for r in zero_copy.MessageReader(buffer).records()
            ]
        }

    return Codec(zero_copy.encode, read_one, read_all, to_python)


def _flatbuffers() -> Codec:
    # By hand, as flatc's generated Python would read it (flatc itself is not needed):
    #   table Record { id: long; score: double; name: string; email: string; values: [long]; }
    #   table Message { records: [Record]; } root_type Message;
    import flatbuffers
    from flatbuffers import encode as fb_encode
    from flatbuffers import number_types as nt
    from flatbuffers import packer
    from flatbuffers.table import Table

    def encode(message):
        rows = message["records"]
        builder = flatbuffers.Builder(1024)
        offsets = []
        for r in rows:
            name = builder.CreateString(r["name"])
            email = builder.CreateString(r["email"])
            builder.StartVector(8, len(r["values"]), 8)
            for v in reversed(r["values"]):
                builder.PrependInt64(v)
            values = builder.EndVector()
            builder.StartObject(5)
            # ForceDefaults keeps an id or score of 0 in the buffer, like every other codec.
            builder.ForceDefaults(True)
            builder.PrependInt64Slot(0, r["id"], 0)
            builder.PrependFloat64Slot(1, r["score"], 0.0)
            builder.ForceDefaults(False)
            builder.PrependUOffsetTRelativeSlot(2, name, 0)
            builder.PrependUOffsetTRelativeSlot(3, email, 0)
            builder.PrependUOffsetTRelativeSlot(4, values, 0)
            offsets.append(builder.EndObject())
        builder.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            builder.PrependUOffsetTRelative(offset)
        vector = builder.EndVector()
        builder.StartObject(1)
        builder.PrependUOffsetTRelativeSlot(0, vector, 0)
        builder.Finish(builder.EndObject())
        return bytes(builder.Output())

    def rows_of(buffer):
        root = Table(buffer, fb_encode.Get(packer.uoffset, buffer, 0))
        at = root.Offset(4)  # field 0: records
        if not at:
            return root, 0, 0
        return root, root.Vector(at), root.VectorLen(at)

    def row(root, start, i):
        return Table(root.Bytes, root.Indirect(start + 4 * i))

    def get_int(t, slot):
        at = t.Offset(4 + 2 * slot)
        return t.Get(nt.Int64Flags, at + t.Pos) if at else 0

    def get_float(t, slot):
        at = t.Offset(4 + 2 * slot)
        return t.Get(nt.Float64Flags, at + t.Pos) if at else 0.0

    def get_bytes(t, slot):
        at = t.Offset(4 + 2 * slot)
        return t.String(at + t.Pos) if at else b""

    def get_values(t):
        at = t.Offset(12)  # field 4: values
        if not at:
            return []
        start = t.Vector(at)
        return [t.Get(nt.Int64Flags, start + 8 * k) for k in range(t.VectorLen(at))]

    def read_one(buffer):
        root, start, count = rows_of(buffer)
        return get_bytes(row(root, start, count // 2), 2)

    def read_all(buffer):
        root, start, count = rows_of(buffer)
        total = 0.0
        for i in range(count):
            t = row(root, start, i)
            total += get_int(t, 0) + get_float(t, 1) + len(get_bytes(t, 2)) + len(get_bytes(t, 3)) + sum(get_values(t))
        return total

    def to_python(buffer):
        root, start, count = rows_of(buffer)
        out = []
        for i in range(count):
            t = row(root, start, i)
            out.append(
                {
                    "id": get_int(t, 0),
                    "score": get_float(t, 1),
                    "name": get_bytes(t, 2).decode(),
                    "email": get_bytes(t, 3).decode(),
                    "values": get_values(t),
                }
            )
        return {"records": out}

    return Codec(encode, read_one, read_all, to_python)


def _capnp() -> Codec:
    import capnp

    schema = capnp.load(SCHEMA)
    # The default traversal limit (64 MiB of words read per message) is far above 1 MiB payloads.

    def encode(message):
        rows = message["records"]
        built = schema.Message.new_message()
        targets = built.init("records", len(rows))
        for target, r in zip(targets, rows):
            target.id = r["id"]
            target.score = r["score"]
            target.name = r["name"]
            target.email = r["email"]
            values = target.init("values", len(r["values"]))
            for k, v in enumerate(r["values"]):
                values[k] = v
        return built.to_bytes()

    def read_one(buffer):
        with schema.Message.from_bytes(buffer) as message:
            rows = message.records
            return rows[len(rows) // 2].name

    def read_all(buffer):
        total = 0.0
        with schema.Message.from_bytes(buffer) as message:
            for r in message.records:
                total += r.id + r.score + len(r.name) + len(r.email) + sum(r.values)
        return total

    def to_python(buffer):
        with schema.Message.from_bytes(buffer) as message:
            return {
                "records": [
                    {"id": r.id, "score": r.score, "name": r.name, "email": r.email, "values": list(r.values)}
                    for r in message.records
                ]
            }

    return Codec(encode, read_one, read_all, to_python)


CODECS: dict[str, Callable[[], Codec]] = {
    "json_stdlib": _json_stdlib,
    "orjson": _orjson,
    "msgspec": _msgspec,
    "zero_copy": _zero_copy,
    "flatbuffers": _flatbuffers,
    "capnp": _capnp,
}


def codec(name: str) -> Codec:
    return CODECS[name]()
