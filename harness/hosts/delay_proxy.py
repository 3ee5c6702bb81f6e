"""A TCP (and UDP) forwarder that adds a fixed delay: the link delay where a kernel has no netem.

    python3 delay_proxy.py --listen ADDR:PORT --target ADDR:PORT --delay-ms D [--udp]

TCP: every accepted connection gets its own connection to the target. In each
direction every chunk read is released D ms after it arrived, in order; an end of
stream is passed on (as a half-close) D ms after it arrived too. Each direction
holds at most --buffer-bytes: when that is full the proxy stops reading, the
sender's TCP window closes, and back-pressure reaches the sender as on a slow link.

With --udp the proxy also forwards datagrams on the same port number: each one is
sent D ms after it arrived, from a socket of its own per client, so replies find
their way back (each also D ms late). Datagrams beyond --max-datagrams waiting are
dropped, as a full queue would.

A request and its answer both cross the proxy, so a round trip through it takes at
least 2 x D. SIGTERM or SIGINT stops it: it closes its listeners and connections
and exits 0. Standard library only, so any host's python3 (3.8+) runs this file.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import time

READ_SIZE = 64 * 1024
DEFAULT_BUFFER_BYTES = 4 * 1024 * 1024  # per direction of each connection
DEFAULT_MAX_DATAGRAMS = 65536  # waiting in all UDP delay lines together
MAX_UDP_CLIENTS = 1024
UDP_IDLE_SECONDS = 60.0
UDP_RECEIVES_PER_WAKEUP = 256


def parse_address(text: str) -> tuple[str, int]:
    """ADDR:PORT or [V6ADDR]:PORT -> (addr, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDR:PORT")
    return host.strip("[]"), int(port)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} delay_proxy: {message}", flush=True)


# --- TCP -------------------------------------------------------------------------


