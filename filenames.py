"""The user's filename: cleaned for people, carried to S3 as ASCII metadata, and back.

The filename never becomes part of the object key (the server chooses the key); it travels as
`x-amz-meta-filename`, shown in the upload list.
"""

from __future__ import annotations

import contextlib
import email.header
import unicodedata
from urllib.parse import quote, unquote

import s3_rules

MAX_FILENAME_CHARS = 255
# S3 allows 2 KB of user metadata in all; the filename is the only entry the app writes, and it
# takes at most half, leaving room for any metadata a bucket policy or a later feature adds.
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingMetadata.html
MAX_FILENAME_METADATA_BYTES = s3_rules.MAX_USER_METADATA_BYTES // 2
# Printable ASCII except "%" and "$" stays readable; everything else is UTF-8 percent-encoded.
# "$" too, because S3 replaces ${filename} in every form field, this one included, before it
# checks the policy: a file named "${filename}.jpg" would fail its own exact-match condition.
METADATA_SAFE = " !\"#&'()*+,-./:;<=>?@[\\]^_`{|}~"


def clean_filename(filename: str) -> str:
    """The name shown to people: no control or invisible format characters, 255 at most.

    A printable name (most of them) has no character of category C to drop, so it is not
    looked at one character at a time.
    """
    if filename.isprintable():
        visible = filename
    else:
        visible = "".join(ch for ch in filename if unicodedata.category(ch)[0] != "C")
    name = visible.strip()[:MAX_FILENAME_CHARS]
    while len(encode_metadata(name)) > MAX_FILENAME_METADATA_BYTES:
        name = name[:-1]
    return name


def encode_metadata(value: str) -> str:
    """Percent-encode non-ASCII as UTF-8, so the value survives as an HTTP header.

    S3 returns user metadata as `x-amz-meta-*` headers, which must be ASCII; percent-encoding
    round-trips exactly through every S3 implementation (RFC 2047 is decoded inconsistently).
    """
    return quote(value, safe=METADATA_SAFE)


def decode_metadata(value: str) -> str:
    """Our percent-encoding, or RFC 2047, which S3 uses to return a non-ASCII value it stored as
    sent (a name S3 filled in for `${filename}`)."""
    if value.startswith("=?") and value.endswith("?="):
        with contextlib.suppress(ValueError, LookupError):
            return str(email.header.make_header(email.header.decode_header(value)))
    return unquote(value, errors="replace")
