"""The zero_copy_serialization workload: the seed-layout reader copies nothing (buffer identity,
buffer addresses, writes to the buffer seen through its views), returns the same records as
json, rejects broken buffers, and bench.py's stdout is json_values the harness parses.

    .venv/bin/pytest tests/workloads/test_zero_copy_serialization.py -x -q
"""

import ctypes
import json
import struct
import subprocess
import sys

import pytest
import yaml

from harness.run.collect import parse_json_values
from tests.builders import ROOT

EXPERIMENT = ROOT / "experiments" / "zero_copy_serialization.yaml"
WORKLOAD = EXPERIMENT.with_suffix("")
sys.path.insert(0, str(WORKLOAD))

import formats  # noqa: E402
import records  # noqa: E402
import zero_copy  # noqa: E402
from zero_copy import HEADER, SLOT, LayoutError, MessageReader  # noqa: E402


def address(buffer, offset: int = 0) -> int:
    """Address of byte `offset` of a writable buffer (a bytearray or a view of one)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer)) + offset


def slot_of(buffer, index: int) -> tuple:
    return SLOT.unpack_from(buffer, HEADER.size + SLOT.size * index)


@pytest.fixture(scope="module")
def message():
    return records.make_message(10240)


@pytest.fixture
def buffer(message):
    return bytearray(zero_copy.encode(message))


def test_fields_are_views_of_the_callers_buffer(buffer):
    reader = MessageReader(buffer)
    for index in (0, len(reader) // 2, len(reader) - 1):
        _, _, name_at, _, email_at, _, values_at, _ = slot_of(buffer, index)
        view = reader.record(index)
        for field, at in (("name", name_at), ("email", email_at), ("values", values_at)):
            value = getattr(view, field)
            assert isinstance(value, memoryview)
            assert value.obj is buffer, field
            # The seed's check, assert!(ptr::eq(user.name.as_ptr(), &buffer[16])), by address.
            assert address(value) == address(buffer, at), field


def test_every_record_of_the_fast_path_is_a_view_too(buffer):
    records_read = list(MessageReader(buffer).records())
    assert len(records_read) == len(MessageReader(buffer))
    for index, record in enumerate(records_read):
        name_at = slot_of(buffer, index)[2]
        assert record.name.obj is buffer and record.email.obj is buffer and record.values.obj is buffer
        assert address(record.name) == address(buffer, name_at)


def test_writes_to_the_buffer_show_through_the_views(buffer):
    reader = MessageReader(buffer)
    record = reader.record(3)
    name, values = record.name, record.values
    before = bytes(name)
    name_at, values_at = slot_of(buffer, 3)[2], slot_of(buffer, 3)[6]
    buffer[name_at : name_at + 3] = b"XYZ"
    struct.pack_into("<q", buffer, values_at, -424242)
    assert bytes(name) == b"XYZ" + before[3:]
    assert values[0] == -424242
    # bytes() made a copy before the writes, and that copy kept the old name.
    assert before[:3] != b"XYZ"


def test_header_is_sixteen_bytes_like_the_seeds(buffer, message):
    # The seed's first field sits at &buffer[16]; here the slots start there and the first
    # record's name directly follows the last slot.
    assert HEADER.size == 16
    assert slot_of(buffer, 0)[2] == HEADER.size + SLOT.size * len(message["records"])


@pytest.mark.parametrize("payload_bytes", [100, 10240, 1048576])
def test_zero_copy_reads_the_same_records_as_json(payload_bytes):
    message = records.make_message(payload_bytes)
    from_json = json.loads(records.json_bytes(message))
    assert from_json == message
    assert formats.codec("zero_copy").to_python(zero_copy.encode(message)) == from_json
    # And field by field through the lazy RecordView, the path read_one takes.
    reader = MessageReader(zero_copy.encode(message))
    for index in (0, len(reader) // 2, len(reader) - 1):
        expected, got = from_json["records"][index], reader.record(index)
        assert (got.id, got.score, str(got.name, "utf-8"), str(got.email, "utf-8"), got.values.tolist()) == (
            expected["id"],
            expected["score"],
            expected["name"],
            expected["email"],
            expected["values"],
        )


def test_one_field_and_all_fields_agree_with_json(message):
    json_codec, zc = formats.codec("json_stdlib"), formats.codec("zero_copy")
    as_json, as_zc = json_codec.encode(message), zc.encode(message)
    assert str(zc.read_one(as_zc), "utf-8") == json_codec.read_one(as_json)
    # The checksums differ only where strings are counted: bytes (UTF-8) here, characters in json.
    utf8_extra = sum(len(r[key].encode()) - len(r[key]) for r in message["records"] for key in ("name", "email"))
    assert utf8_extra > 0  # the message has non-ASCII names, so the two counts are really compared
    assert zc.read_all(as_zc) == pytest.approx(json_codec.read_all(as_json) + utf8_extra)


def test_sizes_follow_the_payload_parameter():
    sizes = {n: len(records.json_bytes(records.make_message(n))) for n in (100, 10240, 1048576)}
    assert sizes[100] < 200  # one record, the least a message has
    assert 0.97 * 10240 <= sizes[10240] <= 10240
    assert 0.99 * 1048576 <= sizes[1048576] <= 1048576
    assert records.make_message(10240) == records.make_message(10240)  # deterministic


@pytest.mark.parametrize(
    "damage, message_part",
    [
        (lambda b: b.__setitem__(slice(0, 4), b"JSON"), "not a ZCS1"),
        (lambda b: b.__delitem__(slice(len(b) - 1, len(b))), "the buffer has"),
        (lambda b: struct.pack_into("<I", b, HEADER.size + 16, 1 << 30), "runs past"),
    ],
)
def test_broken_buffers_are_refused(buffer, damage, message_part):
    damage(buffer)
    with pytest.raises(LayoutError, match=message_part):
        reader = MessageReader(buffer)
        _ = reader.record(0).name  # reading the field is what fails
    with pytest.raises(LayoutError, match=message_part):
        list(MessageReader(buffer).records())


def test_bench_prints_only_json_values_that_the_harness_parses():
    # A real pyperf.Runner run: two worker processes, no calibration (--loops is given).
    command = [
        sys.executable,
        str(WORKLOAD / "bench.py"),
        "--codec",
        "zero_copy",
        "--payload-bytes",
        "100",
        "--fields",
        "one",
        "--processes",
        "2",
        "--values",
        "2",
        "--warmups",
        "1",
        "--loops",
        "50",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result = parse_json_values(done.stdout, "bench.py")
    assert len(result.seconds) == 4  # 2 processes x 2 values; warm-ups are not printed
    assert result.units == 4 * 50
    assert all(0 < value < 0.01 for value in result.seconds)
    assert "Mean +- std dev" in done.stderr  # pyperf's own report went to stderr


def test_experiment_commands_name_the_codecs_bench_knows():
    spec = yaml.safe_load(EXPERIMENT.read_text())
    for name, variant in spec["variants"].items():
        command = variant["load"]["command"]
        assert command[command.index("--codec") + 1] == name
        assert name in formats.CODECS
    for pair in spec["pairs"]:
        assert pair["baseline"] == "json_stdlib"
        assert pair["name"] == f"{pair['treatment']}_vs_json"