class TcpProxy:
    def __init__(self, target: tuple[str, int], delay: float, buffer_bytes: int):
        self.target = target
        self.delay = delay
        self.chunks = max(1, buffer_bytes // READ_SIZE)  # bounds the bytes held per direction
        self.connections: set[asyncio.Task] = set()
        self.accepted = 0

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        self.connections.add(task)
        peer = client_writer.get_extra_info("peername")
        try:
            try:
                target_reader, target_writer = await asyncio.open_connection(*self.target)
            except OSError as exc:
                log(f"{peer}: cannot connect to {self.target[0]}:{self.target[1]}: {exc}")
                client_writer.transport.abort()
                return
            writers = (client_writer, target_writer)
            pipes = [
                asyncio.ensure_future(self.pipe(client_reader, target_writer)),
                asyncio.ensure_future(self.pipe(target_reader, client_writer)),
            ]
            try:
                done, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
                failed = [task for task in done if task.exception() is not None]
                if failed:  # a reset on one side: drop both, as a broken path would
                    for task in pending:
                        task.cancel()
                    for writer in writers:
                        writer.transport.abort()
                else:
                    for writer in writers:
                        writer.close()
            finally:
                for task in pipes:
                    task.cancel()
                for writer in writers:
                    if not writer.transport.is_closing():
                        writer.transport.abort()
        finally:
            self.connections.discard(task)

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction: read, hold each chunk until it is due, write in order."""
        loop = asyncio.get_running_loop()
        line: asyncio.Queue = asyncio.Queue(self.chunks)

        async def take_in() -> None:
            try:
                while True:
                    chunk = await reader.read(READ_SIZE)
                    await line.put((loop.time() + self.delay, chunk))  # waits while the line is full
                    if not chunk:
                        return
            except OSError as exc:  # a reset: passed on after what was read before it
                await line.put((loop.time(), exc))

        intake = asyncio.ensure_future(take_in())
        try:
            while True:
                due, item = await line.get()
                if isinstance(item, Exception):
                    raise item
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not item:
                    if writer.can_write_eof():
                        writer.write_eof()
                    await writer.drain()
                    return
                writer.write(item)
                await writer.drain()
        finally:
            intake.cancel()


# --- UDP -------------------------------------------------------------------------


class UdpProxy:
    """Datagrams from clients to the target and back, each held `delay` seconds."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], delay: float, max_datagrams: int):
        self.loop = asyncio.get_running_loop()
        self.delay = delay
        self.max_datagrams = max_datagrams
        self.waiting = 0
        self.dropped = 0
        family, _, _, _, self.target = socket.getaddrinfo(*target, type=socket.SOCK_DGRAM)[0]
        self.target_family = family
        lfamily, _, _, _, address = socket.getaddrinfo(*listen, type=socket.SOCK_DGRAM)[0]
        self.front = socket.socket(lfamily, socket.SOCK_DGRAM)
        self.front.setblocking(False)
        self.front.bind(address)
        self.clients: dict = {}  # client address -> [upstream socket, last use]
        self.loop.add_reader(self.front.fileno(), self._from_clients)
        self.sweeper = self.loop.call_later(UDP_IDLE_SECONDS, self._sweep)

    def _later(self, send, *args) -> None:
        if self.waiting >= self.max_datagrams:
            self.dropped += 1
            return
        self.waiting += 1
        self.loop.call_at(self.loop.time() + self.delay, self._release, send, args)

    def _release(self, send, args) -> None:
        self.waiting -= 1
        try:
            send(*args)
        except OSError:  # a full socket buffer or an unreachable port: the datagram is lost, as on a link
            self.dropped += 1

    def _from_clients(self) -> None:
        for _ in range(UDP_RECEIVES_PER_WAKEUP):
            try:
                data, client = self.front.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self._later(self._to_target, client, data)

    def _to_target(self, client, data: bytes) -> None:
        entry = self.clients.get(client)
        if entry is None:
            if len(self.clients) >= MAX_UDP_CLIENTS:
                oldest = min(self.clients, key=lambda key: self.clients[key][1])
                self._forget(oldest)
            upstream = socket.socket(self.target_family, socket.SOCK_DGRAM)
            upstream.setblocking(False)
            upstream.connect(self.target)
            entry = self.clients[client] = [upstream, 0.0]
            self.loop.add_reader(upstream.fileno(), self._from_target, client, upstream)
        entry[1] = self.loop.time()
        entry[0].send(data)

    def _from_target(self, client, upstream: socket.socket) -> None:
        for _ in range(UDP_RECEIVES_PER_WAKEUP):
            try:
                data = upstream.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable from the target, reported on the next call
                continue
            self._later(self.front.sendto, data, client)

    def _forget(self, client) -> None:
        upstream, _ = self.clients.pop(client)
        self.loop.remove_reader(upstream.fileno())
        upstream.close()

    def _sweep(self) -> None:
        idle_since = self.loop.time() - UDP_IDLE_SECONDS
        for client in [key for key, (_, used) in self.clients.items() if used < idle_since]:
            self._forget(client)
        self.sweeper = self.loop.call_later(UDP_IDLE_SECONDS, self._sweep)

    def close(self) -> None:
        self.sweeper.cancel()
        for client in list(self.clients):
            self._forget(client)
        self.loop.remove_reader(self.front.fileno())
        self.front.close()


# --- main ------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> str:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stopped_by = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda sig=sig: (stopped_by.append(sig.name), stop.set()))
    delay = args.delay_ms / 1000
    tcp = TcpProxy(args.target, delay, args.buffer_bytes)
    server = await asyncio.start_server(tcp.handle, args.listen[0], args.listen[1], reuse_address=True)
    udp = UdpProxy(args.listen, args.target, delay, args.max_datagrams) if args.udp else None
    protocols = "tcp and udp" if udp else "tcp"
    log(
        f"listening on {args.listen[0]}:{args.listen[1]} ({protocols}), forwarding to "
        f"{args.target[0]}:{args.target[1]} {args.delay_ms:g} ms late"
    )
    await stop.wait()
    server.close()
    for task in list(tcp.connections):
        task.cancel()
    await asyncio.gather(*tcp.connections, return_exceptions=True)
    if udp is not None:
        udp.close()
    summary = f"{tcp.accepted} tcp connections"
    if udp is not None:
        summary += f", {udp.dropped} datagrams dropped"
    return f"stopped on {stopped_by[0]} after {summary}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="delay_proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=parse_address, required=True, help="ADDR:PORT to accept on")
    parser.add_argument("--target", type=parse_address, required=True, help="ADDR:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, required=True, help="delay added in each direction")
    parser.add_argument("--udp", action="store_true", help="forward UDP datagrams on the same port as well")
    parser.add_argument(
        "--buffer-bytes",
        type=int,
        default=DEFAULT_BUFFER_BYTES,
        help="bytes held per direction of a connection before reading stops",
    )
    parser.add_argument(
        "--max-datagrams",
        type=int,
        default=DEFAULT_MAX_DATAGRAMS,
        help="datagrams held at once before more are dropped",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.delay_ms <= 60_000:
        parser.error("--delay-ms must be from 0 to 60000")
    if args.buffer_bytes < 1 or args.max_datagrams < 1:
        parser.error("--buffer-bytes and --max-datagrams must be positive")
    try:
        log(asyncio.run(serve(args)))
    except OSError as exc:
        log(f"cannot listen on {args.listen[0]}:{args.listen[1]}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
