"""ListObjectsV2 (GET /BUCKET?list-type=2): a page of keys in UTF-8 binary order.

https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html

The page is a pure function of the bucket's sorted keys and the request's parameters, so every
rule can be read and tested without a server: keys after `start-after` (or after the
continuation token, which wins), below `prefix`, rolled up at `delimiter` into CommonPrefixes
(each counting as one key against `max-keys`), at most 1000 per page.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import quote

from local_s3.errors import invalid_argument, xml_text
from local_s3.storage import StoredObject

# "Returns some or all (up to 1,000) of the objects in a bucket with each request."
MAX_KEYS = 1000
# The largest value S3 accepts in max-keys (a 32-bit signed integer); more is capped at 1000.
MAX_KEYS_ARGUMENT = 2**31 - 1
S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


@dataclass(frozen=True)
class ListRequest:
    prefix: str = ""
    delimiter: str = ""
    max_keys: int = MAX_KEYS
    start_after: str = ""
    continuation_token: str = ""
    encoding_type: str = ""


@dataclass(frozen=True)
class Page:
    keys: tuple[str, ...]
    common_prefixes: tuple[str, ...]
    is_truncated: bool
    next_continuation_token: str


def parse_list_request(query: Mapping[str, str]) -> ListRequest:
    """The query's parameters, checked as S3 checks them."""
    max_keys = query.get("max-keys", str(MAX_KEYS))
    if not max_keys.isdigit() or int(max_keys) > MAX_KEYS_ARGUMENT:
        message = "Provided max-keys not an integer or within integer range"
        raise invalid_argument("max-keys", max_keys, message)
    encoding = query.get("encoding-type", "")
    if encoding not in ("", "url"):
        message = "Invalid Encoding Method specified in Request"
        raise invalid_argument("encoding-type", encoding, message)
    token = query.get("continuation-token")
    if token is not None:
        decode_token(token)
    return ListRequest(
        prefix=query.get("prefix", ""),
        delimiter=query.get("delimiter", ""),
        max_keys=min(int(max_keys), MAX_KEYS),
        start_after=query.get("start-after", ""),
        continuation_token=token or "",
        encoding_type=encoding,
    )


def encode_token(last: str) -> str:
    """S3's continuation tokens are opaque; ours is the last key or prefix returned."""
    return base64.urlsafe_b64encode(last.encode()).decode()


def decode_token(token: str) -> str:
    try:
        return base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeError, ValueError):
        message = "The continuation token provided is incorrect"
        raise invalid_argument("continuation-token", token, message) from None


def list_page(sorted_keys: Sequence[str], request: ListRequest) -> Page:
    """The keys and common prefixes of one page; `sorted_keys` are in UTF-8 byte order."""
    after = decode_token(request.continuation_token) if request.continuation_token else ""
    after = after or request.start_after
    start = max(
        bisect.bisect_left(sorted_keys, request.prefix), bisect.bisect_right(sorted_keys, after)
    )
    keys: list[str] = []
    prefixes: list[str] = []
    last = ""
    for key in sorted_keys[start:]:
        if not key.startswith(request.prefix):
            break  # every key from here on sorts after the prefix's range
        rolled = rolled_up(key, request.prefix, request.delimiter)
        if rolled and (rolled == last or (after and after.startswith(rolled))):
            continue
        if len(keys) + len(prefixes) == request.max_keys:
            if not request.max_keys:
                break
            return Page(tuple(keys), tuple(prefixes), True, encode_token(last))
        if rolled:
            prefixes.append(rolled)
        else:
            keys.append(key)
        last = rolled or key
    return Page(tuple(keys), tuple(prefixes), False, "")


def rolled_up(key: str, prefix: str, delimiter: str) -> str:
    """The CommonPrefix a key rolls up into: the prefix up to and including the delimiter."""
    if not delimiter:
        return ""
    position = key.find(delimiter, len(prefix))
    return key[: position + len(delimiter)] if position >= 0 else ""


def encoded(value: str, request: ListRequest) -> str:
    """With encoding-type=url, S3 URL-encodes Key, Prefix, Delimiter and StartAfter."""
    return quote(value, safe="/") if request.encoding_type == "url" else value


def list_bucket_result(
    bucket: str, request: ListRequest, page: Page, objects: Mapping[str, StoredObject]
) -> bytes:
    """S3's ListBucketResult, elements in the order S3 sends them."""
    optional = [
        ("Delimiter", encoded(request.delimiter, request)),
        ("StartAfter", encoded(request.start_after, request)),
        ("ContinuationToken", request.continuation_token),
        ("NextContinuationToken", page.next_continuation_token),
        ("EncodingType", request.encoding_type),
    ]
    head = [
        ("Name", bucket),
        ("Prefix", encoded(request.prefix, request)),
        ("KeyCount", len(page.keys) + len(page.common_prefixes)),
        ("MaxKeys", request.max_keys),
        ("IsTruncated", str(page.is_truncated).lower()),
        *((name, value) for name, value in optional if value),
    ]
    body = "".join(element(name, value) for name, value in head)
    body += "".join(contents(objects[key], request) for key in page.keys)
    body += "".join(
        f"<CommonPrefixes>{element('Prefix', encoded(p, request))}</CommonPrefixes>"
        for p in page.common_prefixes
    )
    declaration = '<?xml version="1.0" encoding="UTF-8"?>\n'
    return f'{declaration}<ListBucketResult xmlns="{S3_XMLNS}">{body}</ListBucketResult>'.encode()


def contents(stored: StoredObject, request: ListRequest) -> str:
    moment = stored.last_modified.astimezone(UTC)
    modified = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03}Z"
    fields = [
        ("Key", encoded(stored.key, request)),
        ("LastModified", modified),
        ("ETag", stored.etag),
        ("Size", stored.size),
        ("StorageClass", "STANDARD"),
    ]
    return "<Contents>" + "".join(element(n, v) for n, v in fields) + "</Contents>"


def element(name: str, value: object) -> str:
    return f"<{name}>{xml_text(value)}</{name}>"
