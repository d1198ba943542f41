"""The devstack's moto keeps S3 objects in memory, each held once, and completes a multipart
upload with one copy of the object (devstack/lib/moto_s3_memory.py). Objects, ETags, checksums
and errors are exactly those of moto as shipped; what changes is that an object larger than
5 MiB is not written to a file and a read returns the stored bytes without copying them.
"""

import base64
import gc
import os
import sys
import weakref
import zlib

import pytest
import re

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.s3 import models, responses
from werkzeug.test import Client
from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "devstack", "lib"))
import moto_s3_memory  # noqa: E402

MIB = 1 << 20
ACCOUNT = {"account_id": "123456789012", "region_name": "us-east-1"}


@pytest.fixture
def ours(monkeypatch):
    """moto_s3_memory installed for one test, moto as shipped again after it."""
    for cls, name in [
        (models.FakeKey, "value"),
        (models.FakeKey, "etag"),
        (models.FakeMultipart, "complete"),
        (models.FakeMultipart, "set_part"),
        (models.FakeKey, "instances_tracked"),
        (models.FakeMultipart, "instances_tracked"),
        (responses.S3Response, "get_object"),
    ]:
        monkeypatch.setattr(cls, name, cls.__dict__[name])
    moto_s3_memory.install()


def data(seed, size):
    return bytes((seed * 7 + i) % 251 for i in range(251)) * (size // 251) + b"x" * (size % 251)


def completed(sizes, metadata, body=None):
    """What completing an upload of parts of `sizes` gives (or the error's name); `body` picks
    the parts named in the request, all of them by default."""
    multipart = models.FakeMultipart("k", metadata, **ACCOUNT)
    etags = [(n, multipart.set_part(n, data(n, size)).etag) for n, size in enumerate(sizes, start=1)]
    try:
        value, etag, checksum = multipart.complete(iter(etags if body is None else body(etags)))
    except (InvalidPart, EntityTooSmall, MalformedXML) as e:
        return type(e).__name__
    # What moto does with it: the completed object's value, as a GET reads it.
    return models.FakeKey("k", value, **ACCOUNT).value, etag, checksum


METADATA = [
    {},  # moto's default: CRC64NVME (CRC-32 without awscrt) over the full object
    {"x-amz-checksum-algorithm": "CRC32"},  # composite
    {"x-amz-checksum-algorithm": "CRC32", "x-amz-checksum-type": "FULL_OBJECT"},
    {"x-amz-checksum-algorithm": "SHA256"},
    {"x-amz-checksum-algorithm": "SHA256", "x-amz-checksum-type": "FULL_OBJECT"},
    {"x-amz-checksum-algorithm": "SHA1", "x-amz-checksum-type": "FULL_OBJECT"},
]
FAILURES = {
    "a part too small before the last": ([5 * MIB, 1000, 1000], None),
    "a wrong ETag": ([5 * MIB, 1000], lambda e: [e[0], (2, '"0123456789abcdef0123456789abcdef"')]),
    "a part never uploaded": ([5 * MIB, 1000], lambda e: [e[0], (9, e[1][1])]),
    "no parts": ([1000], lambda e: []),
}


def outcomes():
    done = [completed([5 * MIB, 5 * MIB + 3, 1000], m) for m in METADATA]
    failed = [completed(sizes, {}, body) for sizes, body in FAILURES.values()]
    return done, failed


def test_completing_gives_what_moto_as_shipped_gives(request):
    shipped = outcomes()
    request.getfixturevalue("ours")
    done, failed = outcomes()
    assert done == shipped[0] and failed == shipped[1]
    assert all(len(value) == 10 * MIB + 1003 and etag.endswith("-3") and checksum for value, etag, checksum in done)
    assert failed == ["EntityTooSmall", "InvalidPart", "InvalidPart", "MalformedXML"]


def test_an_object_is_held_once_and_read_without_a_copy(request):
    value = data(1, 6 * MIB)
    shipped = models.FakeKey("k", value, **ACCOUNT)
    assert shipped._value_buffer._rolled, "moto as shipped writes this to a file"
    assert shipped.value == value and shipped.value is not value
    request.getfixturevalue("ours")
    kept = models.FakeKey("k", value, **ACCOUNT)
    assert kept.value is value and kept.contentsize == len(value)
    assert kept.etag == shipped.etag
    kept.value = "text"
    assert kept.value == b"text" and kept.contentsize == 4
    kept.dispose()
    with pytest.raises(ValueError):
        kept.value


def test_a_completed_upload_is_joined_when_first_read_and_unreadable_once_deleted(ours):
    multipart = models.FakeMultipart("k", {}, **ACCOUNT)
    parts = [data(1, 5 * MIB), data(2, 1000)]
    etags = [(n, multipart.set_part(n, part).etag) for n, part in enumerate(parts, start=1)]
    value, _, _ = multipart.complete(iter(etags))
    key = models.FakeKey("k", value, **ACCOUNT)
    assert key.contentsize == 5 * MIB + 1000
    assert key._value_buffer._buffer is None, "nothing copied at completion"
    assert key.value == b"".join(parts) and key.value is key.value
    gone = models.FakeKey("k", multipart.complete(iter(etags))[0], **ACCOUNT)
    gone.dispose()
    with pytest.raises(ValueError):
        gone.value


def deleted_object_lives_on():
    """Whether an object put and deleted through moto's S3 backend is still in memory."""
    backend = models.S3Backend("us-east-1", ACCOUNT["account_id"])
    bucket = f"memory-{os.getpid()}"
    backend.create_bucket(bucket, "us-east-1")
    key = weakref.ref(backend.put_object(bucket, "k", data(3, 2 * MIB)))
    assert backend.get_object(bucket, "k").value == data(3, 2 * MIB)
    backend.delete_object(bucket, "k")
    gc.collect()
    alive = key() is not None
    backend.reset()
    return alive


def test_a_deleted_object_is_given_back(request):
    assert deleted_object_lives_on(), "moto as shipped keeps every object it made"
    request.getfixturevalue("ours")
    assert not deleted_object_lives_on()
    live = models.FakeKey("live", data(4, 1000), **ACCOUNT)
    assert list(models.FakeKey.instances_tracked) == [live], "reset still reaches live ones"


def test_a_get_sends_the_parts_unjoined_and_a_range_joins_only_itself(ours):
    """Through moto's own server app: the answers are the object's bytes, and the object is
    never joined."""
    client = Client(DomainDispatcherApplication(create_backend_app))
    auth = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=0"
    }
    bucket, key = f"pieces-{os.getpid()}", "object"
    assert client.put(f"/{bucket}", headers=auth).status_code == 200
    created = client.post(f"/{bucket}/{key}?uploads", headers=auth)
    upload = re.search(rb"<UploadId>(.+?)</UploadId>", created.data).group(1).decode()
    parts = [data(5, 5 * MIB), data(6, 5 * MIB + 17), data(7, 1000)]
    etags = []
    for n, part in enumerate(parts, start=1):
        put = client.put(f"/{bucket}/{key}?partNumber={n}&uploadId={upload}", data=part, headers=auth)
        etags.append(put.headers["ETag"])
    listing = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in enumerate(etags, start=1)
    )
    done = client.post(
        f"/{bucket}/{key}?uploadId={upload}",
        data=f"<CompleteMultipartUpload>{listing}</CompleteMultipartUpload>",
        headers=auth,
    )
    assert done.status_code == 200
    whole = b"".join(parts)

    got = client.get(f"/{bucket}/{key}", headers=auth)
    assert got.status_code == 200 and got.data == whole
    assert got.headers["Content-Length"] == str(len(whole))
    for first, last in [(0, 99), (5 * MIB - 10, 5 * MIB + 9), (MIB, 10 * MIB + 500), (len(whole) - 5, len(whole) + 50)]:
        ranged = client.get(f"/{bucket}/{key}", headers={**auth, "Range": f"bytes={first}-{last}"})
        assert ranged.status_code == 206 and ranged.data == whole[first : last + 1]
        end = min(last, len(whole) - 1)
        assert ranged.headers["Content-Range"] == f"bytes {first}-{end}/{len(whole)}"
    suffix = client.get(f"/{bucket}/{key}", headers={**auth, "Range": "bytes=-1500"})
    assert suffix.status_code == 206 and suffix.data == whole[-1500:]

    stored = models.s3_backends[ACCOUNT["account_id"]]["aws"].get_object(bucket, key)
    assert stored._value_buffer._buffer is None, "a GET joined the parts"
    assert stored.value == whole, "any other read still gets the object whole"
    client.delete(f"/{bucket}/{key}", headers=auth)
    client.delete(f"/{bucket}", headers=auth)


