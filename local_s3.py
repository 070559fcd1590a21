"""An embedded, strict Amazon S3 for browser uploads: POST Object, GET/HEAD/PUT Object, CORS
(the configured origins, or the bucket's rules set with PUT ?cors).

It is not a stand-in that accepts anything. Every upload is checked the way Amazon S3 checks it
(form fields, policy document, SigV4 signature, expiry, each policy condition, the size range)
and every failure answers with S3's status code and S3's XML error, so code that works here
works against AWS. Real S3 is the reference; the rules come from its documentation:

- POST Object: https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html
- POST policy: https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html
- Errors:      https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html
- Query auth:  https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
- CORS:        https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketCors.html

Run it alone (the secret key is written to DATA/credentials, never printed):

    python local_s3.py --port 9000 --data ./data --bucket uploads

Where AWS documents no exact answer, the choices made here (kept strict, and marked in the code):
a POST without `policy` is an anonymous upload to a private bucket (AccessDenied); a starts-with
condition on a field that allows only exact matches fails like any unmet condition; a condition
on a field the form did not send fails; a field sent twice before the file is InvalidArgument;
the InvalidPolicyDocument texts other than "Invalid Policy: Invalid JSON." are ours; an upload
over the maximum reports as ProposedSize the bytes received when reading stopped.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import contextlib
import errno
import functools
import hashlib
import hmac
import json
import logging
import os
import queue
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qsl, quote, urlencode, urlsplit
from xml.etree import ElementTree

import bottle
import multipart
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import create_server

import signer

LOG = logging.getLogger("local_s3")


# === Configuration ===============================================================================


def utc_now() -> datetime:
    """The default clock. Read once per request, at the route, and passed down."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class S3Config:
    """Everything the local S3 needs, read in one place. The secret keys never appear in repr."""

    data_dir: Path
    buckets: tuple[str, ...]
    credentials: Mapping[str, str] = field(repr=False)
    region: str = "us-east-1"
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 5 * 1024**3  # S3's limit for a POST upload is 5 GB
    clock: Callable[[], datetime] = field(default=utc_now, compare=False, repr=False)


SERVICE = "s3"
TERMINATOR = "aws4_request"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600  # "X-Amz-Expires ... maximum 604800 seconds (7 days)"
# "The name for a key is a sequence of Unicode characters whose UTF-8 encoding is at most 1024
# bytes long."
MAX_KEY_BYTES = 1024
# "The form data and boundaries (excluding the contents of the file) cannot exceed 20KB."
MAX_PRE_DATA_BYTES = 20 * 1024
MAX_METADATA_BYTES = 2 * 1024  # user-defined metadata is limited to 2 KB (names plus values)
MAX_FORM_OVERHEAD = 64 * 1024  # room for the fields and boundaries around a maximum-size file
MAX_CLOCK_SKEW = timedelta(minutes=15)  # header-signed requests must be within 15 minutes
READ_CHUNK = 256 * 1024
DEFAULT_CONTENT_TYPE = "binary/octet-stream"  # what S3 stores when the form sends no Content-Type
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
XML_CONTENT_TYPE = {"Content-Type": "application/xml"}

# fmt: off
CANNED_ACLS = frozenset((
    "private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
    "bucket-owner-read", "bucket-owner-full-control",
))
ANONYMOUS_READ_ACLS = frozenset({"public-read", "public-read-write"})
# Fields the policy never has to mention: "Each form field that you specify in a form (except
# x-amz-signature, file, policy, and field names that have an x-ignore- prefix) must appear in
# the list of conditions."
UNCONDITIONED_FIELDS = frozenset({"policy", "x-amz-signature", "file"})
# The POST policy conditions table: only these (and x-amz-meta-*) accept "starts-with".
STARTS_WITH_FIELDS = frozenset((
    "acl", "key", "cache-control", "content-type", "content-disposition", "content-encoding",
    "expires", "success_action_redirect", "redirect",
))
# fmt: on
# REST headers a POST form may set; S3 keeps them with the object and returns them on GET.
STORED_HEADERS = {
    "cache-control": "Cache-Control",
    "content-disposition": "Content-Disposition",
    "content-encoding": "Content-Encoding",
    "expires": "Expires",
}
CORS_METHODS = ("GET", "HEAD", "POST", "PUT")
CORS_CONFIG_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "HEAD"})
MAX_CORS_RULES = 100
MAX_CORS_XML_BYTES = 64 * 1024
S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# === Errors: S3's codes, statuses and messages ===================================================
# https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html#ErrorCodeList


class S3Error(Exception):
    """An S3 error response. Extra keyword arguments become extra XML elements, in order."""

    code = "InternalError"
    status = 500
    message = "We encountered an internal error. Please try again."

    def __init__(self, message: str | None = None, **elements: object) -> None:
        self.message = message or type(self).message
        self.elements = elements
        super().__init__(self.message)


class InternalError(S3Error):
    pass


class BadRequest(S3Error):
    code, status, message = "BadRequest", 400, "Bad Request"


class InvalidArgument(S3Error):
    code, status, message = "InvalidArgument", 400, "Invalid Argument"


class InvalidRequest(S3Error):
    code, status, message = "InvalidRequest", 400, "Invalid Request"


class InvalidDigest(S3Error):
    code, status, message = "InvalidDigest", 400, "The Content-MD5 you specified is not valid."


class BadDigest(S3Error):
    code, status = "BadDigest", 400
    message = "The Content-MD5 you specified did not match what we received."


class InvalidToken(S3Error):
    """This S3 issues no temporary credentials, so any session token is one it cannot know."""

    code, status = "InvalidToken", 400
    message = "The provided token is malformed or otherwise invalid."


class InvalidPolicyDocument(S3Error):
    code, status = "InvalidPolicyDocument", 400
    message = (
        "The content of the form does not meet the conditions specified in the policy document."
    )


class MalformedPOSTRequest(S3Error):
    code, status = "MalformedPOSTRequest", 400
    message = "The body of your POST request is not well-formed multipart/form-data."


class MaxPostPreDataLengthExceeded(S3Error):
    code, status = "MaxPostPreDataLengthExceededError", 400
    message = "Your POST request fields preceding the upload file were too large."


class EntityTooLarge(S3Error):
    code, status = "EntityTooLarge", 400
    message = "Your proposed upload exceeds the maximum allowed size"


class EntityTooSmall(S3Error):
    code, status = "EntityTooSmall", 400
    message = "Your proposed upload is smaller than the minimum allowed object size."


class IncompleteBody(S3Error):
    code, status = "IncompleteBody", 400
    message = "You did not provide the number of bytes specified by the Content-Length HTTP header"


class KeyTooLongError(S3Error):
    code, status, message = "KeyTooLongError", 400, "Your key is too long"


class MetadataTooLarge(S3Error):
    code, status = "MetadataTooLarge", 400
    message = "Your metadata headers exceed the maximum allowed metadata size."


class AuthorizationHeaderMalformed(S3Error):
    code, status = "AuthorizationHeaderMalformed", 400
    message = "The authorization header that you provided is not valid."


class AuthorizationQueryParametersError(S3Error):
    code, status = "AuthorizationQueryParametersError", 400
    message = (
        "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
        "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
    )


class XAmzContentSHA256Mismatch(S3Error):
    code, status = "XAmzContentSHA256Mismatch", 400
    message = "The provided 'x-amz-content-sha256' header does not match what was computed."


class AccessDenied(S3Error):
    code, status, message = "AccessDenied", 403, "Access Denied"


class CORSForbidden(AccessDenied):
    """A refused preflight. Its answer carries no Access-Control-Allow-Origin, like S3's."""

    message = (
        "CORSResponse: This CORS request is not allowed. This is usually because the "
        "evalution of Origin, request method / Access-Control-Request-Method or "
        "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec."
    )


class InvalidAccessKeyId(S3Error):
    code, status = "InvalidAccessKeyId", 403
    message = "The AWS Access Key Id you provided does not exist in our records."


class SignatureDoesNotMatch(S3Error):
    """Carries the StringToSign S3 computed: comparing it with yours is how you find the bug."""

    code, status = "SignatureDoesNotMatch", 403
    message = (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."
    )


class RequestTimeTooSkewed(S3Error):
    code, status = "RequestTimeTooSkewed", 403
    message = "The difference between the request time and the current time is too large."


class NoSuchBucket(S3Error):
    code, status, message = "NoSuchBucket", 404, "The specified bucket does not exist"


class NoSuchKey(S3Error):
    code, status, message = "NoSuchKey", 404, "The specified key does not exist."


class MethodNotAllowed(S3Error):
    code, status = "MethodNotAllowed", 405
    message = "The specified method is not allowed against this resource."


class MalformedXML(S3Error):
    code, status = "MalformedXML", 400
    message = (
        "The XML you provided was not well-formed or did not validate against our published schema"
    )


class NoSuchCORSConfiguration(S3Error):
    code, status, message = "NoSuchCORSConfiguration", 404, "The CORS configuration does not exist"


class MissingContentLength(S3Error):
    code, status = "MissingContentLength", 411
    message = "You must provide the Content-Length HTTP header."


class NotImplementedByLocalS3(S3Error):
    code, status = "NotImplemented", 501
    message = "A header you provided implies functionality that is not implemented"


class PreconditionFailed(S3Error):
    code, status = "PreconditionFailed", 412
    message = "At least one of the pre-conditions you specified did not hold"


def missing_field(name: str) -> InvalidArgument:
    """S3's answer when a required field is absent, or was sent after the file (and ignored)."""
    return InvalidArgument(
        f"Bucket POST must contain a field named '{name}'.  "
        "If it is specified, please check the order of the fields.",
        ArgumentName=name,
        ArgumentValue="",
    )


