"""The devstack's moto keeps HTTP connections open between requests, as AWS's endpoints do
(devstack/lib/moto_keepalive.py); moto as shipped answers every request with
`Connection: close`. One connection carries requests with bodies moto reads, bodies it may leave
unread, and requests without bodies, and every answer is the right one. A small answer leaves in
one piece, headers with body, and a client that expects `100 Continue` gets it before it sends.
Request headers are read into the message the standard library's e-mail parser would build.
"""

import http.client
import io
import os
import socket
import sys
import uuid

import boto3
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "devstack", "lib"))
from moto_keepalive import _Body, _readall, parse_headers  # noqa: E402
from werkzeug.exceptions import ClientDisconnected  # noqa: E402
from werkzeug.wsgi import LimitedStream  # noqa: E402

ENDPOINT = os.environ["AWS_ENDPOINT_URL"].split("//", 1)[1]
s3 = boto3.client("s3")


@pytest.fixture
def bucket():
    """A bucket of the test's own; the raw requests below are unsigned, which moto accepts for
    writes but not for deletes, so boto3 cleans up."""
    name = f"keepalive-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def exchange(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response, response.read()


def test_one_connection_carries_many_requests_and_each_gets_its_own_answer(bucket):
    key = "object"
    body = os.urandom(3 << 20)
    conn = http.client.HTTPConnection(ENDPOINT, timeout=30)
    try:
        put, _ = exchange(conn, "PUT", f"/{bucket}/{key}", body)
        assert put.status == 200
        assert conn.sock is not None, "moto closed the connection after its first answer"
        port = conn.sock.getsockname()[1]
        missing, text = exchange(conn, "PUT", f"/missing-{uuid.uuid4().hex[:12]}/x", body)
        assert missing.status == 404 and b"NoSuchBucket" in text
        # A body on a listing; whatever of it moto leaves is drained before the next request.
        unread, text = exchange(conn, "GET", f"/{bucket}?list-type=2&prefix={key}", body)
        assert unread.status == 200 and f"<Key>{key}</Key>".encode() in text
        listed, text = exchange(conn, "GET", f"/{bucket}?list-type=2&prefix={key}")
        assert listed.status == 200 and f"<Key>{key}</Key>".encode() in text
        # An answer without a body (and unsigned, so refused), then the connection still reads right.
        head, text = exchange(conn, "HEAD", f"/{bucket}/{key}")
        assert head.status == 403 and text == b""
        again, text = exchange(conn, "GET", f"/{bucket}?list-type=2&prefix={key}")
        assert again.status == 200 and f"<Key>{key}</Key>".encode() in text
        for response in (put, missing, unread, listed, head, again):
            assert (response.getheader("Connection") or "").lower() != "close"
        assert conn.sock is not None and conn.sock.getsockname()[1] == port, "the connection was not kept"
    finally:
        conn.close()


def test_a_client_that_asks_to_close_and_a_chunked_body_close_the_connection(bucket):
    conn = http.client.HTTPConnection(ENDPOINT, timeout=30)
    try:
        asked, _ = exchange(conn, "GET", f"/{bucket}?list-type=2&max-keys=1", headers={"Connection": "close"})
        assert asked.status == 200 and asked.getheader("Connection").lower() == "close"
        conn.request("PUT", f"/{bucket}/chunked",
                     body=iter([b"a" * 1000, b"b" * 1000]), encode_chunked=True)
        chunked = conn.getresponse()
        chunked.read()
        assert chunked.getheader("Connection").lower() == "close"
    finally:
        conn.close()


def test_a_body_ends_at_its_length_and_what_is_left_unread_is_drained():
    # moto reads every body it is sent today, so the drain is checked on the stream itself: a
    # request's body followed by the next request on the same connection.
    stream = io.BytesIO(b"line one\nline two\nrest of the body" + b"GET /next HTTP/1.1\r\n")
    body = _Body(stream, len(b"line one\nline two\nrest of the body"))
    assert body.readline() == b"line one\n"
    assert body.read(4) == b"line"
    assert body.finish()
    assert body.read() == b"" and body.readline() == b""
    assert stream.readline() == b"GET /next HTTP/1.1\r\n"
    # A client that goes away mid-body: the connection is not kept.
    assert not _Body(io.BytesIO(b"short"), 100).finish()


