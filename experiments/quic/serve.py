"""Serve app.py with hypercorn over HTTP/2 on TLS/TCP or over HTTP/3 on QUIC/UDP.

    python serve.py --proto h2|h3 --bind ADDR --port PORT --workdir DIR

One process, one asyncio event loop, the same app and the same certificate type on both sides:
the pair differs only in the transport stack (kernel TCP + OpenSSL TLS records + h2, against
aioquic's user-space QUIC + TLS 1.3 packet protection + HTTP/3). A self-signed ECDSA P-256
certificate is made at start-up in a private folder under DIR and removed on exit; no key
material lives in the repository. SIGTERM shuts hypercorn down gracefully.
"""

import argparse
import asyncio
import datetime
import ipaddress
import os
import sys
import tempfile

from app import app
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypercorn.asyncio import serve
from hypercorn.config import Config


def write_self_signed(folder: str, bind: str) -> tuple[str, str]:
    """A fresh key and a one-day certificate for `bind` and localhost; returns (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "harness-quic")])
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(bind)))
    except ValueError:
        names.append(x509.DNSName(bind))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path


def hypercorn_config(proto: str, bind: str, port: int, cert: str, key: str) -> Config:
    config = Config()
    config.certfile, config.keyfile = cert, key
    address = f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"
    if proto == "h2":
        config.bind = [address]
        config.alpn_protocols = ["h2"]
    else:
        config.bind = []  # QUIC only: no TCP listener beside it
        config.quic_bind = [address]
    # hypercorn closes an HTTP/2 connection after 1000 requests by default; a trial makes more.
    config.keep_alive_max_requests = 1 << 40
    # Every trial starts a fresh server: on SIGTERM, don't wait the default 3 s for open connections.
    config.graceful_timeout = 1.0
    config.accesslog = None
    config.loglevel = "WARNING"
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto", choices=["h2", "h3"], required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", required=True, help="where the certificate's folder is made")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"quic-tls-{args.port}-", dir=args.workdir) as folder:
        cert, key = write_self_signed(folder, args.bind)
        config = hypercorn_config(args.proto, args.bind, args.port, cert, key)
        print(
            f"serving {args.proto} on {args.bind}:{args.port} ({'udp' if args.proto == 'h3' else 'tcp'})",
            file=sys.stderr,
            flush=True,
        )
        asyncio.run(serve(app, config))


if __name__ == "__main__":
    main()
