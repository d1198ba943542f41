"""A webhook sink: an HTTPS server on 127.0.0.1 that checks every delivery's signature the way
docs/EVENTS.md tells receivers to, and stores each delivery as one JSON file.

TLS: at first start it makes a certificate authority and a server certificate for 127.0.0.1
(in <dir>/tls/: ca.pem is what a client trusts). The signing secret comes from the
environment variable DEVSTACK_WEBHOOK_SECRET.

Paths:
  POST /hooks/<name>      200 when the signature verifies, 401 when it does not
  POST /hooks/fail        503 always (a receiver that is down)
  POST /hooks/flaky       503 for the first delivery of each event id, then 200
  POST /hooks/redirect    302 to /hooks/ok (a client must not follow it)

Each delivery is stored as <dir>/deliveries/<time>-<n>.json:
  {"path", "status", "verified", "event_id", "signature", "body"}.
"""

import argparse
import datetime
import hashlib
import hmac
import ipaddress
import itertools
import json
import os
import signal
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Signatures older (or newer) than this are refused: a replayed delivery is not accepted.
TOLERANCE_SECS = 300


def verify(secret: bytes, header: str, body: bytes, now: float) -> bool:
    """docs/EVENTS.md, "Verifying a webhook": t=<unix>,v1=<hex HMAC-SHA256 over t.body>."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > TOLERANCE_SECS:
        return False
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


def make_certificates(directory):
    """A CA and a server certificate for 127.0.0.1 signed by it, unless they exist."""
    os.makedirs(directory, exist_ok=True)
    ca_path = os.path.join(directory, "ca.pem")
    cert_path = os.path.join(directory, "server.pem")
    key_path = os.path.join(directory, "server.key")
    if all(os.path.exists(p) for p in (ca_path, cert_path, key_path)):
        return cert_path, key_path
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devstack webhook CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(ca_path, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


class Sink(BaseHTTPRequestHandler):
    secret = b""
    directory = ""
    counter = itertools.count()
    seen = set()
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        signature = self.headers.get("X-Export-Signature") or ""
        event_id = self.headers.get("X-Export-Event-Id") or ""
        verified = verify(self.secret, signature, body, time.time())
        path = self.path.split("?")[0]
        with self.lock:
            first = (path, event_id) not in self.seen
            self.seen.add((path, event_id))
        if path == "/hooks/fail" or (path == "/hooks/flaky" and first):
            status = 503
        elif path == "/hooks/redirect":
            status = 302
        elif not verified:
            status = 401
        else:
            status = 200
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        record = {
            "path": path,
            "status": status,
            "verified": verified,
            "event_id": event_id,
            "signature": signature,
            "body": parsed,
        }
        name = f"{time.time_ns()}-{next(self.counter)}.json"
        tmp = os.path.join(self.directory, "." + name)
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.directory, name))
        reply = b'{"ok":true}' if status == 200 else b'{"error":"refused"}'
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/hooks/ok")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    secret = os.environ.get("DEVSTACK_WEBHOOK_SECRET", "")
    if len(secret) < 16:
        raise SystemExit("DEVSTACK_WEBHOOK_SECRET must hold at least 16 characters")
    cert, key = make_certificates(os.path.join(args.dir, "tls"))
    deliveries = os.path.join(args.dir, "deliveries")
    os.makedirs(deliveries, exist_ok=True)
    Sink.secret = secret.encode()
    Sink.directory = deliveries
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Sink)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


if __name__ == "__main__":
    main()
