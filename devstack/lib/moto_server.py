"""moto in server mode for SQS, S3, DynamoDB and SES v2, plus a small outbox endpoint.

moto runs in-process (ThreadedMotoServer) rather than as `moto_server` because its
/moto-api/data.json dump fails once S3 holds multipart objects; running in-process lets the
outbox endpoint read the SES backend directly. It also lets moto_dynamodb_fix make moto's
DynamoDB transactions atomic and isolated, as DynamoDB's are, and moto_keepalive keep its
connections open between requests, as AWS's endpoints do, moto_dispatch find the service a
request is for once per host instead of once per request, and moto_s3_memory keep its S3
objects in memory and complete multipart uploads without copying each object five times, before
the server starts.

GET http://127.0.0.1:<outbox-port>/outbox returns {"messages": [...]}, every message sent
through SES (v1 or v2) in the order sent, with source, destinations, subject, body and raw data.
"""

import argparse
import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.ses.models import ses_backends

import moto_dispatch
import moto_dynamodb_fix
import moto_keepalive
import moto_s3_memory


def sent_messages():
    out = []
    for account_id in list(ses_backends.keys()):
        regions = ses_backends[account_id]
        for region in list(regions.keys()):
            for m in regions[region].sent_messages:
                out.append(
                    {
                        "id": getattr(m, "id", None),
                        "account_id": account_id,
                        "region": region,
                        "source": getattr(m, "source", None),
                        "destinations": getattr(m, "destinations", None),
                        "subject": getattr(m, "subject", None),
                        "body": getattr(m, "body", None),
                        "raw": getattr(m, "raw_data", None),
                    }
                )
    return out


class Outbox(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.split("?")[0] != "/outbox":
            self.send_error(404)
            return
        body = json.dumps({"messages": sent_messages()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--outbox-port", type=int, required=True)
    args = parser.parse_args()

    moto_dynamodb_fix.install()
    moto_keepalive.install()
    moto_dispatch.install()
    moto_s3_memory.install()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    moto.start()
    outbox = ThreadingHTTPServer(("127.0.0.1", args.outbox_port), Outbox)
    threading.Thread(target=outbox.serve_forever, daemon=True).start()
    print(f"moto on 127.0.0.1:{args.port}, SES outbox on 127.0.0.1:{args.outbox_port}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    outbox.shutdown()
    moto.stop()


if __name__ == "__main__":
    main()
