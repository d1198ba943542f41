"""Keeps moto's S3 objects in memory, each held once, and completes a multipart upload with one
copy of the object.

moto keeps every object and uploaded part larger than 5 MiB in a temporary file on disk (its
`MOTO_S3_DEFAULT_KEY_BUFFER_SIZE`), so each upload is written to the disk once more than it is
received; smaller ones are copied into a buffer, and copied out again for every read, every
GET and every ETag. `CompleteMultipartUpload` then builds the object by copying it five times
(the parts into one buffer, again into the buffer of a full-object checksum, each of those once
more into bytes) before writing it to a file. In `scripts/bench` moto spent most of its time
in the archive stage on those copies and bounded the daemon's end-to-end rate, which is not
what S3 does to a client.

install() makes an object's value the bytes it was given, kept as they are (an `io.BytesIO`
over them shares them; reading it whole returns them without a copy), and completes an upload
without copying it: the object holds the parts' bytes and joins them once, when it is first
read other than by a GET, and the full-object checksum is computed over the parts in order, as
over their join. A GET sends the parts in turn, and a ranged GET joins only the range (a join
of each unloaded file, the first time the worker read it, was a copy of all of an export's
data that S3 does not make).
(Joining them at completion put a copy of the whole archive, hundreds of MB in scripts/bench,
at the end of the daemon's archive stage, which waits for CompleteMultipartUpload's answer;
S3 spends none of the client's time on it.) The answers are
unchanged: the same validation in the same order (InvalidPart, EntityTooSmall, MalformedXML),
the same ETag (the MD5 of the object; for an upload, of the parts' MD5s, `-<count>`), the same
checksum, type and part count, a deleted object's value unreadable. The local stack holds its
objects in memory: about the size of the data the exports in it have unloaded and archived.

moto also keeps every object and upload it ever made in a list of its class (for its dashboard
and `reset`), so a deleted object's bytes were never given back: the local stack grew by all
the data ever unloaded and archived in it, a gigabyte per export in scripts/bench. install()
makes those lists hold their objects weakly, so a deleted object is freed once nothing reads
it; `reset` still reaches every live one.
"""

import base64
import binascii
import functools
import hashlib
import io
import threading
import weakref
import zlib

from moto.core.compat import HAS_CRT
from moto.s3 import models, responses
from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
from moto.s3.utils import compute_checksum
from moto.utilities.utils import md5_hash


# Set while moto answers a GetObject: a completed upload's value is then its parts as they are.
_answering = threading.local()


def _get_value(self):
    with self.lock:
        buffer = self._value_buffer
        if getattr(_answering, "get", False) and isinstance(buffer, _Parts):
            pieces = buffer.pieces()
            if pieces is not None:
                return pieces
        buffer.seek(0)
        return buffer.read()


class _Parts:
    """A completed upload's value: its parts' bytes, joined into one buffer when it is first read.
    Closed (the object deleted), it cannot be read, like the buffer of any other object."""

    def __init__(self, values):
        self._values = values
        self._buffer = None
        self.size = sum(len(v) for v in values)

    def _joined(self):
        if self._buffer is None:
            self._buffer = io.BytesIO(b"".join(self._values))
            self._values = None
        return self._buffer

    def pieces(self):
        """The parts as a GET answers them, when they have not been joined."""
        return None if self._values is None else _Pieces(self._values, self.size)

    def seek(self, *args):
        return self._joined().seek(*args)

    def read(self, *args):
        return self._joined().read(*args)

    def close(self):
        self._values = None
        if self._buffer is None:
            self._buffer = io.BytesIO()
        self._buffer.close()


class _Pieces:
    """A completed upload's value as a GET answers it: the answer's body is the parts in turn,
    sent without joining them, and a range of it (moto slices the value for a `Range`) is
    joined from the parts it covers."""

    def __init__(self, values, size):
        self._values = values
        self._size = size

    def __len__(self):
        return self._size

    def __iter__(self):
        return iter(self._values)

    def __getitem__(self, wanted):
        start, stop, step = wanted.indices(self._size)
        if step != 1:
            raise ValueError("a value is sliced in steps of one")
        pieces, at = [], 0
        for value in self._values:
            end = at + len(value)
            if at < stop and end > start:
                pieces.append(memoryview(value)[max(start - at, 0) : min(stop, end) - at])
            at = end
        return b"".join(pieces)


def _get_object(self):
    _answering.get = True
    try:
        return _shipped_get_object(self)
    finally:
        _answering.get = False


def _set_value(self, new_value):
    if isinstance(new_value, _Parts):
        self._value_buffer = new_value
        self.contentsize = new_value.size
        return
    if isinstance(new_value, str):
        new_value = new_value.encode(models.DEFAULT_TEXT_ENCODING)
    # A reader holding the previous buffer still reads the previous value whole.
    self._value_buffer = io.BytesIO(bytes(new_value))
    self.contentsize = len(new_value)


def _etag(self):
    if self._etag is None:
        self._etag = md5_hash(self.value).hexdigest()
    return f'"{self._etag}"'


