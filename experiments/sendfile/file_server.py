"""A one-connection-at-a-time HTTP/1.1 file server with two ways to send a file.

    python3 file_server.py --mode readwrite|sendfile --bind ADDR --port PORT --root DIR --buffer BYTES

readwrite: read() the file into a user-space buffer, then send it (two copies per byte);
sendfile:  os.sendfile() from the page cache straight into the socket (no user-space copy).
Everything else (parsing, headers, connection handling) is the same code, so the pair
differs only in how the body travels.
"""

import argparse
import os
import socket


def send_readwrite(sock: socket.socket, fd: int, size: int, buffer_size: int) -> None:
    buffer = bytearray(buffer_size)
    view = memoryview(buffer)
    with os.fdopen(os.dup(fd), "rb", buffering=0) as source:
        while True:
            n = source.readinto(buffer)
            if not n:
                break
            sock.sendall(view[:n])


def send_sendfile(sock: socket.socket, fd: int, size: int, buffer_size: int) -> None:
    offset = 0
    while offset < size:
        sent = os.sendfile(sock.fileno(), fd, offset, size - offset)
        if sent == 0:
            break
        offset += sent


SENDERS = {"readwrite": send_readwrite, "sendfile": send_sendfile}


def read_request_path(conn: socket.socket) -> str | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk or len(data) > 65536:
            return None
        data += chunk
    parts = data.split(b"\r\n", 1)[0].split()
    if len(parts) != 3 or parts[0] != b"GET":
        return None
    return parts[1].decode("ascii", "replace")


def serve(args: argparse.Namespace) -> None:
    send = SENDERS[args.mode]
    root = os.path.realpath(args.root)
    listener = socket.create_server((args.bind, args.port), backlog=64)
    while True:
        conn, _ = listener.accept()
        with conn:
            path = read_request_path(conn)
            target = os.path.realpath(os.path.join(root, (path or "").lstrip("/")))
            if path is None or not target.startswith(root + os.sep) or not os.path.isfile(target):
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                continue
            fd = os.open(target, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
                send(conn, fd, size, args.buffer)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(SENDERS), required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--buffer", type=int, default=65536)
    serve(parser.parse_args())


if __name__ == "__main__":
    main()
