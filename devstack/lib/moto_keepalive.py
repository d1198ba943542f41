"""Keeps moto's HTTP connections open between requests, as AWS's endpoints do.

moto's ThreadedMotoServer runs Werkzeug's development server, which answers every request with
`Connection: close`: each AWS call a client makes to the local stack then pays a TCP connect and
a close that it does not pay against AWS, whose endpoints keep connections open and let clients
reuse them. That skews what the local stack shows of a client's cost (about a fifth of the
daemon's CPU per one-row export in scripts/bench went on it) and its latency.

install() swaps in a request handler that keeps a connection open when the request lets it:
HTTP/1.1, no `Connection: close`, and a body of known length (none, or `Content-Length`). The
body is handed to moto as a stream that ends at `Content-Length`, and whatever moto leaves
unread is read after the answer, so the next request on the connection starts where it should.
Werkzeug's own clean-up after an answer (reading whatever else the client sent, for 10 ms)
would swallow the client's next request on a kept connection; it is skipped for those.
A request with a chunked body keeps Werkzeug's behaviour: answered, then closed.

http.server parses every request's headers with the standard library's e-mail parser, a
general MIME parser that took a third of moto's own time per request (about 0.6 ms of the
1.7 ms an UploadPart or a GET cost it, measured with py-spy). A request's headers are plain
`Name: value` lines, and those are read directly into the same message the e-mail parser would
build; any block with something else in it (a folded line, a line without a name) still goes
to the e-mail parser.

Werkzeug also writes an answer's status line and headers to the socket before its body, so every
answer reaches the client as two segments and costs it a second wake-up and read that an AWS
endpoint's small answers do not. The handler buffers its writes instead: the headers leave with
the first piece of the body (Werkzeug flushes after each piece), and a `100 Continue` interim
answer is sent at once, and once (Werkzeug repeated http.server's), as a client that asked for
it waits for it before sending the body. Nor does the handler log a line per request (errors
are still logged).
"""

import email.parser
import http.client
import re
import selectors
import threading

from moto.moto_server import threaded_moto_server, werkzeug_app
from werkzeug import serving, wsgi

_current = threading.local()


class _Body:
    """A request body that ends at its `Content-Length`."""

    def __init__(self, stream, length):
        self._stream = stream
        self.left = length

    def read(self, size=-1):
        return self._take(self._stream.read, size)

    def readline(self, size=-1):
        return self._take(self._stream.readline, size)

    def _take(self, read, size):
        if self.left <= 0:
            return b""
        data = read(self.left if size is None or size < 0 else min(size, self.left))
        # A client that goes away mid-body ends it.
        self.left = self.left - len(data) if data else 0
        return data

    def __iter__(self):
        while line := self.readline():
            yield line

    def finish(self):
        """Reads what the application left unread; false if the client went away first."""
        while self.left > 0:
            if not self.read(1 << 20):
                return False
        return True


class _Selector(selectors.DefaultSelector):
    """Werkzeug uses a selector only to read what a client sent after its answer."""

    def select(self, timeout=None):
        if getattr(_current, "keep", False):
            return []
        return super().select(timeout)


class _Selectors:
    DefaultSelector = _Selector
    EVENT_READ = selectors.EVENT_READ


class KeepAliveHandler(werkzeug_app.MotoRequestHandler):
    protocol_version = "HTTP/1.1"
    # A buffered writer (socketserver's StreamRequestHandler.setup): headers and body in one send.
    wbufsize = 1 << 16

    def make_environ(self):
        environ = super().make_environ()
        length = environ.get("CONTENT_LENGTH", "").strip() or "0"
        self._body = None
        if (
            self.request_version == "HTTP/1.1"
            and not self.close_connection
            and "HTTP_TRANSFER_ENCODING" not in environ
            and length.isdigit()
        ):
            self._body = _Body(environ["wsgi.input"], int(length))
            environ["wsgi.input"] = self._body
        _current.keep = self._body is not None
        return environ

    def handle_expect_100(self):
        # Sent at once: buffered, it would wait for the answer, which waits for the body.
        self.send_response_only(100)
        self.end_headers()
        self.wfile.flush()
        return True

    def log_request(self, code="-", size="-"):
        # Werkzeug logs every request at INFO: a line per AWS call in the stack's log and, under
        # load, a fifth of moto's time (its logging lock and the write). Errors are still logged.
        pass

    def send_header(self, keyword, value):
        if getattr(_current, "keep", False) and keyword.lower() == "connection" and value.lower() == "close":
            return
        super().send_header(keyword, value)

    def run_wsgi(self):
        self._body = None
        # http.server has answered `Expect: 100-continue` already (handle_expect_100); Werkzeug
        # would answer it a second time.
        del self.headers["Expect"]
        try:
            super().run_wsgi()
        finally:
            _current.keep = False
        if self._body is None or not self._body.finish():
            self.close_connection = True


_werkzeug_readall = wsgi.LimitedStream.readall


def _readall(self):
    """A kept connection's request body, read whole into one buffer.

    Werkzeug reads a body 64 KiB at a time, each piece copied into a buffer, out of it and onto
    the end of another, which is copied once more at the end: an UploadPart of a few MiB cost
    moto more time in those copies than in anything else it does with the part but its MD5.
    The socket's buffered reader fills one buffer of the body's length instead. A client that
    goes away mid-body is a `ClientDisconnected`, as it is for Werkzeug.
    """
    if not isinstance(self._stream, _Body) or self.is_exhausted:
        return _werkzeug_readall(self)
    left = self.limit - self._pos
    try:
        data = self._stream.read(left)
    except (OSError, ValueError) as e:
        self.on_disconnect(error=e)
        return b""
    self._pos += len(data)
    if len(data) < left:
        self.on_disconnect()
    return data


# A header line the fast path takes: a name of visible characters but `:`, then its value.
_HEADER_LINE = re.compile(rb"([\x21-\x39\x3b-\x7e]+):([^\r\n]*)\r?\n")


def parse_headers(fp, _class=http.client.HTTPMessage):
    """http.client.parse_headers, without the e-mail parser for plain header lines.

    The message is the one the e-mail parser builds (compat32 policy): each header's name as
    written, its value without the blanks after the colon or the line end, in order, and an
    empty payload. A block the pattern does not describe whole is handed to the e-mail parser.
    """
    lines = http.client._read_headers(fp)
    message = _class()
    # The last line is the blank one that ends the block (or nothing, at the end of input).
    for line in lines[:-1]:
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            return email.parser.Parser(_class=_class).parsestr(b"".join(lines).decode("iso-8859-1"))
        name, value = match.groups()
        message.set_raw(name.decode("iso-8859-1"), value.decode("iso-8859-1").lstrip(" \t"))
    message.set_payload("")
    return message


def install():
    """Makes ThreadedMotoServer use the keep-alive handler; call before starting it."""
    # http.server (and http.client, for answers moto itself reads) look parse_headers up in
    # http.client on every call.
    http.client.parse_headers = parse_headers
    serving.selectors = _Selectors
    wsgi.LimitedStream.readall = _readall
    threaded_moto_server.MotoRequestHandler = KeepAliveHandler
