"""HTTP/1.1 reverse proxy in N worker processes, in one of two architectures.

  --mode handoff    one process accepts on the only listening socket and passes
                    each accepted connection to a worker (SCM_RIGHTS over a Unix
                    socket pair, round robin): the shared-accept baseline.
  --mode reuseport  every worker has its own SO_REUSEPORT listening socket and
                    accepts for itself; the kernel spreads connections by hash:
                    shared-nothing. --pin pins worker i to CPU i mod the CPUs
                    this process may use.

Workers forward each client request to --backend and relay the response. With
--backend-keepalive on a worker keeps idle backend connections for reuse; with
off every request opens a backend connection and asks it to close
(Connection: close). Only what the experiment needs of HTTP/1.1 is handled:
bodies with Content-Length (or until close, from the backend); chunked bodies
get 501/502.

SIGTERM (the harness signals the whole process group) ends every process; the
parent also ends the workers itself, and exits 1 if a worker dies on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys

BACKLOG = 4096
HEADER_LIMIT = 64 * 1024
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}


class BadMessage(Exception):
    """The peer sent something this proxy does not handle."""


def parse_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Split a header block into its first line and (lower-cased name, value) pairs."""
    lines = head.split(b"\r\n")
    fields = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise BadMessage(f"malformed header line {line[:80]!r}")
        fields.append((name.strip().lower(), value.strip()))
    return lines[0], fields


