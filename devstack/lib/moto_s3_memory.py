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
by joining its parts once, the full-object checksum computed over that join. The answers are
unchanged: the same validation in the same order (InvalidPart, EntityTooSmall, MalformedXML),
the same ETag (the MD5 of the object; for an upload, of the parts' MD5s, `-<count>`), the same
checksum, type and part count, a deleted object's value unreadable. The local stack holds its
objects in memory: about the size of the data the exports in it have unloaded and archived.
"""

import io

from moto.s3 import models
from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
from moto.s3.utils import compute_checksum
from moto.utilities.utils import md5_hash


def _get_value(self):
    with self.lock:
        buffer = self._value_buffer
        buffer.seek(0)
        return buffer.read()


def _set_value(self, new_value):
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
    values = []
    md5s = bytearray()
    last = None
    for part_number, etag in body:
        part = self.parts.get(part_number)
        part_etag = None
        if part is not None:
            part_etag = part.etag.replace('"', "")
            etag = etag.replace('"', "")
        if part is None or part_etag != etag:
            raise InvalidPart()
        if last is not None and last.contentsize < models.S3_UPLOAD_PART_MIN_SIZE:
            raise EntityTooSmall()
        md5s.extend(bytes.fromhex(part_etag))
        values.append(part.value)
        last = part
    if not values:
        raise MalformedXML

    total = b"".join(values)
    if checksums.checksum_type == "COMPOSITE":
        for value in values:
            checksums.addPart(value)
        checksum = checksums.build()
    else:
        checksum = (
            checksums.checksum_type,
            compute_checksum(total, checksums.checksum_algorithm).decode(),
            1,
        )
    full_etag = md5_hash()
    full_etag.update(bytes(md5s))
    return total, f"{full_etag.hexdigest()}-{len(values)}", checksum


def install():
    """Call before moto creates any object."""
    models.FakeKey.value = property(_get_value, _set_value)
    models.FakeKey.etag = property(_etag)
    models.FakeMultipart.complete = _complete
