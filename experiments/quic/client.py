"""One client for both sides of the QUIC experiment: HTTP/2 on TLS/TCP or HTTP/3 on QUIC/UDP.

    python client.py --proto h2|h3 --host ADDR --port PORT --size N
                     [--requests R] [--batch-bytes B] [--concurrency C] [--repeats K] [--timeout S]

Opens one connection, then K times: GET /bytes/N, R requests (fewer if R * N > B, so that
large objects keep a batch short), at most C in flight at once (a new request goes out when
one completes). Each batch prints one json_values line,
{"value": seconds per request, "units": R, "errors": E}, timed from the first request to the
last response's end (the handshake is outside the timing; it goes to stderr). At the end:
{"client_cpu_seconds": x}, the process's whole user + system CPU time.

The two protocols share everything but the protocol object: the same asyncio loop, the same
request driver, the same flow-control windows (--stream-window, --connection-window), the
same way of sending (requests made while a received batch is handled go out together after
it). h2 runs the `h2` state machine over an asyncio TLS transport (kernel TCP, OpenSSL
records); h3 runs aioquic's QUIC and HTTP/3 over a UDP socket (encryption per packet). A
response counts as an error unless its status is 200 and its body has exactly N bytes. The
server's certificate is self-signed and made per run, so it is not verified.
"""

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import ssl
import sys
import time
from typing import Callable

import h2.config
import h2.connection
import h2.events
import h2.settings
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3 import events as h3_events
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated

Done = Callable[[bool], None]  # called once per request: True when it succeeded


class _Response:
    __slots__ = ("expected", "on_done", "status", "received")

    def __init__(self, expected: int, on_done: Done) -> None:
        self.expected, self.on_done, self.status, self.received = expected, on_done, None, 0

    def finish(self) -> None:
        self.on_done(self.status == 200 and self.received == self.expected)


def _status(headers) -> int | None:
    for name, value in headers:
        if name == b":status":
            return int(value)
    return None


class H2Client(asyncio.Protocol):
    """HTTP/2 over the TLS transport asyncio gives; responses are counted, not kept."""

    def __init__(self, authority: str, stream_window: int, connection_window: int) -> None:
        self.authority = authority.encode("ascii")
        self.stream_window, self.connection_window = stream_window, connection_window
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.responses: dict[int, _Response] = {}
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()  # why it closed

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.stream_window,
            },
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(self.connection_window - 65535)
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def request(self, path: str, expected: int, on_done: Done) -> None:
        stream_id = self.h2.get_next_available_stream_id()
        self.responses[stream_id] = _Response(expected, on_done)
        self.h2.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", self.authority),
                (b":path", path.encode("ascii")),
            ],
            end_stream=True,
        )

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.responses[event.stream_id].status = _status(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.responses[event.stream_id].received += len(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.responses.pop(event.stream_id).finish()
            elif isinstance(event, h2.events.StreamReset):
                response = self.responses.pop(event.stream_id, None)
                if response is not None:
                    response.on_done(False)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._lose(f"GOAWAY from the server (error code {event.error_code})")
        self.flush()

    def connection_lost(self, exc) -> None:
        self._lose(f"connection closed ({exc})" if exc else "connection closed")

    def _lose(self, why: str) -> None:
        if not self.lost.done():
            self.lost.set_result(why)

    def close(self) -> None:
        self.h2.close_connection()
        self.flush()
        self.transport.close()


class H3Client(QuicConnectionProtocol):
    """HTTP/3 over aioquic. Each time the socket is readable it takes every datagram waiting
    (up to DRAIN_LIMIT), then handles the events and sends once, as the TLS transport on the
    h2 side hands over all the bytes that are waiting in one call: asyncio's own UDP transport
    would give one datagram per event-loop turn and send after each."""

    DRAIN_LIMIT = 64

    def __init__(self, quic: QuicConnection, sock: socket.socket) -> None:
        super().__init__(quic)
        self.sock = sock
        self.h3 = H3Connection(self._quic)
        self.responses: dict[int, _Response] = {}
        self.authority = b""
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr) -> None:
        self._quic.receive_datagram(data, addr, now=self._loop.time())
        for _ in range(self.DRAIN_LIMIT):
            try:
                data, addr = self.sock.recvfrom(65536)
            except OSError:  # nothing waiting (EAGAIN), or an ICMP error the next read reports again
                break
            self._quic.receive_datagram(data, addr, now=self._loop.time())
        self._process_events()  # QuicConnectionProtocol's: handshake waiters, then quic_event_received
        self.transmit()

    def flush(self) -> None:
        self.transmit()

    def request(self, path: str, expected: int, on_done: Done) -> None:
        stream_id = self._quic.get_next_available_stream_id()
        self.responses[stream_id] = _Response(expected, on_done)
        self.h3.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", self.authority),
                (b":path", path.encode("ascii")),
            ],
            end_stream=True,
        )

    def quic_event_received(self, event) -> None:
        if isinstance(event, ConnectionTerminated):
            if not self.lost.done():
                self.lost.set_result(f"QUIC connection closed ({event.reason_phrase or event.error_code})")
            return
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, h3_events.HeadersReceived):
                response = self.responses[h3_event.stream_id]
                response.status = _status(h3_event.headers)
                if h3_event.stream_ended:
                    self.responses.pop(h3_event.stream_id).finish()
            elif isinstance(h3_event, h3_events.DataReceived):
                response = self.responses[h3_event.stream_id]
                response.received += len(h3_event.data)
                if h3_event.stream_ended:
                    self.responses.pop(h3_event.stream_id).finish()