def crc64nvme(data):
    """CRC-64/NVME bit by bit: reflected, polynomial 0xad93d23594c93659, initial and final
    value all ones."""
    crc = (1 << 64) - 1
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x9A6C9329AC4BC9B5 if crc & 1 else crc >> 1
    return crc ^ ((1 << 64) - 1)


def test_the_crc_of_a_join_is_combined_from_the_crcs_of_its_pieces():
    assert crc64nvme(b"123456789") == 0xAE8B14860A799888, "the catalogue's check value"
    pieces = [b"", b"a", data(3, 1000), data(4, 4099), b"\0" * 77]
    for a in pieces:
        for b in pieces:
            combined = moto_s3_memory.crc_combine(zlib.crc32(a), zlib.crc32(b), len(b), 0xEDB88320, 32)
            assert combined == zlib.crc32(a + b)
            if len(a) + len(b) < 2000:
                combined = moto_s3_memory.crc_combine(crc64nvme(a), crc64nvme(b), len(b), 0x9A6C9329AC4BC9B5, 64)
                assert combined == crc64nvme(a + b)


def test_completing_reads_no_part_again_for_a_full_object_crc(ours, monkeypatch):
    crc32 = {"x-amz-checksum-algorithm": "CRC32", "x-amz-checksum-type": "FULL_OBJECT"}
    multipart = models.FakeMultipart("k", crc32, **ACCOUNT)
    parts = [data(1, 5 * MIB), data(2, 5 * MIB + 7), data(3, 1000)]
    etags = [(n, multipart.set_part(n, part).etag) for n, part in enumerate(parts, start=1)]

    class Unread:
        def crc32(self, *_):
            raise AssertionError("a part read again at completion")

    monkeypatch.setattr(moto_s3_memory, "binascii", Unread())
    _, _, (kind, checksum, count) = multipart.complete(iter(etags))
    assert (kind, count) == ("FULL_OBJECT", 1)
    assert checksum == base64.b64encode(zlib.crc32(b"".join(parts)).to_bytes(4, "big")).decode()
