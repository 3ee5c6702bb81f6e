"""Added delay where the kernel has no netem: start harness/hosts/delay_proxy.py on a host.

The proxy is one file run by the host's own python3, so a host needs no harness
install: on a lab host the filesystem is this machine's, and for a host that does
not share it `copy_program=True` puts the file into the work directory first.
Traffic sent to the proxy's listen address reaches the target D ms late in each
direction, so a round trip through it takes at least 2 x D.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
from collections.abc import Iterator
from pathlib import Path

from harness.errors import HostError
from harness.hosts.remote import Background, HostSession

PROGRAM = Path(__file__).resolve().with_name("delay_proxy.py")
READY_TIMEOUT = 10.0


def start_delay_proxy(
    session: HostSession,
    listen: str,
    target: str,
    delay_ms: float,
    workdir: str,
    udp: bool = False,
    python: str = "python3",
    copy_program: bool = False,
    ready_timeout: float = READY_TIMEOUT,
) -> Background:
    """Start the proxy on session's host, in its own session; return once it listens.

    listen and target are ADDR:PORT. The log is WORKDIR/delay-proxy-PORT.log. Stop it
    with `session.stop(proxy)` (SIGTERM, which it obeys) or use `delay_proxy(...)`.
    """
    _, port = _split(listen)
    _split(target)
    if not 0 <= delay_ms <= 60_000:
        raise HostError(f"{session.host.name}: delay proxy: delay {delay_ms:g} ms is outside 0..60000 ms")
    if session.port_in_use(port):
        raise HostError(f"{session.host.name}: delay proxy: port {port} is already in use: pick another")
    program = str(PROGRAM)
    if copy_program:
        program = f"{workdir.rstrip('/')}/{PROGRAM.name}"
        session.put(PROGRAM, program)
    argv = [python, program, "--listen", listen, "--target", target, "--delay-ms", f"{delay_ms:g}"]
    if udp:
        argv.append("--udp")
    proxy = session.start_background(argv, workdir=workdir, log=f"{workdir.rstrip('/')}/delay-proxy-{port}.log")
    try:
        session.wait_listening(proxy, port, ready_timeout)
    except BaseException as failure:
        try:
            session.stop(proxy)
        except HostError as cleanup:
            failure.add_note(f"stopping the proxy also failed: {cleanup}")
        raise
    return proxy


@contextlib.contextmanager
def delay_proxy(
    session: HostSession, listen: str, target: str, delay_ms: float, workdir: str, **options
) -> Iterator[Background]:
    """start_delay_proxy, always stopped when the block ends."""
    proxy = start_delay_proxy(session, listen, target, delay_ms, workdir, **options)
    try:
        yield proxy
    finally:
        session.stop(proxy)


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        valid = bool(sep) and port.isdigit() and 0 < int(port) < 65536
    except ValueError:
        valid = False
    if not valid:
        raise HostError(f"delay proxy: {shlex.quote(address)} is not ADDR:PORT with a numeric address")
    return host.strip("[]"), int(port)