async def run_batch(
    client, path: str, expected: int, requests: int, concurrency: int, timeout: float
) -> tuple[float, int, str | None]:
    """Send `requests` GETs with at most `concurrency` in flight: (seconds, errors, why it
    stopped early or None). Requests that never completed count as errors."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    state = {"issued": 0, "done": 0, "errors": 0}

    def on_done(ok: bool) -> None:
        state["done"] += 1
        state["errors"] += not ok
        if state["issued"] < requests:
            issue()
        elif state["done"] == requests and not finished.done():
            finished.set_result(None)

    def issue() -> None:
        state["issued"] += 1
        client.request(path, expected, on_done)

    start = time.perf_counter()
    for _ in range(min(concurrency, requests)):
        issue()
    client.flush()
    await asyncio.wait({finished, client.lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    elapsed = time.perf_counter() - start
    if finished.done():
        return elapsed, state["errors"], None
    why = client.lost.result() if client.lost.done() else f"timeout after {timeout:g} s"
    return (
        elapsed,
        state["errors"] + requests - state["done"],
        f"{state['done']} of {requests} requests done, then {why}",
    )


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def requests_per_batch(args) -> int:
    """--requests, fewer when they would move more than --batch-bytes (never below --concurrency)."""
    if args.size * args.requests <= args.batch_bytes:
        return args.requests
    return max(args.concurrency, args.batch_bytes // max(args.size, 1))


async def run_batches(client, args) -> int:
    path = f"/bytes/{args.size}"
    requests = requests_per_batch(args)
    for batch in range(args.repeats):
        cpu_before = time.process_time()
        seconds, errors, stopped = await run_batch(client, path, args.size, requests, args.concurrency, args.timeout)
        cpu = time.process_time() - cpu_before
        emit({"value": seconds / requests, "units": requests, "errors": errors})
        if stopped:
            # Reported with its errors (a validity gate then rejects the trial); no more batches.
            print(f"batch {batch}: {stopped}", file=sys.stderr)
            return 1
        print(
            f"batch {batch}: {requests} requests, {requests / seconds:.1f} req/s, "
            f"{requests * args.size / seconds / 2**20:.1f} MiB/s, client CPU {cpu:.3f} s of {seconds:.3f} s",
            file=sys.stderr,
        )
    return 0


def udp_drops(port: int) -> int | None:
    """Datagrams the kernel dropped on the UDP sockets bound to `port` on this host (full buffers)."""
    total, found = 0, False
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as rows:
                next(rows)
                for row in rows:
                    fields = row.split()
                    if int(fields[1].rsplit(":", 1)[1], 16) == port:
                        total, found = total + int(fields[-1]), True
        except OSError:
            continue
    return total if found else None


async def main_h2(args) -> int:
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    started = time.perf_counter()
    transport, client = await loop.create_connection(
        lambda: H2Client(f"{args.host}:{args.port}", args.stream_window, args.connection_window),
        args.host,
        args.port,
        ssl=context,
        server_hostname="localhost",
    )
    protocol = transport.get_extra_info("ssl_object")
    print(
        f"h2: connected in {time.perf_counter() - started:.4f} s, {protocol.version()} {protocol.cipher()[0]}, "
        f"ALPN {protocol.selected_alpn_protocol()}",
        file=sys.stderr,
    )
    if protocol.selected_alpn_protocol() != "h2":
        print("h2: the server did not agree to HTTP/2", file=sys.stderr)
        return 1
    try:
        return await run_batches(client, args)
    finally:
        client.close()


@contextlib.asynccontextmanager
async def connect_h3(host: str, port: int, configuration: QuicConfiguration):
    """Like aioquic.asyncio.client.connect, but the protocol keeps the socket to drain it."""
    loop = asyncio.get_running_loop()
    family, _, _, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    transport, client = await loop.create_datagram_endpoint(
        lambda: H3Client(QuicConnection(configuration=configuration), sock), sock=sock
    )
    try:
        client.connect(address)
        await client.wait_connected()
        yield client
    finally:
        client.close()
        await client.wait_closed()
        transport.close()


async def main_h3(args) -> int:
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        verify_mode=ssl.CERT_NONE,
        server_name="localhost",
        max_data=args.connection_window,
        max_stream_data=args.stream_window,
    )
    started = time.perf_counter()
    async with connect_h3(args.host, args.port, configuration) as client:
        client.authority = f"{args.host}:{args.port}".encode("ascii")
        tls = client._quic.tls
        print(
            f"h3: connected in {time.perf_counter() - started:.4f} s, "
            f"cipher suite {tls.key_schedule.cipher_suite.name}, "
            f"congestion control {configuration.congestion_control_algorithm}, "
            f"max datagram {configuration.max_datagram_size} B",
            file=sys.stderr,
        )
        local_port = client.sock.getsockname()[1]
        try:
            return await run_batches(client, args)
        finally:
            # The server's count is there only when it runs on this host.
            print(
                f"h3: UDP datagrams dropped by the kernel: client socket {udp_drops(local_port)}, "
                f"server socket {udp_drops(args.port)}",
                file=sys.stderr,
            )


def runnable_wait_seconds() -> float | None:
    """Seconds this process's threads spent runnable but not running (/proc schedstat)."""
    try:
        total = 0
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[1])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        return None