def condition_failed(condition: Condition) -> AccessDenied:
    return AccessDenied(f"Invalid according to Policy: Policy Condition failed: {condition.source}")


def xml_text(value: object) -> str:
    """Escaped text for an XML element; characters XML 1.0 cannot carry become U+FFFD."""
    return XML_ILLEGAL.sub("\ufffd", str(value)).replace("&", "&amp;").replace("<", "&lt;")


def xml_document(root: str, elements: Mapping[str, object]) -> bytes:
    body = "".join(f"<{name}>{xml_text(value)}</{name}>" for name, value in elements.items())
    return f"{XML_DECLARATION}<{root}>{body}</{root}>".encode()


def error_xml(error: S3Error, request_id: str, host_id: str) -> bytes:
    """S3's error body: Code, Message, the error's own elements, then RequestId and HostId."""
    elements = {"Code": error.code, "Message": error.message, **error.elements}
    return xml_document("Error", {**elements, "RequestId": request_id, "HostId": host_id})


# === Storage: objects named by hash, replaced atomically =========================================


@dataclass(frozen=True)
class StoredObject:
    """An object as S3 would describe it, plus where its bytes are on disk."""

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str
    metadata: Mapping[str, str]
    acl: str
    headers: Mapping[str, str]
    last_modified: datetime
    path: Path


class BackgroundMD5:
    """MD5 computed in its own thread. hashlib releases the GIL on large buffers, so hashing
    overlaps writing the file instead of adding to it; the queue is bounded (a few MB), so a
    slow hash slows the upload down rather than filling memory."""

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, name="local-s3-md5", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._md5.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def finish(self) -> str:
        """Waits for the last chunk and returns the hex digest; safe to call more than once."""
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()
        return self._md5.hexdigest()


class Upload:
    """A file part arriving: written to a temporary file and hashed as it streams, never held."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO | None = None
        self.md5: BackgroundMD5 | None = None
        self.size = 0

    def begin(self) -> None:
        self.file = self.path.open("xb")
        self.md5 = BackgroundMD5()

    def write(self, chunk: bytes) -> None:
        self.md5.update(chunk)
        self.file.write(chunk)
        self.size += len(chunk)

    @property
    def etag(self) -> str:
        """S3's ETag for a single-part upload: the quoted hex MD5 of the bytes."""
        return f'"{self.md5.finish()}"'

    def close(self) -> None:
        """On a full disk, closing flushes the buffer and fails again: the hashing thread
        must still end."""
        try:
            if self.file is not None:
                self.file.close()
        finally:
            if self.md5 is not None:
                self.md5.finish()

    def discard(self) -> None:
        try:
            self.close()
        finally:
            self.path.unlink(missing_ok=True)


