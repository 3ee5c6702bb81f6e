"""Minimal HTTP/1.1 keep-alive server on an asyncio event loop.

--loop asyncio    the standard library's default loop (selector: epoll on Linux)
--loop uringcore  uringcore's io_uring event loop (PyPI `uringcore`; its only
                  wheels are for CPython 3.13, see README of this folder)

The protocol code is the same for both loops, so the difference measured is
the loop's. It mirrors http_server.c: a request ends at "\\r\\n\\r\\n" (no
request bodies), pipelined requests are answered in order with one write,
a partial request waits for more bytes, "Connection: close" or HTTP/1.0
closes after the response. SIGTERM ends the server with exit status 0.
"""

import argparse
import asyncio
import signal
import sys

MAX_HEADER = 8192  # a request header larger than this closes the connection
# uringcore 0.9.1 panics on a single write larger than its 64 KiB send buffer
# ("copy_from_slice: source slice length ... does not match"), so larger
# writes go out in pieces; the asyncio loop gets the same pieces.
WRITE_CHUNK = 65536


def build_response(size: int) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\nServer: bench\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {size}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("ascii") + b"x" * size


def wants_close(header: bytes) -> bool:
    request_line, _, rest = header.partition(b"\r\n")
    if request_line.endswith(b"HTTP/1.0"):
        return True
    return any(line.lower().startswith(b"connection: close") for line in rest.split(b"\r\n"))


class HttpProtocol(asyncio.Protocol):
    response = b""
    served = 0

    def __init__(self):
        self.transport = None
        self.pending = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        buf = self.pending + data if self.pending else data
        count, pos, close = 0, 0, False
        while True:
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            count += 1
            if wants_close(buf[pos:end]):
                close = True
                pos = len(buf)  # anything after a closing request is ignored
                break
            pos = end + 4
        self.pending = buf[pos:]
        if count:
            out = self.response * count if count > 1 else self.response
            if len(out) <= WRITE_CHUNK:
                self.transport.write(out)
            else:
                for i in range(0, len(out), WRITE_CHUNK):
                    self.transport.write(out[i : i + WRITE_CHUNK])
            HttpProtocol.served += count
        if close or len(self.pending) >= MAX_HEADER:
            self.transport.close()


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "uringcore":
        import uringcore  # imported here: the asyncio variant must not need it

        return uringcore.UringEventLoop()
    raise SystemExit(f"unknown --loop {name!r}: use asyncio or uringcore")


async def serve(bind: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    server = await loop.create_server(HttpProtocol, bind, port, reuse_address=True, backlog=4096)
    try:
        await stop
    finally:
        server.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uringcore"], required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--size", type=int, default=64, help="response body bytes")
    args = parser.parse_args(argv)
    HttpProtocol.response = build_response(args.size)
    loop = new_loop(args.loop)
    print(
        f"http_server.py: {args.loop} loop ({type(loop).__name__}) on {args.bind}:{args.port}, body {args.size} bytes",
        file=sys.stderr,
        flush=True,
    )
    try:
        loop.run_until_complete(serve(args.bind, args.port))
    finally:
        loop.close()
    print(f"http_server.py: served {HttpProtocol.served} requests", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