def parse_size(text: str) -> int:
    units = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto", choices=["h2", "h3"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=parse_size, required=True, help="response body bytes (or 1KiB, 1MiB)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per batch")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (streams)")
    parser.add_argument(
        "--batch-bytes",
        type=parse_size,
        default=64 * 2**20,
        help="fewer requests per batch when --requests would move more than this",
    )
    parser.add_argument("--repeats", type=int, default=3, help="batches, one value each")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one batch may take")
    parser.add_argument("--stream-window", type=parse_size, default=16 * 2**20)
    parser.add_argument("--connection-window", type=parse_size, default=64 * 2**20)
    args = parser.parse_args()
    if min(args.requests, args.concurrency, args.repeats) < 1 or args.size < 0:
        parser.error("--requests, --concurrency and --repeats must be at least 1")
    try:
        status = asyncio.run(main_h2(args) if args.proto == "h2" else main_h3(args))
    except (OSError, asyncio.TimeoutError) as failure:
        print(f"{args.proto}: {failure}", file=sys.stderr)
        status = 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    emit({"client_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 6)})
    waited = runnable_wait_seconds()
    if waited is not None:
        # Time the client was ready to run but another process had its CPU: a busy host.
        print(f"{args.proto}: client waited {waited:.3f} s for a CPU", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
