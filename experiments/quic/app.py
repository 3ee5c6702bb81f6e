"""The ASGI app both sides of the QUIC experiment serve: GET /bytes/{n} returns n bytes.

Every other path or method gets 404/405 with an empty body. Bodies are built once per size and
kept, so a request costs the protocol stack and not the making of its payload. The same app
object is served over HTTP/2 on TLS/TCP and over HTTP/3 on QUIC by serve.py.
"""

MAX_BODY_BYTES = 256 * 1024 * 1024
_BODIES: dict[int, bytes] = {}


def body_of(size: int) -> bytes:
    body = _BODIES.get(size)
    if body is None:
        # A repeating, non-constant pattern: nothing on the path can shortcut a run of zeros.
        pattern = bytes(range(256))
        body = (pattern * (size // 256 + 1))[:size]
        if len(_BODIES) < 64:
            _BODIES[size] = body
    return body


def parse_size(path: str) -> int | None:
    """The n of /bytes/{n}, or None when the path is not one this app serves."""
    prefix = "/bytes/"
    if not path.startswith(prefix):
        return None
    digits = path[len(prefix) :]
    if not digits.isdigit() or len(digits) > 12:
        return None
    size = int(digits)
    return size if size <= MAX_BODY_BYTES else None


async def _respond(send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    size = parse_size(scope["path"])
    if size is None:
        await _respond(send, 404, b"")
    elif scope["method"] != "GET":
        await _respond(send, 405, b"")
    else:
        await _respond(send, 200, body_of(size))