class ObjectStore:
    """Objects on disk: data_dir/blobs/<random> holds bytes, data_dir/objects/<hash>.json the rest.

    A record's file name is the SHA-256 of bucket and key, never a path built from the key, so no
    key (``..``, ``/etc/passwd``, NUL, 1024 bytes of emoji) can name a file outside the folder.
    A new object is one os.replace of its record, which points at a fresh blob: readers see the
    old object or the new one, whole, never a mix ("Amazon S3 never stores partial objects").
    """

    def __init__(self, data_dir: Path) -> None:
        self.tmp_dir = data_dir / ".tmp"
        self.blob_dir = data_dir / "blobs"
        self.record_dir = data_dir / "objects"
        self.cors_dir = data_dir / "cors"
        for folder in (self.tmp_dir, self.blob_dir, self.record_dir, self.cors_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._locks = tuple(threading.Lock() for _ in range(64))

    def record_path(self, bucket: str, key: str) -> Path:
        digest = hashlib.sha256(f"{bucket}\0{key}".encode()).hexdigest()
        return self.record_dir / f"{digest}.json"

    @contextlib.contextmanager
    def upload(self) -> Iterator[Upload]:
        """A temporary file that is removed unless commit() moved it into place."""
        upload = Upload(self.tmp_dir / f"{uuid.uuid4().hex}.part")
        try:
            yield upload
        finally:
            upload.discard()

    def commit(self, upload: Upload, record: Mapping[str, object]) -> StoredObject:
        """Blob first, then the record in one os.replace; the replaced object's blob goes last.
        Concurrent commits of one key take turns (a lock per key hash) to swap the record, so
        each removes exactly the blob it replaced: last complete write wins, nothing leaks."""
        upload.close()
        blob = self.blob_dir / uuid.uuid4().hex
        record = {**record, "size": upload.size, "etag": upload.etag, "blob": blob.name}
        staged = self.tmp_dir / f"{blob.name}.json"
        target = self.record_path(str(record["bucket"]), str(record["key"]))
        try:
            os.replace(upload.path, blob)
            staged.write_text(json.dumps(record), encoding="utf-8")
            with self._lock_for(target):
                previous = self._blob_name(target)
                os.replace(staged, target)
        except BaseException:
            blob.unlink(missing_ok=True)
            staged.unlink(missing_ok=True)
            raise
        if previous:
            (self.blob_dir / previous).unlink(missing_ok=True)
        return self._stored(record)

    def get(self, bucket: str, key: str) -> StoredObject | None:
        try:
            text = self.record_path(bucket, key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return self._stored(json.loads(text))

    def open(self, bucket: str, key: str) -> tuple[StoredObject, BinaryIO] | None:
        """The object and its open blob. A concurrent upload may delete the blob between reading
        the record and opening it, so read the (new) record again; once open, the bytes stay."""
        for _attempt in range(5):
            stored = self.get(bucket, key)
            if stored is None:
                return None
            with contextlib.suppress(FileNotFoundError):
                return stored, stored.path.open("rb")
        return None

    def cors_rules(self, bucket: str) -> tuple[CorsRule, ...] | None:
        try:
            rules = json.loads(self.cors_path(bucket).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return tuple(CorsRule(*(tuple(v) if isinstance(v, list) else v for v in r)) for r in rules)

    def set_cors_rules(self, bucket: str, rules: tuple[CorsRule, ...] | None) -> None:
        """Replaces (or, with None, deletes) a bucket's CORS configuration atomically."""
        if rules is None:
            self.cors_path(bucket).unlink(missing_ok=True)
            return
        staged = self.tmp_dir / f"{uuid.uuid4().hex}.cors.json"
        staged.write_text(json.dumps([astuple(rule) for rule in rules]), encoding="utf-8")
        os.replace(staged, self.cors_path(bucket))

    def cors_path(self, bucket: str) -> Path:
        return self.cors_dir / f"{hashlib.sha256(bucket.encode()).hexdigest()}.json"

    def records(self) -> list[StoredObject]:
        return [
            self._stored(json.loads(path.read_text("utf-8"))) for path in self.record_dir.iterdir()
        ]

    def leftover_files(self) -> list[Path]:
        """Temporary files, and blobs no record points at. Between requests: none."""
        referenced = {stored.path for stored in self.records()}
        blobs = [path for path in self.blob_dir.iterdir() if path not in referenced]
        return sorted([*self.tmp_dir.iterdir(), *blobs])

    def remove_leftovers(self) -> int:
        """A process killed mid-upload (SIGKILL, power loss) leaves its temporary file, or a blob
        no record points at yet; they were never objects. Only safe with no upload in flight,
        so LocalS3 calls it before it serves, and one folder belongs to one server."""
        leftovers = self.leftover_files()
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    def _lock_for(self, target: Path) -> threading.Lock:
        return self._locks[int(target.stem[:8], 16) % len(self._locks)]

    def _blob_name(self, target: Path) -> str | None:
        try:
            return json.loads(target.read_text(encoding="utf-8"))["blob"]
        except FileNotFoundError:
            return None

    def _stored(self, record: Mapping) -> StoredObject:
        return StoredObject(
            bucket=record["bucket"],
            key=record["key"],
            size=record["size"],
            etag=record["etag"],
            content_type=record["content_type"],
            metadata=record["metadata"],
            acl=record["acl"],
            headers=record["headers"],
            last_modified=datetime.fromisoformat(record["last_modified"]),
            path=self.blob_dir / Path(record["blob"]).name,
        )


def stored_object(config: S3Config, bucket: str, key: str) -> StoredObject | None:
    """The object stored under bucket/key, or None: what tests check after an upload."""
    return ObjectStore(config.data_dir).get(bucket, key)


def list_objects(config: S3Config) -> list[StoredObject]:
    """Every stored object, in no particular order."""
    return ObjectStore(config.data_dir).records()


def leftover_files(config: S3Config) -> list[Path]:
    """Temporary files and unreferenced blobs. After any finished request there must be none:
    a rejected or interrupted upload leaves nothing behind."""
    return ObjectStore(config.data_dir).leftover_files()


# === SigV4 credentials, shared by POST forms and signed GET/HEAD =================================


@dataclass(frozen=True)
class CredentialScope:
    """The parsed x-amz-credential: access key id / date / region / service / aws4_request."""

    access_key: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return signer.credential_scope(self.date, self.region, self.service)


def parse_credential(value: str, region: str) -> CredentialScope:
    """Checks the credential's shape, region and service. Raises ValueError with S3's wording;
    each caller wraps it in the error code S3 uses for that kind of request."""
    parts = value.split("/")
    if len(parts) != 5 or not all(parts) or not re.fullmatch(r"\d{8}", parts[1]):
        raise ValueError(
            "the Credential is mal-formed; expecting "
            '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    access_key, date, scope_region, service, terminal = parts
    if scope_region != region:
        raise ValueError(f"the region '{scope_region}' is wrong; expecting '{region}'")
    if service != SERVICE:
        raise ValueError(f'incorrect service "{service}". This endpoint belongs to "{SERVICE}".')
    if terminal != TERMINATOR:
        raise ValueError(f'incorrect terminal "{terminal}". This endpoint uses "aws4_request".')
    return CredentialScope(access_key, date, scope_region, service)


def parse_amz_date(value: str) -> datetime:
    try:
        if AMZ_DATE.fullmatch(value):
            return datetime.strptime(value, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        pass  # e.g. month 13
    raise ValueError("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")


def check_credential_date(credential: CredentialScope, amz_date: str) -> None:
    if not amz_date.startswith(credential.date):
        raise ValueError(
            f'Invalid credential date "{credential.date}". '
            f'This date is not the same as X-Amz-Date: "{amz_date[:8]}".'
        )


def secret_for(config: S3Config, access_key: str) -> str:
    secret = config.credentials.get(access_key)
    if secret is None:
        raise InvalidAccessKeyId(AWSAccessKeyId=access_key)
    return secret


def signatures_match(expected: str, provided: str) -> bool:
    """Constant time, and on bytes: a non-ASCII signature must fail, not raise."""
    return hmac.compare_digest(expected.encode(), provided.encode("utf-8", "replace"))


# === POST policy: parse, check signature, expiry and every condition ============================
# https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html


@dataclass(frozen=True)
class Condition:
    """One policy condition. `source` is how S3 quotes it back: ["eq", "$key", "a.txt"]."""

    operator: str  # "eq", "starts-with" or "content-length-range"
    field: str  # lowercased form field name, without "$"
    value: str | tuple[int, int]
    source: str


@dataclass(frozen=True)
class Policy:
    expiration: datetime
    conditions: tuple[Condition, ...]

    def size_range(self, max_body_bytes: int) -> tuple[int, int]:
        """All content-length-range conditions must hold, and S3's own 5 GB limit too."""
        low, high = 0, max_body_bytes
        for condition in self.conditions:
            if condition.operator == "content-length-range":
                low, high = max(low, condition.value[0]), min(high, condition.value[1])
        return low, high


def invalid_policy(detail: str) -> InvalidPolicyDocument:
    return InvalidPolicyDocument(f"Invalid Policy: {detail}")


def parse_policy(policy_base64: str) -> Policy:
    """The policy field is base64 of a UTF-8 JSON document with expiration and conditions."""
    try:
        document = json.loads(base64.b64decode(policy_base64, validate=True))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: [[[[...]]]]
        raise invalid_policy("Invalid JSON.") from None
    if not isinstance(document, dict):
        raise invalid_policy("Invalid JSON.")
    if "expiration" not in document:
        raise invalid_policy("Policy missing expiration.")
    conditions = document.get("conditions")
    if not isinstance(conditions, list):
        raise invalid_policy("Policy missing conditions.")
    expiration = parse_expiration(document["expiration"])
    return Policy(expiration, tuple(parse_condition(item) for item in conditions))


def parse_expiration(value: object) -> datetime:
    """ISO 8601 in GMT, e.g. 2015-12-30T12:00:00.000Z."""
    try:
        expiration = datetime.fromisoformat(str(value))
    except ValueError:
        raise invalid_policy(f"Invalid 'expiration' value: '{value}'") from None
    if not isinstance(value, str) or expiration.tzinfo is None:
        raise invalid_policy(f"Invalid 'expiration' value: '{value}'")
    return expiration


def parse_condition(item: object) -> Condition:
    """Exact match {"field": "value"}, or a list: ["eq" | "starts-with", "$field", "value"] or
    ["content-length-range", min, max]."""
    if isinstance(item, dict):
        if len(item) != 1:
            raise invalid_policy(
                "Invalid Simple-Condition: Simple-Conditions must have exactly one property "
                "specified."
            )
        [(name, value)] = item.items()
        return field_condition("eq", f"${name}", value)
    if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)):
        raise invalid_policy(f"Invalid Condition: {json.dumps(item)}")
    operator = item[0].lower()
    if operator == "content-length-range":
        return length_condition(item[1], item[2])
    if operator in ("eq", "starts-with"):
        return field_condition(operator, item[1], item[2])
    raise invalid_policy(f"Invalid Condition Operator: {item[0]}")


def field_condition(operator: str, name: object, value: object) -> Condition:
    source = json.dumps([operator, name, value], ensure_ascii=False)
    if not (isinstance(name, str) and name.startswith("$") and isinstance(value, str)):
        raise invalid_policy(f"Invalid Condition: {source}")
    return Condition(operator, name[1:].lower(), value, source)


def length_condition(low: object, high: object) -> Condition:
    source = json.dumps(["content-length-range", low, high])
    bounds_are_ints = all(type(bound) is int for bound in (low, high))
    if not bounds_are_ints or not 0 <= low <= high:
        raise invalid_policy(f"Invalid content-length-range: {source}")
    return Condition("content-length-range", "", (low, high), source)


def verify_post_form(
    fields: Mapping[str, str], bucket: str, config: S3Config, now: datetime
) -> Policy:
    """Everything S3 checks before accepting the first byte of the file, in S3's order.

    `fields` are the form fields sent before the file, names lowercased, ${filename} expanded.
    """
    if "key" not in fields:
        raise missing_field("key")
    if "policy" not in fields:
        raise AccessDenied()  # no policy: an anonymous upload, and the bucket is not public
    policy = parse_policy(fields["policy"])
    credential = post_credential(fields, config.region)
    if "x-amz-security-token" in fields:
        raise InvalidToken(Token=fields["x-amz-security-token"])
    verify_post_signature(fields, credential, config)
    if now >= policy.expiration:
        raise AccessDenied("Invalid according to Policy: Policy expired.")
    check_conditions(policy.conditions, {**fields, "bucket": bucket})
    check_extra_fields(fields, policy.conditions)
    return policy


def post_credential(fields: Mapping[str, str], region: str) -> CredentialScope:
    """x-amz-algorithm, x-amz-credential and x-amz-date: present, well-formed and consistent."""
    for name in ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature"):
        if name not in fields:
            raise missing_field(name)
    if fields["x-amz-algorithm"] != signer.ALGORITHM:
        raise invalid_field(
            "x-amz-algorithm", fields, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"'
        )
    try:
        credential = parse_credential(fields["x-amz-credential"], region)
    except ValueError as problem:
        raise invalid_field("x-amz-credential", fields, str(problem), Region=region) from None
    try:
        parse_amz_date(fields["x-amz-date"])
        check_credential_date(credential, fields["x-amz-date"])
    except ValueError as problem:
        raise invalid_field("x-amz-date", fields, str(problem)) from None
    return credential


def invalid_field(name: str, fields: Mapping[str, str], problem: str, **extra) -> InvalidArgument:
    return InvalidArgument(problem, ArgumentName=name, ArgumentValue=fields[name], **extra)


def verify_post_signature(
    fields: Mapping[str, str], credential: CredentialScope, config: S3Config
) -> None:
    """For a POST, the string to sign is the base64 policy itself, exactly as sent."""
    secret = secret_for(config, credential.access_key)
    key = signer.signing_key(secret, credential.date, credential.region, credential.service)
    expected = signer.signature(key, fields["policy"])
    if not signatures_match(expected, fields["x-amz-signature"]):
        raise SignatureDoesNotMatch(
            AWSAccessKeyId=credential.access_key,
            StringToSign=fields["policy"],
            SignatureProvided=fields["x-amz-signature"],
        )


def check_conditions(conditions: tuple[Condition, ...], values: Mapping[str, str]) -> None:
    for condition in conditions:
        if not condition_holds(condition, values):
            raise condition_failed(condition)


def condition_holds(condition: Condition, values: Mapping[str, str]) -> bool:
    """A condition on a field the form did not send fails. Sizes are checked while streaming."""
    if condition.operator == "content-length-range":
        return True
    value = values.get(condition.field)
    if value is None:
        return False
    if condition.operator == "eq":
        return value == condition.value
    if not allows_starts_with(condition.field):
        return False
    if condition.field == "content-type":
        # "Content-Types values for a starts-with condition that include commas are interpreted
        # as lists. Each value in the list must meet the condition for the whole to pass."
        return all(part.strip().startswith(condition.value) for part in value.split(","))
    return value.startswith(condition.value)


def allows_starts_with(name: str) -> bool:
    return name in STARTS_WITH_FIELDS or name.startswith("x-amz-meta-")


def check_extra_fields(fields: Mapping[str, str], conditions: tuple[Condition, ...]) -> None:
    covered = {condition.field for condition in conditions}
    for name in fields:
        exempt = name in UNCONDITIONED_FIELDS or name.startswith("x-ignore-")
        if not exempt and name not in covered:
            raise AccessDenied(f"Invalid according to Policy: Extra input fields: {name}")


def expand_filename(fields: Mapping[str, str], filename: str | None) -> dict[str, str]:
    """S3 replaces ${filename} in every field before checking the policy, with the name of the
    uploaded file: only the text after the last slash or backslash, or "" when none was sent."""
    name = re.split(r"[/\\]", filename or "")[-1]
    return {
        field_name: value
        if field_name in ("policy", "x-amz-signature")
        else value.replace("${filename}", name)
        for field_name, value in fields.items()
    }


def checked_key(key: str) -> str:
    size = len(key.encode())
    if size == 0:
        raise InvalidArgument(
            "User key must have a length greater than 0.", ArgumentName="key", ArgumentValue=""
        )
    if size > MAX_KEY_BYTES:
        raise KeyTooLongError(Size=size, MaxSizeAllowed=MAX_KEY_BYTES)
    return key


def object_attributes(fields: Mapping[str, str]) -> dict[str, object]:
    """What S3 keeps from the form besides the bytes: type, ACL, headers, x-amz-meta-*."""
    acl = fields.get("acl", "private")
    if acl not in CANNED_ACLS:
        raise InvalidArgument(ArgumentName="x-amz-acl", ArgumentValue=acl)
    metadata = {n: v for n, v in fields.items() if n.startswith("x-amz-meta-")}
    if not all(HTTP_TOKEN.fullmatch(name) for name in metadata):
        raise InvalidArgument("Your metadata headers are not valid.")
    if sum(len(n.encode()) + len(v.encode()) for n, v in metadata.items()) > MAX_METADATA_BYTES:
        raise MetadataTooLarge(MaxSizeAllowed=MAX_METADATA_BYTES)
    return {
        "content_type": fields.get("content-type", DEFAULT_CONTENT_TYPE),
        "acl": acl,
        "metadata": metadata,
        "headers": {STORED_HEADERS[n]: v for n, v in fields.items() if n in STORED_HEADERS},
    }


# === POST Object: streaming the multipart form ===================================================


class FileSink:
    """Receives the file part, stopping as soon as the running size passes the policy's maximum;
    at the end, checks the minimum and the Content-MD5 field, if the form sent one."""

    def __init__(self, upload: Upload, low: int, high: int, content_md5: str | None) -> None:
        self.upload, self.low, self.high, self.content_md5 = upload, low, high, content_md5

    def write(self, chunk: bytes) -> None:
        proposed = self.upload.size + len(chunk)
        if proposed > self.high:
            raise EntityTooLarge(ProposedSize=proposed, MaxSizeAllowed=self.high)
        self.upload.write(chunk)

    def finish(self) -> None:
        if self.upload.size < self.low:
            raise EntityTooSmall(ProposedSize=self.upload.size, MinSizeAllowed=self.low)
        check_content_md5(self.upload, self.content_md5)


def check_content_md5(upload: Upload, content_md5: str | None) -> None:
    received = base64.b64encode(bytes.fromhex(upload.md5.finish())).decode()
    if content_md5 is not None and received != content_md5:
        raise BadDigest(ExpectedDigest=content_md5, CalculatedDigest=received)


def checked_content_md5(value: str | None) -> str | None:
    """Content-MD5 is the base64 of the 16-byte MD5 of the file."""
    if value is None:
        return None
    try:
        if len(base64.b64decode(value, validate=True)) == 16:
            return value
    except binascii.Error:
        pass
    raise InvalidDigest(**{"Content-MD5": value})


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
            raise InvalidArgument(
                f"Bucket POST must contain only one field named '{name}'.", ArgumentName=name
            )
        try:
            self.fields[name] = raw.decode()
        except UnicodeDecodeError:
            raise MalformedPOSTRequest() from None

    def add_pre_data(self, size: int) -> None:
        self.pre_data += size
        if self.pre_data > MAX_PRE_DATA_BYTES:
            raise MaxPostPreDataLengthExceeded(MaxPostPreDataLengthBytes=MAX_PRE_DATA_BYTES)


def one_file_required(count: int) -> InvalidArgument:
    return InvalidArgument(
        "POST requires exactly one file upload per request.",
        ArgumentName="file",
        ArgumentValue=str(count),
    )


def form_boundary(environ: Mapping[str, object]) -> str:
    """S3 answers a POST that is not multipart/form-data with 412 PreconditionFailed and a
    Condition element (as observed from S3, e.g. blueimp/jQuery-File-Upload issue #2586)."""
    content_type, options = multipart.parse_options_header(str(environ.get("CONTENT_TYPE", "")))
    if content_type != "multipart/form-data":
        raise PreconditionFailed(
            Condition="Bucket POST must be of the enclosure-type multipart/form-data"
        )
    if not options.get("boundary"):
        raise MalformedPOSTRequest()
    return options["boundary"]


def body_chunks(environ: Mapping[str, object]) -> Iterator[bytes]:
    """The request body in chunks, as it arrives (LocalS3 streams it: a read may wait for the
    client) or from waitress's buffer; either way memory stays flat."""
    stream = environ["wsgi.input"]
    remaining = int(str(environ.get("CONTENT_LENGTH") or 0))
    while remaining > 0:
        chunk = stream.read(min(READ_CHUNK, remaining))
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk


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
        raise MalformedPOSTRequest() from None
    if form.files == 0:
        raise one_file_required(0)


@dataclass
class PostObject:
    """One POST Object request, from its first form field to the stored object."""

    config: S3Config
    bucket: str
    now: datetime
    upload: Upload
    fields: dict[str, str] = field(default_factory=dict)

    def on_file(self, fields: dict[str, str], filename: str | None) -> FileSink:
        self.fields = expand_filename(fields, filename)
        policy = verify_post_form(self.fields, self.bucket, self.config, self.now)
        checked_key(self.fields["key"])
        object_attributes(self.fields)
        content_md5 = checked_content_md5(self.fields.get("content-md5"))
        low, high = policy.size_range(self.config.max_body_bytes)
        self.upload.begin()
        return FileSink(self.upload, low, high, content_md5)

    def record(self) -> dict[str, object]:
        return {
            "bucket": self.bucket,
            "key": self.fields["key"],
            "last_modified": self.now.isoformat(),
            **object_attributes(self.fields),
        }


def post_success(
    fields: Mapping[str, str], stored: StoredObject, location: str
) -> bottle.HTTPResponse:
    """success_action_redirect wins (303); else success_action_status 200, 201 (PostResponse
    XML) or 204, which is also what S3 returns for any other value."""
    headers = {"ETag": stored.etag, "Location": location}
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect and urlsplit(redirect).scheme in ("http", "https"):
        return bottle.HTTPResponse(
            status=303, headers={**headers, "Location": redirect_to(redirect, stored)}
        )
    status = fields.get("success_action_status")
    if status == "201":
        body = xml_document(
            "PostResponse",
            {"Location": location, "Bucket": stored.bucket, "Key": stored.key, "ETag": stored.etag},
        )
        return bottle.HTTPResponse(body, 201, {**headers, "Content-Type": "application/xml"})
    return bottle.HTTPResponse(status=200 if status == "200" else 204, headers=headers)


def redirect_to(url: str, stored: StoredObject) -> str:
    """S3 appends bucket, key and etag to the redirect URL's query."""
    query = urlencode({"bucket": stored.bucket, "key": stored.key, "etag": stored.etag})
    joined = f"{url}{'&' if urlsplit(url).query else '?'}{query}"
    return quote(joined, safe=":/?#[]@!$&'()*+,;=%")


# === GET/HEAD Object: SigV4 in the query (presigned URLs) or in the Authorization header =========


@dataclass(frozen=True)
class SignedRequest:
    """What a signed GET/HEAD claims: who signed, when, which headers, over which payload."""

    credential: CredentialScope
    amz_date: str
    signed_headers: tuple[str, ...]
    payload_hash: str
    signature: str
    query: tuple[tuple[str, str], ...]


def authenticate(
    environ: Mapping[str, str], config: S3Config, now: datetime
) -> SignedRequest | None:
    """The verified claim of a signed request, None for an anonymous one; S3's error otherwise.

    The payload hash a header-signed request declares is checked by the caller, against the
    body it actually received."""
    query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    presigned = any(name == "X-Amz-Algorithm" for name, _ in query)
    if presigned:
        claim = query_claim(query, config.region)
    elif environ.get("HTTP_AUTHORIZATION"):
        claim = header_claim(environ, query, config.region, now)
    else:
        return None
    token = dict(query).get("X-Amz-Security-Token") or environ.get("HTTP_X_AMZ_SECURITY_TOKEN")
    if token:
        raise InvalidToken(Token=token)
    verify_request_signature(environ, claim, config)
    if presigned:
        check_not_expired(dict(query), claim, now)
    return claim


def query_claim(query: list[tuple[str, str]], region: str) -> SignedRequest:
    params = dict(query)
    required = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders")
    if not all(name in params for name in (*required, "X-Amz-Signature")):
        raise AuthorizationQueryParametersError()
    if params["X-Amz-Algorithm"] != signer.ALGORITHM:
        raise AuthorizationQueryParametersError('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    try:
        credential = parse_credential(params["X-Amz-Credential"], region)
        parse_amz_date(params["X-Amz-Date"])
        check_credential_date(credential, params["X-Amz-Date"])
    except ValueError as problem:
        raise AuthorizationQueryParametersError(
            f"Error parsing the X-Amz-Credential parameter; {problem}", Region=region
        ) from None
    return SignedRequest(
        credential,
        params["X-Amz-Date"],
        tuple(params["X-Amz-SignedHeaders"].split(";")),
        signer.UNSIGNED_PAYLOAD,
        params["X-Amz-Signature"],
        tuple((k, v) for k, v in query if k != "X-Amz-Signature"),
    )


def check_not_expired(params: Mapping[str, str], claim: SignedRequest, now: datetime) -> None:
    """X-Amz-Expires counts from X-Amz-Date and is at most a week."""
    expires = params["X-Amz-Expires"]
    if not expires.isdigit() or not 1 <= int(expires) <= MAX_PRESIGNED_EXPIRES:
        raise AuthorizationQueryParametersError(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800"
        )
    signed_at = parse_amz_date(claim.amz_date)
    if now > signed_at + timedelta(seconds=int(expires)):
        raise AccessDenied(
            "Request has expired",
            **{"X-Amz-Expires": expires},
            Expires=iso_z(signed_at + timedelta(seconds=int(expires))),
            ServerTime=iso_z(now),
        )
    if signed_at > now + MAX_CLOCK_SKEW:
        raise AccessDenied("Request is not valid yet")


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def header_claim(
    environ: Mapping[str, str], query: list[tuple[str, str]], region: str, now: datetime
) -> SignedRequest:
    """Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..."""
    parts = parse_authorization(environ["HTTP_AUTHORIZATION"])
    amz_date = environ.get("HTTP_X_AMZ_DATE", "")
    try:
        credential = parse_credential(parts["Credential"], region)
        signed_at = parse_amz_date(amz_date)
        check_credential_date(credential, amz_date)
    except ValueError as problem:
        raise AuthorizationHeaderMalformed(
            f"The authorization header is malformed; {problem}", Region=region
        ) from None
    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        raise RequestTimeTooSkewed(
            RequestTime=amz_date, ServerTime=iso_z(now), MaxAllowedSkewMilliseconds=900000
        )
    payload_hash = checked_payload_hash(environ.get("HTTP_X_AMZ_CONTENT_SHA256"))
    signed = tuple(parts["SignedHeaders"].split(";"))
    return SignedRequest(
        credential, amz_date, signed, payload_hash, parts["Signature"], tuple(query)
    )


def parse_authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.partition(" ")
    if algorithm != signer.ALGORITHM:
        raise InvalidArgument(
            "Unsupported Authorization Type", ArgumentName="Authorization", ArgumentValue=value
        )
    parts = dict(item.strip().partition("=")[::2] for item in rest.split(","))
    if not all(parts.get(name) for name in ("Credential", "SignedHeaders", "Signature")):
        raise AuthorizationHeaderMalformed(
            "The authorization header is malformed; the authorization header requires three "
            "components: Credential, SignedHeaders, and Signature."
        )
    return parts


def checked_payload_hash(value: str | None) -> str:
    """x-amz-content-sha256 is required with header signing: the body's hex SHA-256, or
    UNSIGNED-PAYLOAD. (aws-chunked STREAMING-* payloads are not supported here.)"""
    if value is None:
        raise InvalidRequest("Missing required header for this request: x-amz-content-sha256")
    if value.startswith("STREAMING-"):
        raise NotImplementedByLocalS3(Header="x-amz-content-sha256", AdditionalMessage=value)
    if value != signer.UNSIGNED_PAYLOAD and not HEX_SHA256.fullmatch(value):
        raise InvalidArgument(
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, or a valid sha256 value.",
            ArgumentName="x-amz-content-sha256",
            ArgumentValue=value,
        )
    return value


def check_payload_hash(claim: SignedRequest | None, received_sha256: str) -> None:
    """The signed x-amz-content-sha256 must be the hash of the body that actually arrived."""
    if claim is None or claim.payload_hash in (signer.UNSIGNED_PAYLOAD, received_sha256):
        return
    raise XAmzContentSHA256Mismatch(
        ClientComputedContentSHA256=claim.payload_hash, S3ComputedContentSHA256=received_sha256
    )


def header_value(environ: Mapping[str, str], name: str) -> str:
    if name in ("content-type", "content-length"):
        return environ.get(name.upper().replace("-", "_"), "")
    return environ.get("HTTP_" + name.upper().replace("-", "_"), "")


def verify_request_signature(
    environ: Mapping[str, str], claim: SignedRequest, config: S3Config
) -> None:
    """Rebuild the canonical request from what arrived and sign it with the stored secret."""
    secret = secret_for(config, claim.credential.access_key)
    request = signer.canonical_request(
        environ["REQUEST_METHOD"],
        signer.uri_encode(request_path(environ), keep_slash=True),
        signer.canonical_query_string(claim.query),
        {name: header_value(environ, name) for name in claim.signed_headers},
        claim.signed_headers,
        claim.payload_hash,
    )
    to_sign = signer.string_to_sign(claim.amz_date, claim.credential.scope, request)
    key = signer.signing_key(secret, claim.credential.date, claim.credential.region, SERVICE)
    if not signatures_match(signer.signature(key, to_sign), claim.signature):
        raise SignatureDoesNotMatch(
            AWSAccessKeyId=claim.credential.access_key,
            StringToSign=to_sign,
            SignatureProvided=claim.signature,
            CanonicalRequest=request,
        )


def request_path(environ: Mapping[str, str]) -> str:
    """The decoded path as the client sent it (bottle decodes PATH_INFO to UTF-8 in place)."""
    return "/" + environ.get("PATH_INFO", "").lstrip("/")


def header_safe(value: str) -> str:
    """Headers carry ISO-8859-1 without control characters; other values are RFC 2047
    encoded, as S3 does for non-ASCII user metadata."""
    if value.isprintable() and value.isascii():
        return value
    return f"=?UTF-8?B?{base64.b64encode(value.encode()).decode()}?="


def object_headers(stored: StoredObject) -> dict[str, str]:
    headers = {
        "ETag": stored.etag,
        "Content-Type": header_safe(stored.content_type),
        "Content-Length": str(stored.size),
        "Last-Modified": format_datetime(stored.last_modified.astimezone(UTC), usegmt=True),
        "Accept-Ranges": "bytes",
    }
    headers.update({name: header_safe(value) for name, value in stored.headers.items()})
    headers.update({name: header_safe(value) for name, value in stored.metadata.items()})
    return headers


def put_fields(environ: Mapping[str, str], key: str) -> dict[str, str]:
    """A PUT's headers as the equivalent POST form fields: Content-Type, x-amz-acl,
    x-amz-meta-*, Cache-Control and the like, Content-MD5."""
    fields = {"key": key}
    if environ.get("CONTENT_TYPE"):
        fields["content-type"] = environ["CONTENT_TYPE"]
    for name, value in environ.items():
        header = name[5:].lower().replace("_", "-") if name.startswith("HTTP_") else ""
        if header == "x-amz-acl":
            fields["acl"] = value
        elif header.startswith("x-amz-meta-") or header in (*STORED_HEADERS, "content-md5"):
            fields[header] = value
    return fields


def cors_body(environ: Mapping[str, object]) -> bytes:
    """A CORS configuration is small; anything over 64 KB is not one."""
    if not str(environ.get("CONTENT_LENGTH") or "").isdigit():
        raise MissingContentLength()
    if int(str(environ["CONTENT_LENGTH"])) > MAX_CORS_XML_BYTES:
        raise MalformedXML()
    return b"".join(body_chunks(environ))


def receive_put_body(environ: Mapping[str, object], upload: Upload, config: S3Config) -> str:
    """Streams the body into the upload and returns its hex SHA-256, for x-amz-content-sha256."""
    if not str(environ.get("CONTENT_LENGTH") or "").isdigit():
        raise MissingContentLength()
    size = int(str(environ["CONTENT_LENGTH"]))
    if size > config.max_body_bytes:
        raise EntityTooLarge(ProposedSize=size, MaxSizeAllowed=config.max_body_bytes)
    sha256 = hashlib.sha256()
    upload.begin()
    for chunk in body_chunks(environ):
        sha256.update(chunk)
        upload.write(chunk)
    if upload.size != size:
        raise IncompleteBody(NumberBytesExpected=size, NumberBytesProvided=upload.size)
    return sha256.hexdigest()


# === CORS, as S3 answers it ======================================================================
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/cors.html
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketCors.html


@dataclass(frozen=True)
class CorsRule:
    """One CORSRule. AllowedOrigin and AllowedHeader may hold one "*" wildcard each."""

    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    max_age: int | None = None

    def allows(self, origin: str, method: str, requested_headers: tuple[str, ...] = ()) -> bool:
        return (
            any(wildcard_match(pattern, origin) for pattern in self.origins)
            and method in self.methods
            and all(
                any(wildcard_match(pattern.lower(), header) for pattern in self.headers)
                for header in requested_headers
            )
        )


def wildcard_match(pattern: str, value: str) -> bool:
    prefix, star, suffix = pattern.partition("*")
    if not star:
        return pattern == value
    return (
        len(value) >= len(prefix + suffix) and value.startswith(prefix) and (value.endswith(suffix))
    )


def startup_rules(config: S3Config) -> tuple[CorsRule, ...]:
    """The rule the local S3 starts with: the configured origins, S3's upload methods, any
    request header, and the two headers the page must read."""
    if not config.cors_origins:
        return ()
    return (CorsRule(config.cors_origins, CORS_METHODS, ("*",), ("ETag", "Location"), 3000),)


def matching_rule(
    rules: tuple[CorsRule, ...], origin: str | None, method: str, headers: tuple[str, ...] = ()
) -> CorsRule | None:
    """S3 applies the first rule that matches the origin, the method and the headers."""
    if not origin:
        return None
    return next((rule for rule in rules if rule.allows(origin, method, headers)), None)


def cors_headers(rule: CorsRule | None, origin: str | None) -> dict[str, str]:
    """On every response, errors included, so the page can read S3's XML error."""
    headers = {"Vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"}
    if rule is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Methods"] = ", ".join(rule.methods)
        if rule.expose:
            headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose)
    return headers


def preflight(environ: Mapping[str, str], rules: tuple[CorsRule, ...]) -> bottle.HTTPResponse:
    origin = environ.get("HTTP_ORIGIN")
    method = environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")
    if not origin:
        raise BadRequest("Insufficient information. Origin request header needed.")
    if not method:
        raise BadRequest("Invalid Access-Control-Request-Method: null")
    requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")
    names = tuple(name.strip().lower() for name in requested.split(",") if name.strip())
    rule = matching_rule(rules, origin, method, names)
    if rule is None:
        raise CORSForbidden(Method=method, ResourceType="OBJECT")
    headers = cors_headers(rule, origin)
    if rule.max_age is not None:
        headers["Access-Control-Max-Age"] = str(rule.max_age)
    if requested:
        headers["Access-Control-Allow-Headers"] = requested
    return bottle.HTTPResponse(status=200, headers=headers)


def parse_cors_configuration(body: bytes) -> tuple[CorsRule, ...]:
    """PUT ?cors: the CORSConfiguration XML, validated as S3 validates it."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise MalformedXML() from None
    if local_name(root) != "CORSConfiguration":
        raise MalformedXML()
    rules = [cors_rule(element) for element in root if local_name(element) == "CORSRule"]
    if not 1 <= len(rules) <= MAX_CORS_RULES:
        raise MalformedXML()
    return tuple(rules)


def cors_rule(element: ElementTree.Element) -> CorsRule:
    values: dict[str, list[str]] = {}
    for child in element:
        values.setdefault(local_name(child), []).append((child.text or "").strip())
    origins, methods = values.get("AllowedOrigin"), values.get("AllowedMethod")
    max_age = values.get("MaxAgeSeconds", [None])[-1]
    if not origins or not methods or not (max_age is None or max_age.isdigit()):
        raise MalformedXML()
    unsupported = [method for method in methods if method not in CORS_CONFIG_METHODS]
    if unsupported:
        raise InvalidRequest(
            f"Found unsupported HTTP method in CORS config. Unsupported method is {unsupported[0]}"
        )
    return CorsRule(
        tuple(origins),
        tuple(methods),
        tuple(values.get("AllowedHeader", [])),
        tuple(values.get("ExposeHeader", [])),
        int(max_age) if max_age is not None else None,
    )


def local_name(element: ElementTree.Element) -> str:
    """The tag without its namespace: S3's XML carries xmlns="http://s3.amazonaws.com/doc/..."."""
    return element.tag.rpartition("}")[2]


def cors_configuration_xml(rules: tuple[CorsRule, ...]) -> bytes:
    """GET ?cors: the rules back in S3's XML."""
    body = "".join(f"<CORSRule>{cors_rule_xml(rule)}</CORSRule>" for rule in rules)
    root = f'<CORSConfiguration xmlns="{S3_XMLNS}">{body}</CORSConfiguration>'
    return (XML_DECLARATION + root).encode()


def cors_rule_xml(rule: CorsRule) -> str:
    elements = [
        *(("AllowedOrigin", value) for value in rule.origins),
        *(("AllowedMethod", value) for value in rule.methods),
        *(("AllowedHeader", value) for value in rule.headers),
        *(("ExposeHeader", value) for value in rule.expose),
        *([("MaxAgeSeconds", rule.max_age)] if rule.max_age is not None else []),
    ]
    return "".join(f"<{name}>{xml_text(value)}</{name}>" for name, value in elements)


# === The WSGI app ================================================================================


def s3_response(routes: S3Routes) -> Callable:
    """Wraps a route: S3 errors become S3's XML, anything else is a bug, logged and answered
    with InternalError. Every response gets the bucket's CORS headers and a request id."""

    def decorate(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def wrapper(*args: object, **kwargs: object) -> bottle.HTTPResponse:
            request_id = secrets.token_hex(8).upper()
            origin = bottle.request.get_header("Origin")
            try:
                response = handler(*args, **kwargs)
            except CORSForbidden as error:
                response, origin = error_response(error, request_id), None
            except S3Error as error:
                response = error_response(error, request_id)
            except Exception as error:
                log_failure(error)
                response = error_response(InternalError(), request_id)
            rules = routes.cors_rules(str(kwargs.get("bucket", "")))
            rule = matching_rule(rules, origin, bottle.request.method)
            response.headers.update(cors_headers(rule, origin))
            response.set_header("x-amz-request-id", request_id)
            return response

        return wrapper

    return decorate


def log_failure(error: Exception) -> None:
    """A full disk is the operator's to fix, not a bug: one clear line instead of a traceback."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        LOG.error("no space left to store uploads: %s", error.strerror)
    else:
        LOG.exception("local S3 bug on %s %s", bottle.request.method, bottle.request.path)


def error_response(error: S3Error, request_id: str) -> bottle.HTTPResponse:
    host_id = base64.b64encode(secrets.token_bytes(24)).decode()
    body = error_xml(error, request_id, host_id)
    headers = {"Content-Type": "application/xml", "x-amz-id-2": host_id}
    return bottle.HTTPResponse(body, error.status, headers)


class S3Routes:
    """The route handlers, bound to one configuration, one store and one clock."""

    def __init__(self, config: S3Config, clock: Callable[[], datetime]) -> None:
        self.config, self.clock = config, clock
        self.store = ObjectStore(config.data_dir)

    def require_bucket(self, bucket: str) -> None:
        if bucket not in self.config.buckets:
            raise NoSuchBucket(BucketName=bucket)

    def post_object(self, bucket: str) -> bottle.HTTPResponse:
        """POST Object: stream the form, verify it when the file begins, store atomically."""
        now = self.clock()
        self.require_bucket(bucket)
        with self.store.upload() as upload:
            post = PostObject(self.config, bucket, now, upload)
            read_post_form(bottle.request.environ, PostForm(post.on_file))
            stored = self.store.commit(upload, post.record())
        return post_success(post.fields, stored, object_location(bottle.request, stored))

    def get_object(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """GET/HEAD Object. Unsigned reads see only public-read objects and, like S3 without
        list permission, cannot tell a missing key from a private one."""
        now = self.clock()
        self.require_bucket(bucket)
        signed = authenticate(bottle.request.environ, self.config, now)
        check_payload_hash(signed, signer.EMPTY_SHA256)  # a GET or HEAD has no body
        opened = self.store.open(bucket, key)
        if opened is None:
            raise NoSuchKey(Key=key) if signed else AccessDenied()
        stored, body = opened
        if not signed and stored.acl not in ANONYMOUS_READ_ACLS:
            body.close()
            raise AccessDenied()
        return bottle.HTTPResponse(body, 200, object_headers(stored))

    def put_object(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """PUT Object with a presigned URL or a signed request; the body streams like a POST's."""
        now = self.clock()
        self.require_bucket(bucket)
        environ = bottle.request.environ
        signed = authenticate(environ, self.config, now)
        if signed is None:
            raise AccessDenied()
        fields = put_fields(environ, checked_key(key))
        attributes = object_attributes(fields)
        content_md5 = checked_content_md5(fields.get("content-md5"))
        with self.store.upload() as upload:
            check_payload_hash(signed, receive_put_body(environ, upload, self.config))
            check_content_md5(upload, content_md5)
            record = {"bucket": bucket, "key": key, "last_modified": now.isoformat()}
            stored = self.store.commit(upload, {**record, **attributes})
        return bottle.HTTPResponse(status=200, headers={"ETag": stored.etag})

    def cors_preflight(self, bucket: str, key: str = "") -> bottle.HTTPResponse:
        self.require_bucket(bucket)
        return preflight(bottle.request.environ, self.cors_rules(bucket))

    def cors_rules(self, bucket: str) -> tuple[CorsRule, ...]:
        """The bucket's rules set with PUT ?cors, else the ones configured at start."""
        if bucket not in self.config.buckets:
            return startup_rules(self.config)
        stored = self.store.cors_rules(bucket)
        return startup_rules(self.config) if stored is None else stored

    def bucket_cors(self, bucket: str) -> bottle.HTTPResponse:
        """GET, PUT and DELETE /BUCKET?cors, signed requests only, as on S3."""
        now = self.clock()
        self.require_bucket(bucket)
        environ = bottle.request.environ
        if "cors" not in bottle.request.query:
            raise MethodNotAllowed(Method=bottle.request.method, ResourceType="BUCKET")
        if authenticate(environ, self.config, now) is None:
            raise AccessDenied()
        if bottle.request.method == "PUT":
            self.store.set_cors_rules(bucket, parse_cors_configuration(cors_body(environ)))
            return bottle.HTTPResponse(status=200)
        if bottle.request.method == "DELETE":
            self.store.set_cors_rules(bucket, None)
            return bottle.HTTPResponse(status=204)
        rules = self.cors_rules(bucket)
        if not rules:
            raise NoSuchCORSConfiguration(BucketName=bucket)
        return bottle.HTTPResponse(cors_configuration_xml(rules), 200, XML_CONTENT_TYPE)

    def not_supported(self, bucket: str = "", key: str = "") -> bottle.HTTPResponse:
        if bucket:
            self.require_bucket(bucket)
        resource = "OBJECT" if key else "BUCKET" if bucket else "SERVICE"
        raise MethodNotAllowed(Method=bottle.request.method, ResourceType=resource)


def object_location(request: bottle.BaseRequest, stored: StoredObject) -> str:
    """The object's path-style URL on this server, as S3 returns it in Location."""
    origin = f"{request.urlparts.scheme}://{request.urlparts.netloc}"
    return f"{origin}/{quote(stored.bucket)}/{quote(stored.key, safe='/')}"


def create_app(config: S3Config, clock: Callable[[], datetime] | None = None) -> bottle.Bottle:
    """The local S3 as a WSGI app: POST Object, GET/HEAD Object, CORS preflight, S3 errors.

    `clock` (default: config.clock) is read once per request, so tests can freeze time.
    """
    routes = S3Routes(config, clock or config.clock)
    s3 = s3_response(routes)
    app = bottle.Bottle()
    for path, method, handler in [
        ("/<bucket>", "POST", routes.post_object),
        ("/<bucket>/", "POST", routes.post_object),
        ("/<bucket>/<key:path>", ["GET", "HEAD"], routes.get_object),
        ("/<bucket>/<key:path>", "PUT", routes.put_object),
        ("/<bucket>", "OPTIONS", routes.cors_preflight),
        ("/<bucket>/", "OPTIONS", routes.cors_preflight),
        ("/<bucket>/<key:path>", "OPTIONS", routes.cors_preflight),
        ("/<bucket>", ["GET", "PUT", "DELETE"], routes.bucket_cors),
        ("/<bucket>/", ["GET", "PUT", "DELETE"], routes.bucket_cors),
        ("/", "ANY", routes.not_supported),
        ("/<bucket>", "ANY", routes.not_supported),
        ("/<bucket>/", "ANY", routes.not_supported),
        ("/<bucket>/<key:path>", "ANY", routes.not_supported),
    ]:
        app.route(path, method, s3(handler))
    return app


# === Serving it: waitress in a background thread =================================================


class LocalS3:
    """Serves create_app(config) with waitress on host:port (0 = a free port) in a thread.

    An upload's body goes to the app while it arrives (StreamingChannel), held at most a few MB
    at a time: a 1 GB upload is parsed, hashed and written as it comes, and one over its
    policy's maximum is answered at the maximum. Bodies declaring more than max_body_bytes (plus
    room for the form fields around the file) are refused by waitress itself with 413.
    """

    def __init__(self, config: S3Config, host: str = "127.0.0.1", port: int = 0, threads: int = 4):
        self.config, self.host, self.port, self.threads = config, host, port, threads
        self.url = ""
        self._server: BackgroundServer | None = None

    def start(self) -> LocalS3:
        removed = ObjectStore(self.config.data_dir).remove_leftovers()
        if removed:
            LOG.info("removed %d leftover files of interrupted uploads", removed)
        self._server = BackgroundServer(
            answer_streamed(create_app(self.config)),
            host=self.host,
            port=self.port,
            threads=self.threads,
            channel_class=StreamingChannel,
            max_request_body_size=self.config.max_body_bytes + MAX_FORM_OVERHEAD,
            ident="local-s3",
        ).start()
        self.port, self.url = self._server.port, self._server.url
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def wait(self) -> None:
        if self._server is not None:
            self._server.wait()

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class BackgroundServer:
    """A WSGI app served by waitress in a thread on host:port (0 = a free port).

    The local S3, the tests and the benchmarks all serve this way, so stopping is written once:
    every socket is closed from inside waitress's own loop (the only thread-safe place), then
    the thread is joined, then the threads reading streamed bodies (BodyReaders) and waitress's
    workers, and the loop's wake-up pipe is closed last, once nothing can pull it.
    """

    def __init__(
        self,
        app: Callable,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = 4,
        channel_class: type[HTTPChannel] | None = None,
        **options: object,
    ):
        self.app, self.host, self.port, self.threads = app, host, port, threads
        self.channel_class, self.options = channel_class, options
        self.url = ""

    def start(self) -> BackgroundServer:
        self._server = create_server(
            self.app, host=self.host, port=self.port, threads=self.threads, **self.options
        )
        if self.channel_class is not None:
            self._server.channel_class = self.channel_class
        self._server.body_readers = BodyReaders(self._server.trigger)
        self.port = self._server.effective_port
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.run, name="waitress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server = self._server
        server.trigger.pull_trigger(functools.partial(close_all, server))
        self._thread.join(timeout=10)
        server.body_readers.stop()
        server.task_dispatcher.shutdown(timeout=5)
        server.trigger.close()

    def wait(self) -> None:
        while self._thread.is_alive():
            self._thread.join(timeout=1)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class ClosingChannel(HTTPChannel):
    """waitress's connection, which also closes a half-received request's spooled body when the
    client hangs up, instead of leaving that temporary file to the garbage collector."""

    def handle_close(self) -> None:
        if self.request is not None:
            self.request.close()
        super().handle_close()


# --- Streaming request bodies to the app while waitress receives them ----------------------------
#
# waitress reads every request body whole before it calls the app: its parser (HTTPRequestParser,
# waitress/parser.py) appends the bytes to a FixedStreamReceiver that spools past inbuf_overflow
# to a temporary file, and only once Content-Length bytes are in does the connection
# (HTTPChannel.received, waitress/channel.py) queue a task that builds the environ
# (WSGITask.get_environment, waitress/task.py) with that file as wsgi.input. For a 1 GB upload
# the local S3 then parsed, wrote and hashed the body only after waitress had spooled it: the two
# passes added up (docs/BENCHMARKS.md, "Local S3 ingest").
#
# Here a POST or PUT with a Content-Length body is read by the app while it arrives. Everything
# below leans on waitress internals (waitress 3.0): the parser's `received`, `body_rcv`,
# `get_body_stream` and `close`; the channel's `parser_class`, `received`, `readable`,
# `requests`, `requests_lock` and `request`; the trigger's thunks. A request not streamed
# (chunked, pipelined behind another, no body) takes waitress's own path, unchanged.
#
# 1. StreamingChannel makes its parsers StreamingRequest. When a request's headers are in,
#    StreamingRequest puts a LiveBody where waitress would spool, builds the environ with
#    waitress's own WSGITask.get_environment, and starts a BodyReader thread that runs the app
#    with the LiveBody as wsgi.input. waitress's main loop keeps feeding the LiveBody.
# 2. Backpressure: the LiveBody holds at most LIVE_BODY_HIGH bytes. Past it, the channel's
#    readable() says no, so the loop stops reading that socket (it never blocks); the reader,
#    once it has drained the buffer to LIVE_BODY_LOW, pulls the trigger to wake the loop.
# 3. The answer: when the last byte is in, waitress queues its task as usual; the environ that
#    task builds gets the BodyReader as wsgi.input, and answer_streamed() (around the app) returns
#    the reader's answer instead of calling the app again. If the app answers before the body
#    is all in (EntityTooLarge at the policy's maximum, a bad signature...), the reader asks the
#    loop (a trigger thunk) to finish the request at once: the answer goes out while the client
#    is still sending, and the channel drops the rest of the body as it arrives, unbuffered.
# 4. A client that hangs up mid-body: ClosingChannel.handle_close closes the request, which
#    closes the LiveBody; the app's next read raises IncompleteBody, so the upload is discarded.
#    Once the last byte has arrived, the upload completes whether or not anyone reads the answer.
# 5. Stopping: BackgroundServer.stop closes every connection (so every live body), then stops
#    the BodyReaders from pulling the trigger and waits for their threads, before it closes the
#    trigger's pipe.

LIVE_BODY_HIGH = 4 * 1024 * 1024  # waitress stops reading a socket with this much unread
LIVE_BODY_LOW = 2 * 1024 * 1024  # and starts again once the app has read it down to this


class LiveBody:
    """A request body the app reads (wsgi.input, in its own thread) while waitress receives it.

    To waitress's parser it is the body receiver (like waitress's FixedStreamReceiver:
    `received`, `completed`, `error`), fed by the main loop thread in pieces of recv_bytes.
    `read(size)` blocks until `size` bytes (at most LIVE_BODY_HIGH) or the end have arrived,
    returns b"" at Content-Length, and raises IncompleteBody if the client hung up before it."""

    error = None  # waitress's parser checks its receiver for a framing error: none possible here

    def __init__(self, length: int, on_room: Callable[[], None]) -> None:
        self.length = length
        self.remain = length  # bytes the client has still to send
        self.completed = False  # all `length` bytes received
        self.paused = False  # full: waitress must not read the socket until the app catches up
        self.peak = 0  # the most bytes ever held at once
        self._on_room = on_room
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._wanted = 0  # how many buffered bytes the reader waits for; 0 if it is not waiting
        self._cut_short = False  # the client hung up before the end
        self._discarding = False  # the app stopped reading: whatever still arrives is dropped
        self._ready = threading.Condition()

    def received(self, data: bytes) -> int:
        """waitress's main loop: keep the bytes of this body in `data`; return how many."""
        size = min(len(data), self.remain)
        with self._ready:
            self.remain -= size
            self.completed = self.remain == 0
            if size and not self._discarding:
                self._chunks.append(data if size == len(data) else data[:size])
                self._buffered += size
                self.peak = max(self.peak, self._buffered)
                self.paused = self._buffered >= LIVE_BODY_HIGH
            if self._wanted and (self._buffered >= self._wanted or self.completed):
                self._ready.notify()
        return size

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(functools.partial(self.read, READ_CHUNK), b""))
        with self._ready:
            wanted = min(size, LIVE_BODY_HIGH, self._buffered + self.remain)
            while self._buffered < wanted and not self._cut_short:
                self._wanted = wanted
                self._ready.wait()
            self._wanted = 0
            if self._cut_short:
                raise IncompleteBody(
                    NumberBytesExpected=self.length, NumberBytesProvided=self.length - self.remain
                )
            data = self._take(min(size, self._buffered))
            resume = self.paused and self._buffered <= LIVE_BODY_LOW
            self.paused = self.paused and not resume
        if resume:
            self._on_room()
        return data

    def _take(self, size: int) -> bytes:
        parts, taken = [], 0
        while taken < size:
            chunk = self._chunks.popleft()
            if taken + len(chunk) > size:
                self._chunks.appendleft(chunk[size - taken :])
                chunk = chunk[: size - taken]
            parts.append(chunk)
            taken += len(chunk)
        self._buffered -= size
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """waitress is done with the request, or the client hung up. A complete body stays
        readable to its end; a body cut short fails the app's next read."""
        with self._ready:
            if not self.completed:
                self._cut_short = True
                self._chunks.clear()
                self._buffered = 0
                self._ready.notify()

    def stop_reading(self) -> None:
        """The app has answered: free the buffer, drop what still arrives, let waitress read."""
        with self._ready:
            self._discarding = True
            self._chunks.clear()
            self._buffered = 0
            resume, self.paused = self.paused, False
        if resume:
            self._on_room()


class BodyReader:
    """Runs the WSGI app on a LiveBody in its own thread and keeps the answer (status, headers,
    body: POST and PUT answers are small XML) for the task waitress queues once the request is
    complete, which gets this object as wsgi.input (see answer_streamed)."""

    def __init__(
        self, app: Callable, environ: dict, live: LiveBody, on_early_answer: Callable[[], None]
    ) -> None:
        self.app, self.environ, self.live = app, environ, live
        self.on_early_answer = on_early_answer
        self.done = threading.Event()
        self.answer: tuple[str, list, bytes] | None = None
        self.failure: Exception | None = None

    def run(self) -> None:
        try:
            self.answer = call_wsgi_app(self.app, self.environ)
        except Exception as failure:  # raised again in waitress's task, which logs it and sends 500
            self.failure = failure
        finally:
            self.live.stop_reading()
            self.done.set()
            if not self.live.completed:
                self.on_early_answer()

    def respond(self, start_response: Callable) -> list[bytes]:
        """In waitress's task: the app's answer, once it has one (it may still be storing)."""
        self.done.wait()
        if self.failure is not None:
            raise self.failure
        status, headers, body = self.answer
        start_response(status, headers)
        return [body]


def call_wsgi_app(app: Callable, environ: dict) -> tuple[str, list, bytes]:
    """Calls a WSGI app and collects its whole answer."""
    head: list = []
    body: list[bytes] = []

    def start_response(status: str, headers: list, exc_info: object = None) -> Callable:
        head[:] = [status, list(headers)]  # a second call (with exc_info) replaces the first
        return body.append

    result = app(environ, start_response)
    try:
        body.extend(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    if not head:
        raise RuntimeError("the app returned without calling start_response")
    return head[0], head[1], b"".join(body)


def answer_streamed(app: Callable) -> Callable:
    """Wraps the app served with StreamingChannel: a request whose body was streamed has already
    been answered by a BodyReader, whose answer is returned; any other request goes to `app`."""

    def serve(environ: dict, start_response: Callable) -> Iterator[bytes] | list[bytes]:
        body = environ.get("wsgi.input")
        if isinstance(body, BodyReader):
            return body.respond(start_response)
        return app(environ, start_response)

    return serve


class BodyReaders:
    """One server's BodyReader threads, and the one way they wake waitress's loop: after stop()
    none pulls the trigger any more (its pipe is about to be closed; see BackgroundServer)."""

    def __init__(self, trigger) -> None:
        self._trigger = trigger
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self.open = True

    def start(self, reader: BodyReader) -> None:
        thread = threading.Thread(target=self._run, args=(reader,), name="local-s3-body")
        thread.daemon = True
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _run(self, reader: BodyReader) -> None:
        try:
            reader.run()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def pull_trigger(self, thunk: Callable[[], None] | None = None) -> None:
        """Wakes waitress's loop; a thunk runs in the loop's thread."""
        with self._lock:
            if self.open:
                self._trigger.pull_trigger(thunk)

    def stop(self, timeout: float = 10) -> None:
        with self._lock:
            self.open = False
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)


class StreamingRequest(HTTPRequestParser):
    """waitress's request parser, which hands a POST or PUT body to the app as it arrives.

    When the headers are parsed (waitress has just made a FixedStreamReceiver for the body, still
    empty: the body's bytes come in the parser's next call), a LiveBody replaces it and a
    BodyReader starts. Not streamed, as waitress would do it: chunked bodies, bodies waitress
    refuses (413 over max_request_body_size, a parse error), and a request that arrived behind
    another one still being answered (its answer must wait its turn)."""

    live: LiveBody | None = None
    reader: BodyReader | None = None

    def __init__(self, adj, channel: StreamingChannel) -> None:
        super().__init__(adj)
        self.channel = channel

    def received(self, data: bytes) -> int:
        reading_headers = not self.headers_finished
        consumed = super().received(data)
        if reading_headers and self.headers_finished and self.streamable():
            self.stream()
        return consumed

    def streamable(self) -> bool:
        readers = getattr(self.channel.server, "body_readers", None)
        return (
            self.command in ("POST", "PUT")
            and self.content_length > 0
            and not (self.chunked or self.completed or self.error or self.channel.requests)
            and readers is not None
            and readers.open
        )

    def stream(self) -> None:
        channel = self.channel
        self.live = LiveBody(self.content_length, channel.resume_reading)
        self.body_rcv = self.live
        environ = channel.task_class(channel, self).get_environment()  # wsgi.input: the LiveBody
        on_early_answer = functools.partial(channel.answered_early, self)
        self.reader = BodyReader(
            channel.server.application,
            environ,
            self.live,
            lambda: channel.server.body_readers.pull_trigger(on_early_answer),
        )
        channel.server.body_readers.start(self.reader)

    def get_body_stream(self):
        """wsgi.input for waitress's task: the BodyReader (its answer) once streaming started."""
        if self.reader is not None:
            return self.reader
        return self.live if self.live is not None else super().get_body_stream()

    def close(self) -> None:
        if self.live is not None:
            self.live.close()
        else:
            super().close()


class StreamingChannel(ClosingChannel):
    """waitress's connection for the local S3: streams request bodies (see StreamingRequest),
    stops reading while the app is behind, and drops the rest of a body answered early."""

    discarding = 0  # bytes of a body answered early that the client has still to send

    def parser_class(self, adj) -> StreamingRequest:
        """waitress makes each request's parser with self.parser_class(self.adj); ours needs the
        connection too (for the environ, the trigger and its queue of requests)."""
        return StreamingRequest(adj, self)

    def readable(self) -> bool:
        request = self.request
        if request is not None and request.live is not None and request.live.paused:
            return False
        return super().readable()

    def received(self, data: bytes) -> bool:
        if self.discarding:
            dropped = min(self.discarding, len(data))
            self.discarding -= dropped
            data = data[dropped:]
        return super().received(data)

    def resume_reading(self) -> None:
        """The app has caught up with a paused body (its thread): wake the loop to read again."""
        self.last_activity = time.time()  # paused is not idle (waitress closes idle connections)
        self.server.body_readers.pull_trigger()

    def answered_early(self, request: StreamingRequest) -> None:
        """A trigger thunk, in waitress's loop: the app answered before the whole body was in.
        Queue the request now, as waitress does once a body is complete (HTTPChannel.received),
        and drop the body's remaining bytes as they come."""
        with self.requests_lock:
            gone = not self.connected or self.will_close or self.close_when_flushed
            if gone or self.request is not request or request.completed:
                return  # the client is gone, or the body turned out complete after all
            self.discarding = request.live.remain
            request.completed = True
            self.request = None
            self.sent_continue = False
            self.requests.append(request)
            if len(self.requests) == 1:
                self.server.add_task(self)


def close_all(server) -> None:
    """Runs in waitress's loop: closes every connection and the listening socket, and only takes
    the wake-up pipe (the trigger) out of the loop. A worker finishing an answer also pulls the
    trigger, and may wake the loop, which runs this, before our own pull has written its byte:
    had this closed the pipe, that write would fail (EBADF), or land in whatever file reused
    the descriptor."""
    for dispatcher in list(server._map.values()):
        if isinstance(dispatcher, HTTPChannel):
            dispatcher.handle_close()
        elif dispatcher is server.trigger:
            dispatcher.del_channel()
        else:
            wasyncore.dispatcher.close(dispatcher)  # the server's own close() closes the trigger


# === Command line ================================================================================


def new_credentials() -> tuple[str, str]:
    """An access key id shaped like AWS's (20 characters) and a 40-character secret."""
    return "LOCAL" + secrets.token_hex(8).upper()[:15], secrets.token_urlsafe(30)


def write_credentials_file(data_dir: Path, access_key: str, secret_key: str) -> Path:
    """AWS's shared-credentials format, readable by its owner only (0600)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "credentials"
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(
            f"[local-s3]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n"
        )
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python local_s3.py",
        description="A strict local S3 for browser uploads (POST Object, GET/HEAD/PUT, CORS).",
        epilog="Fresh credentials are made at each start: the access key id is printed, the "
        "secret key written to DATA/credentials, readable by you only. server.py starts its own "
        "local S3 when S3_BUCKET is unset; run this one to try other S3 clients against it.",
    )
    parser.add_argument(
        "--port", type=int, default=9000, help="port on 127.0.0.1, 0 for any free one [9000]"
    )
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder for objects [data]")
    parser.add_argument("--bucket", action="append", help="bucket name, repeatable [uploads]")
    parser.add_argument(
        "--region", default="us-east-1", help="region the signatures must name [us-east-1]"
    )
    parser.add_argument(
        "--allow-origin", action="append", default=[], help="CORS origin or '*', repeatable"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    access_key, secret_key = new_credentials()
    credentials_path = write_credentials_file(args.data, access_key, secret_key)
    config = S3Config(
        data_dir=args.data,
        buckets=tuple(args.bucket or ["uploads"]),
        credentials={access_key: secret_key},
        region=args.region,
        cors_origins=tuple(args.allow_origin),
    )
    server = LocalS3(config, port=args.port).start()
    print(f"Local S3 at {server.url}, bucket(s) {', '.join(config.buckets)}, {config.region}")
    print(f"Access key id: {access_key}")
    print(f"Secret access key: in {credentials_path} (readable by you only)", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