def _complete(self, body):
    checksums = models.MultipartChecksumBuilder(
        self.metadata.get("x-amz-checksum-algorithm"), self.metadata.get("x-amz-checksum-type")
    )
    md5s = bytearray()
    chosen = []
    for part_number, etag in body:
        part = self.parts.get(part_number)
        part_etag = None
        if part is not None:
            part_etag = part.etag.replace('"', "")
            etag = etag.replace('"', "")
        if part is None or part_etag != etag:
            raise InvalidPart()
        if chosen and chosen[-1].contentsize < models.S3_UPLOAD_PART_MIN_SIZE:
            raise EntityTooSmall()
        md5s.extend(bytes.fromhex(part_etag))
        chosen.append(part)
    if not chosen:
        raise MalformedXML
    values = [part.value for part in chosen]

    if checksums.checksum_type == "COMPOSITE":
        for value in values:
            checksums.addPart(value)
        checksum = checksums.build()
    else:
        algorithm = checksums.checksum_algorithm
        full = _combined_crc(chosen, algorithm)
        checksum = (checksums.checksum_type, full or _full_checksum(values, algorithm), 1)
    full_etag = md5_hash()
    full_etag.update(bytes(md5s))
    return _Parts(values), f"{full_etag.hexdigest()}-{len(values)}", checksum


def _full_checksum(values, algorithm):
    """moto's compute_checksum of the parts' join (base64 text), computed part after part."""
    kind = _crc_kind(algorithm)
    if kind == "CRC64NVME":
        from awscrt import checksums

        crc = 0
        for value in values:
            crc = checksums.crc64nvme(value, crc)
        return base64.b64encode(crc.to_bytes(8, "big")).decode()
    if kind == "CRC32":
        crc = 0
        for value in values:
            crc = binascii.crc32(value, crc)
        return base64.b64encode(crc.to_bytes(4, "big")).decode()
    if algorithm == "CRC32C":
        return compute_checksum(b"".join(values), algorithm).decode()
    digest = hashlib.sha1(usedforsecurity=False) if algorithm == "SHA1" else hashlib.sha256(usedforsecurity=False)
    for value in values:
        digest.update(value)
    return base64.b64encode(digest.digest()).decode()


# The full-object CRCs: reflected polynomial and width.
_CRCS = {"CRC32": (0xEDB88320, 32), "CRC64NVME": (0x9A6C9329AC4BC9B5, 64)}


def _crc_kind(algorithm):
    """The CRC moto computes for a full-object checksum of `algorithm`, if it is one of _CRCS
    (moto falls back to CRC-32 when the library for its algorithm is missing)."""
    if algorithm == "CRC64NVME" and HAS_CRT:
        return "CRC64NVME"
    if algorithm in ("CRC32", "CRC64NVME") or (algorithm == "CRC32C" and not _has_crc32c()):
        return "CRC32"
    return None


def _crc_of(value, kind):
    if kind == "CRC64NVME":
        from awscrt import checksums

        return checksums.crc64nvme(value, 0)
    return zlib.crc32(value)


def _set_part(self, part_id, value):
    """moto's set_part; a part of an upload with a full-object CRC also keeps its CRC."""
    key = _shipped_set_part(self, part_id, value)
    checksums = models.MultipartChecksumBuilder(
        self.metadata.get("x-amz-checksum-algorithm"), self.metadata.get("x-amz-checksum-type")
    )
    kind = _crc_kind(checksums.checksum_algorithm)
    if checksums.checksum_type == "FULL_OBJECT" and kind is not None:
        key.full_object_crc = (kind, _crc_of(key.value, kind))
    return key


def _combined_crc(parts, algorithm):
    """The full-object CRC of the parts' join (base64 text) from their own CRCs, or None when a
    part has none of that kind."""
    kind = _crc_kind(algorithm)
    if kind is None or any(getattr(p, "full_object_crc", (None,))[0] != kind for p in parts):
        return None
    poly, width = _CRCS[kind]
    crc = 0
    for part in parts:
        crc = crc_combine(crc, part.full_object_crc[1], part.contentsize, poly, width)
    return base64.b64encode(crc.to_bytes(width // 8, "big")).decode()


def crc_combine(crc1, crc2, len2, poly, width):
    """The CRC of A followed by B from A's CRC, B's CRC and B's length in bytes, for a reflected
    CRC of `width` bits with polynomial `poly` (zlib's crc32_combine, crc32.c)."""
    return _multmodp(_x8nmodp(len2, poly, width), crc1, poly, width) ^ crc2


def _multmodp(a, b, poly, width):
    """a times b modulo the polynomial (a not zero); bit width - 1 is x^0."""
    m, p = 1 << (width - 1), 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ poly if b & 1 else b >> 1


@functools.lru_cache(maxsize=64)
def _x8nmodp(n, poly, width):
    """x^(8n) modulo the polynomial (an upload's parts are mostly of one size: cached)."""
    p, square = 1 << (width - 1), 1 << (width - 9)
    while n:
        if n & 1:
            p = _multmodp(square, p, poly, width)
        n >>= 1
        square = _multmodp(square, square, poly, width)
    return p


def _has_crc32c():
    try:
        import crc32c  # noqa: F401
    except ImportError:
        return False
    return True


class _Tracked:
    """moto's list of a model's instances (`instances_tracked`), holding them weakly: the
    objects moto's backends still hold, in no particular order."""

    def __init__(self):
        self._live = weakref.WeakSet()

    def append(self, instance):
        self._live.add(instance)

    def __iter__(self):
        return iter(list(self._live))

    def __len__(self):
        return len(self._live)


_shipped_set_part = models.FakeMultipart.set_part
_shipped_get_object = responses.S3Response.get_object


def install():
    """Call before moto creates any object."""
    models.FakeKey.value = property(_get_value, _set_value)
    models.FakeKey.etag = property(_etag)
    models.FakeMultipart.complete = _complete
    models.FakeMultipart.set_part = _set_part
    responses.S3Response.get_object = _get_object
    models.FakeKey.instances_tracked = _Tracked()
    models.FakeMultipart.instances_tracked = _Tracked()
