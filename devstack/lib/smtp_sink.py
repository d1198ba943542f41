"""An SMTP sink: accepts every message on 127.0.0.1 and stores it as one .eml file.

Each file starts with X-Envelope-From / X-Envelope-To headers (the SMTP envelope, which is
what Bcc recipients only appear in), followed by the message exactly as received. AUTH PLAIN
and LOGIN are offered without TLS and accept only devstack/devstack, so clients can test a
login; unauthenticated sending is allowed too.
"""

import argparse
import os
import signal
import threading
import time
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER = b"devstack"
PASSWORD = b"devstack"


class Sink:
    def __init__(self, directory):
        self.directory = directory

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's naming)
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        head = (
            f"X-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        tmp = os.path.join(self.directory, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(head + envelope.original_content)
        os.rename(tmp, os.path.join(self.directory, name))
        return "250 Message accepted for delivery"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER and auth_data.password == PASSWORD
    return AuthResult(success=ok, handled=False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    controller = Controller(
        Sink(args.dir),
        hostname="127.0.0.1",
        port=args.port,
        authenticator=authenticate,
        auth_require_tls=False,
        auth_required=False,
    )
    controller.start()
    print(f"SMTP sink on 127.0.0.1:{args.port}, writing to {args.dir}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
