"""Step 1 of a POST Object: the multipart form, streamed as it arrives.

S3 verifies the form when the file part begins (fields after the file are ignored), then takes
the file's bytes as they come, stopping at the policy's maximum. Nothing here holds the file:
the body is read a chunk at a time from wsgi.input, which reads the socket.
https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator, Mapping

import multipart

from local_s3.checksums import Checksum, RunningChecksum
from local_s3.errors import S3Error, invalid_argument
from local_s3.storage import Upload
from s3_rules import MAX_POST_PRE_DATA_BYTES

READ_CHUNK = 256 * 1024  # big enough that the hand-offs (read, hash, write) cost little


def body_chunks(environ: Mapping[str, object]) -> Iterator[bytes]:
    """The request body in chunks of at most READ_CHUNK, as it arrives. A client that hangs up
    or stalls before Content-Length bytes is IncompleteBody or RequestTimeout, as on S3."""
    stream = environ["wsgi.input"]
    length = int(str(environ.get("CONTENT_LENGTH") or 0))
    remaining = length
    while remaining > 0:
        chunk = read_some(stream, min(READ_CHUNK, remaining))
        if not chunk:
            raise S3Error(
                "IncompleteBody",
                NumberBytesExpected=length,
                NumberBytesProvided=length - remaining,
            )
        remaining -= len(chunk)
        yield chunk


def read_some(stream, size: int) -> bytes:
    try:
        return stream.read(size)
    except TimeoutError:
        raise S3Error("RequestTimeout") from None
    except ConnectionError:
        return b""


class FileSink:
    """Receives the file part, stopping as soon as the running size passes the policy's maximum;
    at the end, checks the minimum, the Content-MD5 field and the x-amz-checksum-* field, if the
    form sent them (the checksum is computed as the bytes pass, never over a held body)."""

    def __init__(
        self,
        upload: Upload,
        low: int,
        high: int,
        content_md5: str | None,
        checksum: RunningChecksum | None = None,
    ) -> None:
        self.upload, self.low, self.high, self.content_md5 = upload, low, high, content_md5
        self.checksum = checksum
        self.verified: Checksum | None = None

    def write(self, chunk: bytes) -> None:
        proposed = self.upload.size + len(chunk)
        if proposed > self.high:
            raise S3Error("EntityTooLarge", ProposedSize=proposed, MaxSizeAllowed=self.high)
        if self.checksum is not None:
            self.checksum.update(chunk)
        self.upload.write(chunk)

    def finish(self) -> None:
        if self.upload.size < self.low:
            raise S3Error("EntityTooSmall", ProposedSize=self.upload.size, MinSizeAllowed=self.low)
        check_content_md5(self.upload, self.content_md5)
        if self.checksum is not None:
            self.verified = self.checksum.verify()


def checked_content_md5(value: str | None) -> str | None:
    """Content-MD5 is the base64 of the 16-byte MD5 of the file."""
    if value is None:
        return None
    try:
        if len(base64.b64decode(value, validate=True)) == 16:
            return value
    except binascii.Error:
        pass
    raise S3Error("InvalidDigest", **{"Content-MD5": value})


def check_content_md5(upload: Upload, content_md5: str | None) -> None:
    received = base64.b64encode(bytes.fromhex(upload.md5.finish())).decode()
    if content_md5 is not None and received != content_md5:
        raise S3Error("BadDigest", ExpectedDigest=content_md5, CalculatedDigest=received)


class PostForm:
    """Turns multipart parser events into S3's three moments: fields arriving before the file,
    the file's first byte (`on_file`, which verifies the form and returns where bytes go) and
    the file's end. Fields after the file are ignored, as S3 ignores them."""

    def __init__(self, on_file: Callable[[dict[str, str], str | None], FileSink]) -> None:
        self.on_file = on_file
        self.fields: dict[str, str] = {}
        self.files = 0
        self.sink: FileSink | None = None
        self.part: str | None = None  # the field being read, "file", or None (ignored)
        self.value = bytearray()
        self.pre_data = 0

    def feed(self, event: multipart.MultipartSegment | bytes | None) -> None:
        if isinstance(event, multipart.MultipartSegment):
            self.begin(event)
        elif event is None:
            self.end()
        elif self.part == "file":
            self.sink.write(event)
        elif self.part is not None:
            self.add_pre_data(len(event))
            self.value += event

    def begin(self, segment: multipart.MultipartSegment) -> None:
        name = (segment.name or "").lower()
        if name == "file":
            self.files += 1
            if self.files > 1:
                raise one_file_required(self.files)
            self.sink = self.on_file(self.fields, segment.filename)
        self.part = name if name == "file" or self.sink is None else None
        if self.sink is None:
            self.add_pre_data(len(name))
        self.value = bytearray()

    def end(self) -> None:
        if self.part == "file":
            self.sink.finish()
        elif self.part is not None:
            self.add_field(self.part, self.value)
        self.part = None

    def add_field(self, name: str, raw: bytes) -> None:
        if name in self.fields:
            raise S3Error(
                "InvalidArgument",
                f"Bucket POST must contain only one field named '{name}'.",
                ArgumentName=name,
            )
        try:
            self.fields[name] = raw.decode()
        except UnicodeDecodeError:
            raise S3Error("MalformedPOSTRequest") from None

    def add_pre_data(self, size: int) -> None:
        """ "The form data and boundaries (excluding the contents of the file) cannot exceed
        20KB." """
        self.pre_data += size
        if self.pre_data > MAX_POST_PRE_DATA_BYTES:
            raise S3Error(
                "MaxPostPreDataLengthExceededError",
                MaxPostPreDataLengthBytes=MAX_POST_PRE_DATA_BYTES,
            )


def one_file_required(count: int) -> S3Error:
    return invalid_argument(
        "file", str(count), "POST requires exactly one file upload per request."
    )


def form_boundary(environ: Mapping[str, object]) -> str:
    """S3 answers a POST that is not multipart/form-data with 412 PreconditionFailed and a
    Condition element (as observed from S3, e.g. blueimp/jQuery-File-Upload issue #2586)."""
    content_type, options = multipart.parse_options_header(str(environ.get("CONTENT_TYPE", "")))
    if content_type != "multipart/form-data":
        raise S3Error(
            "PreconditionFailed",
            Condition="Bucket POST must be of the enclosure-type multipart/form-data",
        )
    if not options.get("boundary"):
        raise S3Error("MalformedPOSTRequest")
    return options["boundary"]


def read_post_form(environ: Mapping[str, object], form: PostForm) -> None:
    """Streams the body through multipart's push parser; any malformation is S3's
    MalformedPOSTRequest. A form that ends without a file part is InvalidArgument."""
    try:
        with multipart.PushMultipartParser(form_boundary(environ)) as parser:
            for chunk in body_chunks(environ):
                if parser.closed:
                    break
                for event in parser.parse(chunk):
                    form.feed(event)
            for event in parser.parse(b""):
                form.feed(event)
    except multipart.MultipartError:
        raise S3Error("MalformedPOSTRequest") from None
    if form.files == 0:
        raise one_file_required(0)