def test_a_body_moto_reads_whole_is_read_in_one_piece_and_one_cut_short_is_a_disconnect():
    sent = os.urandom((5 << 20) + 17)
    socket_reader = io.BufferedReader(io.BytesIO(sent + b"GET /next HTTP/1.1\r\n"))
    stream = LimitedStream(_Body(socket_reader, len(sent)), len(sent))
    assert _readall(stream) == sent and stream.is_exhausted
    assert _readall(stream) == b""
    assert socket_reader.readline() == b"GET /next HTTP/1.1\r\n"
    short = LimitedStream(_Body(io.BufferedReader(io.BytesIO(sent[:1000])), len(sent)), len(sent))
    with pytest.raises(ClientDisconnected):
        _readall(short)


def test_an_uploaded_part_reads_back_as_it_was_sent(bucket):
    parts = [os.urandom(5 << 20), os.urandom(1000)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="joined")["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="joined", UploadId=upload, PartNumber=n, Body=part)["ETag"]
             for n, part in enumerate(parts, start=1)]
    s3.complete_multipart_upload(Bucket=bucket, Key="joined", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]})
    assert s3.get_object(Bucket=bucket, Key="joined")["Body"].read() == b"".join(parts)


def raw_connection():
    host, port = ENDPOINT.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def test_a_small_answer_arrives_in_one_piece_headers_with_body(bucket):
    # Werkzeug as shipped sends the headers and then the body: the client's first read sees the
    # headers alone. Over loopback one send of a few hundred bytes arrives as one segment.
    with raw_connection() as sock:
        request = f"GET /{bucket}?list-type=2 HTTP/1.1\r\nHost: {ENDPOINT}\r\n\r\n".encode()
        for _ in range(20):
            sock.sendall(request)
            first = sock.recv(1 << 16)
            head, _, body = first.partition(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            assert length > 0 and len(body) == length, first


def test_a_client_that_expects_100_continue_gets_it_before_sending_the_body(bucket):
    body = b"x" * 1000
    with raw_connection() as sock:
        sock.sendall(f"PUT /{bucket}/continued HTTP/1.1\r\nHost: {ENDPOINT}\r\n"
                     f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
        interim = sock.recv(1 << 16)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        sock.sendall(body)
        answer = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(1 << 16)
        assert answer.startswith(b"HTTP/1.1 200"), answer
    assert s3.get_object(Bucket=bucket, Key="continued")["Body"].read() == body


HEADER_BLOCKS = [
    # What the SDKs send: plain lines, repeated names, blanks after the colon or none, empty values.
    b"Host: 127.0.0.1:45566\r\nContent-Length: 12\r\nx-amz-date:20261204T010203Z\r\n"
    b"X-Amz-Meta-A:  two  spaces \r\nX-Amz-Meta-A: again\r\nEmpty:\r\nTab:\tvalue\r\n\r\n",
    b"Host: h\nBare-Newlines: yes\n\n",
    b"Latin-1: caf\xe9\r\n\r\n",
    # The input ends without the blank line.
    b"Host: h\r\n",
    b"\r\n",
    # Not plain lines: the e-mail parser decides.
    b"Folded: first\r\n  second\r\nHost: h\r\n\r\n",
    b"Host: h\r\nno colon here\r\nAfter: x\r\n\r\n",
    b"Name With Space: x\r\n\r\n",
    b": no name\r\n\r\n",
    b"Carriage: a\rb\r\n\r\n",
    b"From nobody Thu Dec  4 01:02:03 2026\r\nHost: h\r\n\r\n",
]


@pytest.mark.parametrize("block", HEADER_BLOCKS)
def test_headers_read_as_the_email_parser_reads_them(block):
    ours = parse_headers(io.BytesIO(block + b"body after the headers"))
    theirs = http.client.parse_headers(io.BytesIO(block + b"body after the headers"))
    assert type(ours) is type(theirs)
    assert ours.items() == theirs.items()
    assert ours.get_payload() == theirs.get_payload()
    assert ours.get_unixfrom() == theirs.get_unixfrom()
    assert [type(d) for d in ours.defects] == [type(d) for d in theirs.defects]
    assert ours.get("content-length") == theirs.get("content-length")


def test_headers_stop_at_the_blank_line_and_leave_the_body_unread():
    fp = io.BytesIO(b"Host: h\r\nContent-Length: 4\r\n\r\nbody")
    assert parse_headers(fp)["Content-Length"] == "4"
    assert fp.read() == b"body"


def test_plain_header_lines_are_not_handed_to_the_email_parser(monkeypatch):
    import email.parser

    monkeypatch.setattr(email.parser, "Parser", None)
    for block in HEADER_BLOCKS[:5]:
        parse_headers(io.BytesIO(block))
