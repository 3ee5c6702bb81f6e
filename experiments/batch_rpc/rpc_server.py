"""A TCP RPC server speaking the seed's binary frame (see rpc_frame.py).

    python3 rpc_server.py --bind ADDR --port PORT

One thread per connection. A CALL frame gets one REPLY frame; a BATCH_CALL frame of N calls
gets one BATCH_REPLY frame holding N results. Each call in a batch is decoded, executed and
encoded on its own, as a dispatcher would, so a batch saves round trips and frame headers but
not per-call work. SIGTERM (or SIGINT) closes the listener and exits with status 0.
"""

import argparse
import contextlib
import signal
import socket
import sys
import threading

from rpc_frame import (
    BATCH_CALL,
    BATCH_ENTRY,
    BATCH_REPLY,
    BATCH_RESULT,
    CALL,
    CALL_ARGS,
    COUNT,
    ERROR,
    REPLY,
    RESULT,
    FrameError,
    FrameReader,
    add,
    frame,
)


def execute_batch(payload: bytes) -> bytes:
    if len(payload) < COUNT.size:
        raise FrameError("batch payload shorter than its count")
    (count,) = COUNT.unpack_from(payload, 0)
    if len(payload) != COUNT.size + count * BATCH_ENTRY.size:
        raise FrameError(f"batch of {count} calls has {len(payload)} payload bytes")
    reply = bytearray(COUNT.size + count * BATCH_RESULT.size)
    COUNT.pack_into(reply, 0, count)
    offset_in, offset_out = COUNT.size, COUNT.size
    for _ in range(count):
        call_id, a, b = BATCH_ENTRY.unpack_from(payload, offset_in)
        BATCH_RESULT.pack_into(reply, offset_out, call_id, add(a, b))
        offset_in += BATCH_ENTRY.size
        offset_out += BATCH_RESULT.size
    return bytes(reply)


def serve_connection(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = FrameReader(conn)
        try:
            while (request := reader.read()) is not None:
                message_type, seq, payload = request
                if message_type == CALL and len(payload) == CALL_ARGS.size:
                    a, b = CALL_ARGS.unpack(payload)
                    conn.sendall(frame(REPLY, seq, RESULT.pack(add(a, b))))
                elif message_type == BATCH_CALL:
                    conn.sendall(frame(BATCH_REPLY, seq, execute_batch(payload)))
                else:
                    raise FrameError(f"unexpected message type {message_type} with {len(payload)} payload bytes")
        except FrameError as error:
            # Tell the client why, then drop the connection: the stream is out of step.
            with contextlib.suppress(OSError):
                conn.sendall(frame(ERROR, 0, str(error).encode()))
            print(f"rpc_server: {error}", file=sys.stderr, flush=True)
        except (ConnectionResetError, BrokenPipeError):
            pass


def stop(signum: int, _frame) -> None:
    raise SystemExit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with socket.create_server((args.bind, args.port), backlog=64) as listener:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve_connection, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
