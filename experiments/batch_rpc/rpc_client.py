"""Load generator for rpc_server.py: N add() calls, B per round trip, every reply checked.

    python3 rpc_client.py --host ADDR --port PORT --calls N --batch B [--repeats R]
                          [--max-seconds S]

--batch 1 sends one CALL frame and waits for its REPLY before the next call. --batch B > 1
sends BATCH_CALL frames of B calls (the last one smaller when B does not divide N) and waits
for each BATCH_REPLY. One connection carries all repeats; each repeat makes N calls and prints
one json_values line, seconds per call over the whole repeat (encode, round trip, verify):

    {"value": 2.1e-05, "units": 10000, "errors": 0}

(--max-seconds S ends a repeat at the first round trip that starts after S seconds; "units"
then says how many calls the value covers.)

then, last, this process's own CPU time: {"client_cpu_seconds": 1.23}.
A reply with the wrong type, sequence number, call id or sum counts as an error for each
call it covers. A connection that breaks or an ERROR frame from the server ends the run
with status 1 and a message on stderr.
"""

import argparse
import json
import os
import socket
import sys
import time

from rpc_frame import (
    BATCH_CALL,
    BATCH_ENTRY,
    BATCH_REPLY,
    BATCH_RESULT,
    CALL,
    CALL_ARGS,
    COUNT,
    ERROR,
    HEADER,
    MAGIC,
    REPLY,
    RESULT,
    VERSION,
    FrameError,
    FrameReader,
    add,
)

SEQ_MASK = 0xFFFFFFFF


def operands(call_id: int) -> tuple[int, int]:
    # Distinct per call, negative half the time, so a reply meant for another call is caught.
    return call_id * 1_000_003, 7 - call_id * 3


def read_reply(reader: FrameReader) -> tuple[int, int, bytes]:
    reply = reader.read()
    if reply is None:
        raise FrameError("server closed the connection")
    if reply[0] == ERROR:
        raise FrameError("server error: " + reply[2].decode("utf-8", "replace"))
    return reply


def run_single(sock: socket.socket, reader: FrameReader, first_id: int, calls: int, deadline: float) -> tuple[int, int]:
    """(calls made, errors); after the first call, stops once perf_counter() passes deadline."""
    errors = 0
    for call_id in range(first_id, first_id + calls):
        if call_id > first_id and time.perf_counter() > deadline:
            return call_id - first_id, errors
        seq = call_id & SEQ_MASK
        a, b = operands(call_id)
        sock.sendall(HEADER.pack(MAGIC, VERSION, CALL, CALL_ARGS.size, seq) + CALL_ARGS.pack(a, b))
        message_type, reply_seq, payload = read_reply(reader)
        if (
            message_type != REPLY
            or reply_seq != seq
            or len(payload) != RESULT.size
            or RESULT.unpack(payload)[0] != add(a, b)
        ):
            errors += 1
    return calls, errors


def run_batched(
    sock: socket.socket,
    reader: FrameReader,
    first_id: int,
    calls: int,
    batch: int,
    first_frame_seq: int,
    deadline: float,
) -> tuple[int, int]:
    """(calls made, errors); stops early, between batches, once perf_counter() passes deadline."""
    errors = 0
    for frame_seq, batch_start in enumerate(range(first_id, first_id + calls, batch), start=first_frame_seq):
        if batch_start > first_id and time.perf_counter() > deadline:
            return batch_start - first_id, errors
        count = min(batch, first_id + calls - batch_start)
        seq = frame_seq & SEQ_MASK
        request = bytearray(HEADER.size + COUNT.size + count * BATCH_ENTRY.size)
        HEADER.pack_into(request, 0, MAGIC, VERSION, BATCH_CALL, len(request) - HEADER.size, seq)
        COUNT.pack_into(request, HEADER.size, count)
        expected = []
        offset = HEADER.size + COUNT.size
        for call_id in range(batch_start, batch_start + count):
            a, b = operands(call_id)
            BATCH_ENTRY.pack_into(request, offset, call_id & SEQ_MASK, a, b)
            expected.append((call_id & SEQ_MASK, add(a, b)))
            offset += BATCH_ENTRY.size
        sock.sendall(request)
        message_type, reply_seq, payload = read_reply(reader)
        if (
            message_type != BATCH_REPLY
            or reply_seq != seq
            or len(payload) < COUNT.size
            or COUNT.unpack_from(payload)[0] != count
            or len(payload) != COUNT.size + count * BATCH_RESULT.size
        ):
            errors += count
            continue
        offset = COUNT.size
        for want in expected:
            if BATCH_RESULT.unpack_from(payload, offset) != want:
                errors += 1
            offset += BATCH_RESULT.size
    return calls, errors


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--calls", type=positive, required=True, help="calls per repeat")
    parser.add_argument("--batch", type=positive, default=1, help="calls per round trip")
    parser.add_argument("--repeats", type=positive, default=1, help="measured repeats to print")
    parser.add_argument(
        "--max-seconds",
        type=positive_seconds,
        default=None,
        help="end a repeat early after this long and report the calls made "
        "(keeps a run bounded when a link delay makes round trips slow)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for any one reply before giving up"
    )
    args = parser.parse_args()

    try:
        sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
    except OSError as error:
        print(f"rpc_client: cannot connect to {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = FrameReader(sock)
        next_id, next_frame = 1, 1
        try:
            for _ in range(args.repeats):
                started = time.perf_counter()
                deadline = started + args.max_seconds if args.max_seconds else float("inf")
                if args.batch == 1:
                    made, errors = run_single(sock, reader, next_id, args.calls, deadline)
                else:
                    made, errors = run_batched(sock, reader, next_id, args.calls, args.batch, next_frame, deadline)
                    next_frame += -(-made // args.batch)
                elapsed = time.perf_counter() - started
                next_id += made
                print(json.dumps({"value": elapsed / made, "units": made, "errors": errors}), flush=True)
        except (FrameError, OSError) as error:
            print(f"rpc_client: {error}", file=sys.stderr)
            return 1
    times = os.times()
    print(json.dumps({"client_cpu_seconds": round(times.user + times.system, 6)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
