"""The one logical message every codec encodes and decodes.

A message is `{"records": [record, ...]}` with a fixed record schema:

    id: int (int64)   score: float (float64)   name: str   email: str   values: list[int] (int64)

make_message(payload_bytes) adds records until the message's compact stdlib-JSON encoding
(json_bytes) would pass payload_bytes, and always has at least one record: 100 -> 1 record
(105 bytes), 10240 -> 95 records, 1048576 -> 9,204 records. Every value derives from the
record's index, so each process of each host builds the same message. The sizes are JSON
sizes: the binary encodings of the same message are smaller or larger (bench.py reports each).
"""

import json

# Some names are not ASCII, so that every codec's UTF-8 handling is exercised.
_FIRST_NAMES = ("ada", "bob", "chloé", "dmitri", "eve", "farah", "günter", "hana", "ivo", "jun")


def make_record(index: int) -> dict:
    name = f"{_FIRST_NAMES[index % len(_FIRST_NAMES)]}-{index:05d}"
    return {
        "id": index * 1_000_003 - 500_000,  # negative for the first record, large after
        # Multiples of 1/8: exact in binary, so every codec's float round trip is exact.
        "score": ((index * 37) % 1000) / 8 - 20.0,
        "name": name,
        "email": f"{name}@ex.org",
        "values": [(index * 31 + k * 17) % 100_000 - 1000 for k in range(1 + index % 6)],
    }


def json_bytes(message: dict) -> bytes:
    """The compact stdlib-JSON encoding that all three JSON variants decode."""
    return json.dumps(message, separators=(",", ":")).encode()


def make_message(payload_bytes: int) -> dict:
    if payload_bytes < 1:
        raise ValueError(f"payload_bytes must be positive, not {payload_bytes}")
    records = [make_record(0)]
    size = len(json_bytes({"records": records}))
    while True:
        record = make_record(len(records))
        grown = size + 1 + len(json_bytes(record))  # a comma, then the record
        if grown > payload_bytes:
            return {"records": records}
        records.append(record)
        size = grown
