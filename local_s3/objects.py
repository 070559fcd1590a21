"""What S3 keeps with an object besides its bytes (key, type, ACL, headers, x-amz-meta-*), from
a POST form's fields or a PUT's headers alike, and the headers it returns on GET and HEAD.
https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingMetadata.html
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import UTC
from email.utils import format_datetime

from local_s3.errors import S3Error, invalid_argument
from local_s3.storage import StoredObject
from s3_rules import CANNED_ACLS, DEFAULT_CONTENT_TYPE, MAX_KEY_BYTES, MAX_USER_METADATA_BYTES

ANONYMOUS_READ_ACLS = frozenset({"public-read", "public-read-write"})
# REST headers a POST form may set; S3 keeps them with the object and returns them on GET.
STORED_HEADERS = {
    "cache-control": "Cache-Control",
    "content-disposition": "Content-Disposition",
    "content-encoding": "Content-Encoding",
    "expires": "Expires",
}
PUT_FIELDS = (*STORED_HEADERS, "content-md5", "x-amz-sdk-checksum-algorithm")
HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def checked_key(key: str) -> str:
    size = len(key.encode())
    if size == 0:
        raise invalid_argument("key", "", "User key must have a length greater than 0.")
    if size > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", Size=size, MaxSizeAllowed=MAX_KEY_BYTES)
    return key


def object_attributes(fields: Mapping[str, str]) -> dict[str, object]:
    """What S3 keeps from the form besides the bytes: type, ACL, headers, x-amz-meta-*."""
    acl = fields.get("acl", "private")
    if acl not in CANNED_ACLS:
        raise invalid_argument("x-amz-acl", acl)
    metadata = {n: v for n, v in fields.items() if n.startswith("x-amz-meta-")}
    if not all(HTTP_TOKEN.fullmatch(name) for name in metadata):
        raise S3Error("InvalidArgument", "Your metadata headers are not valid.")
    size = sum(len(n.encode()) + len(v.encode()) for n, v in metadata.items())
    if size > MAX_USER_METADATA_BYTES:
        raise S3Error("MetadataTooLarge", MaxSizeAllowed=MAX_USER_METADATA_BYTES)
    return {
        "content_type": fields.get("content-type", DEFAULT_CONTENT_TYPE),
        "acl": acl,
        "metadata": metadata,
        "headers": {STORED_HEADERS[n]: v for n, v in fields.items() if n in STORED_HEADERS},
    }


def put_fields(environ: Mapping[str, str], key: str) -> dict[str, str]:
    """A PUT's headers as the equivalent POST form fields: Content-Type, x-amz-acl,
    x-amz-meta-*, Cache-Control and the like, Content-MD5, x-amz-checksum-*."""
    fields = {"key": key}
    if environ.get("CONTENT_TYPE"):
        fields["content-type"] = environ["CONTENT_TYPE"]
    for name, value in environ.items():
        header = name[5:].lower().replace("_", "-") if name.startswith("HTTP_") else ""
        if header == "x-amz-acl":
            fields["acl"] = value
        elif header.startswith(("x-amz-meta-", "x-amz-checksum-")) or header in PUT_FIELDS:
            fields[header] = value
    return fields


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


def header_safe(value: str) -> str:
    """Headers carry ISO-8859-1 without control characters; other values are RFC 2047
    encoded, as S3 does for non-ASCII user metadata."""
    if value.isprintable() and value.isascii():
        return value
    return f"=?UTF-8?B?{base64.b64encode(value.encode()).decode()}?="
