"""The binary frame shared by rpc_server.py and rpc_client.py.

The seed (shared/seed/000_9b7c13862b3e8389.txt, line 124, section 3.2 "二进制协议设计")
names the header fields only: "高效帧格式设计 (Magic + Version + Type + Length + Seq)".
It gives no widths or byte order, so these are our choice, network byte order:

    offset  size  field
    0       4     magic    0x52504331 ("RPC1")
    4       1     version  1
    5       1     type     CALL / REPLY / BATCH_CALL / BATCH_REPLY / ERROR
    6       4     length   payload bytes after the header
    10      4     seq      request sequence number; a response repeats its request's

Payloads (the one remote procedure is add(a, b) on signed 64-bit ints):
    CALL         a:i64 b:i64                      (the call id is the header's seq)
    REPLY        sum:i64
    BATCH_CALL   count:u32, count x (call_id:u32 a:i64 b:i64)
    BATCH_REPLY  count:u32, count x (call_id:u32 sum:i64)
    ERROR        UTF-8 text
"""

import socket
import struct

MAGIC = 0x52504331
VERSION = 1

CALL = 1
REPLY = 2
BATCH_CALL = 3
BATCH_REPLY = 4
ERROR = 5

HEADER = struct.Struct("!IBBII")
CALL_ARGS = struct.Struct("!qq")
RESULT = struct.Struct("!q")
COUNT = struct.Struct("!I")
BATCH_ENTRY = struct.Struct("!Iqq")
BATCH_RESULT = struct.Struct("!Iq")

# A batch of 2**20 calls is 20 MiB; anything larger is a corrupt length field.
MAX_PAYLOAD = 1 << 25

INT64_MASK = (1 << 64) - 1


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame, or closed mid-frame."""


def add(a: int, b: int) -> int:
    """The remote procedure: 64-bit two's-complement addition (wraps like a native add)."""
    total = (a + b) & INT64_MASK
    return total - (1 << 64) if total >= 1 << 63 else total


def frame(message_type: int, seq: int, payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, VERSION, message_type, len(payload), seq) + payload


class FrameReader:
    """Reads whole frames from a socket through one reusable receive buffer."""

    def __init__(self, sock: socket.socket, buffer_size: int = 1 << 16) -> None:
        self.sock = sock
        self.buffer = bytearray(buffer_size)
        self.start = 0
        self.end = 0

    def _fill(self, needed: int) -> bool:
        """Ensure `needed` bytes are buffered; False on a clean EOF before any of them."""
        if self.end - self.start >= needed:
            return True
        if self.start:
            remaining = self.end - self.start
            self.buffer[:remaining] = self.buffer[self.start : self.end]
            self.start, self.end = 0, remaining
        if needed > len(self.buffer):
            self.buffer.extend(bytes(needed - len(self.buffer)))
        view = memoryview(self.buffer)
        while self.end < needed:
            n = self.sock.recv_into(view[self.end :])
            if n == 0:
                if self.end == 0:
                    return False
                raise FrameError(f"connection closed after {self.end} of {needed} bytes")
            self.end += n
        return True

    def read(self) -> tuple[int, int, bytes] | None:
        """The next (type, seq, payload), or None when the peer closed between frames."""
        if not self._fill(HEADER.size):
            return None
        magic, version, message_type, length, seq = HEADER.unpack_from(self.buffer, self.start)
        if magic != MAGIC:
            raise FrameError(f"bad magic 0x{magic:08x}")
        if version != VERSION:
            raise FrameError(f"unsupported version {version}")
        if length > MAX_PAYLOAD:
            raise FrameError(f"payload length {length} exceeds {MAX_PAYLOAD}")
        self.start += HEADER.size
        if not self._fill(length):
            raise FrameError("connection closed after a header")
        payload = bytes(self.buffer[self.start : self.start + length])
        self.start += length
        return message_type, seq, payload