def field(fields: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in fields:
        if key == name:
            return value
    return None


def content_length(fields: list[tuple[bytes, bytes]]) -> int | None:
    value = field(fields, b"content-length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise BadMessage(f"bad Content-Length {value!r}") from None
    if length < 0:
        raise BadMessage(f"bad Content-Length {value!r}")
    return length


def build_head(first_line: bytes, fields: list[tuple[bytes, bytes]], extra: bytes = b"") -> bytes:
    """The header block without hop-by-hop fields, plus `extra` header lines."""
    lines = [first_line]
    lines += [name + b": " + value for name, value in fields if name not in HOP_BY_HOP]
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


class Worker:
    """One process's proxy: client connections in, backend connections out."""

    def __init__(self, backend: tuple[str, int], keepalive: bool):
        self.backend = backend
        self.keepalive = keepalive
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self.relay_one(reader, writer):
                pass
        except (BadMessage, asyncio.LimitOverrunError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def relay_one(self, reader, writer) -> bool:
        """Relay one request and its response; return whether the client connection stays open."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # the client closed between requests
        request_line, fields = parse_head(head[:-4])
        version = request_line.rsplit(b" ", 1)[-1]
        connection = (field(fields, b"connection") or b"").lower()
        client_keeps = version == b"HTTP/1.1" and b"close" not in connection
        if b"chunked" in (field(fields, b"transfer-encoding") or b"").lower():
            writer.write(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return False
        body = await reader.readexactly(content_length(fields) or 0)
        extra = b"" if self.keepalive else b"Connection: close\r\n"
        request = build_head(request_line, fields, extra) + body
        try:
            status_head, response_fields, response_body, backend_keeps = await self.exchange(request)
        except (BadMessage, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return False
        extra = b"" if client_keeps else b"Connection: close\r\n"
        writer.write(build_head(status_head, response_fields, extra) + response_body)
        await writer.drain()
        return client_keeps

    async def exchange(self, request: bytes):
        """Send a request to the backend and read the whole response. A pooled
        connection the backend closed meanwhile is dropped and the request retried
        once on a new connection."""
        if self.idle:
            try:
                return await self.exchange_on(request, *self.idle.pop())
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
        return await self.exchange_on(request, *await asyncio.open_connection(*self.backend))

    async def exchange_on(self, request: bytes, backend_reader, backend_writer):
        try:
            backend_writer.write(request)
            await backend_writer.drain()
            head = await backend_reader.readuntil(b"\r\n\r\n")
            status_line, fields = parse_head(head[:-4])
            if b"chunked" in (field(fields, b"transfer-encoding") or b"").lower():
                raise BadMessage("chunked response")
            length = content_length(fields)
            body = await backend_reader.read() if length is None else await backend_reader.readexactly(length)
            connection = (field(fields, b"connection") or b"").lower()
            reusable = self.keepalive and length is not None and b"close" not in connection
        except BaseException:
            backend_writer.close()
            raise
        if reusable:
            self.idle.append((backend_reader, backend_writer))
        else:
            backend_writer.close()
        return status_line, fields, body, reusable


def make_listener(bind: str, port: int, reuseport: bool) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((bind, port))
    listener.listen(BACKLOG)
    return listener


async def run_reuseport_worker(listener: socket.socket, worker: Worker) -> None:
    server = await asyncio.start_server(worker.serve_client, sock=listener, limit=HEADER_LIMIT)
    async with server:
        await server.serve_forever()


async def run_handoff_worker(channel: socket.socket, worker: Worker) -> None:
    """Serve the connections the acceptor passes over `channel` until it closes."""
    loop = asyncio.get_running_loop()
    closed = loop.create_future()
    tasks = set()

    def receive():
        try:
            message, fds, _flags, _address = socket.recv_fds(channel, 16, 64)
        except BlockingIOError:
            return
        if not message and not fds:
            if not closed.done():
                closed.set_result(None)  # the acceptor is gone
            return
        for fd in fds:
            task = loop.create_task(serve_passed(socket.socket(fileno=fd)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def serve_passed(connection: socket.socket):
        connection.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=connection, limit=HEADER_LIMIT)
        await worker.serve_client(reader, writer)

    channel.setblocking(False)
    loop.add_reader(channel.fileno(), receive)
    await closed


def start_worker(
    index: int, args, listener: socket.socket | None, channel: socket.socket | None, close_in_child: list[socket.socket]
) -> int:
    pid = os.fork()
    if pid:
        return pid
    # The child: default signal handling (SIGTERM ends it), only its own sockets.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    status = 0
    try:
        for other in close_in_child:
            other.close()
        if args.pin:
            cpus = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cpus[index % len(cpus)]})
        worker = Worker(parse_backend(args.backend), args.backend_keepalive == "on")
        if listener is not None:
            asyncio.run(run_reuseport_worker(listener, worker))
        else:
            asyncio.run(run_handoff_worker(channel, worker))
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # report, never return into the parent's code
        print(f"py_proxy worker {index}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        status = 1
    os._exit(status)


def parse_backend(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class Stop(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["handoff", "reuseport"], required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True, help="HOST:PORT of the HTTP server to forward to")
    parser.add_argument("--backend-keepalive", choices=["on", "off"], default="on")
    parser.add_argument("--pin", action="store_true", help="pin worker i to CPU i mod the usable CPUs")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    parse_backend(args.backend)

    stopping = False
    reason = []

    def on_signal(signum, _frame):
        if not stopping:
            reason.append(signal.Signals(signum).name)
            raise Stop()

    # Installed before forking, reset in each child: no window without a handler.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGCHLD, on_signal)

    pids: list[int] = []
    status = 0
    try:
        if args.mode == "reuseport":
            # Every socket listens before any worker runs: a socket that joined the
            # group late would miss the load generator's connections, opened at once.
            listeners = [make_listener(args.bind, args.port, True) for _ in range(args.workers)]
            for i, listener in enumerate(listeners):
                pids.append(start_worker(i, args, listener, None, [s for s in listeners if s is not listener]))
            for listener in listeners:
                listener.close()
            while True:
                signal.pause()
        else:
            listener = make_listener(args.bind, args.port, False)
            channels = []
            for i in range(args.workers):
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                pids.append(start_worker(i, args, None, theirs, [listener, ours] + [c for c, _ in channels]))
                theirs.close()
                channels.append((ours, theirs))
            next_worker = 0
            while True:
                connection, _address = listener.accept()
                try:
                    socket.send_fds(channels[next_worker][0], [b"c"], [connection.fileno()])
                finally:
                    connection.close()
                next_worker = (next_worker + 1) % len(channels)
    except Stop:
        if reason[0] == "SIGCHLD":
            print("py_proxy: a worker exited; stopping", file=sys.stderr, flush=True)
            status = 1
    finally:
        stopping = True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
