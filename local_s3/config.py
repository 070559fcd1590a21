"""What one local S3 serves: its folder, buckets, region, credentials, CORS origins and clock."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from s3_rules import ACCESS_KEY_ID_LENGTH, MAX_POST_OBJECT_BYTES

ACCESS_KEY_PREFIX = "LOCAL"  # says where a key id comes from, as AKIA/ASIA do on AWS


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
    max_body_bytes: int = MAX_POST_OBJECT_BYTES
    clock: Callable[[], datetime] = field(default=utc_now, compare=False, repr=False)
    # What `python server.py doctor` asks about, each settable to configure a bucket wrongly:
    object_ownership: str | None = None  # "BucketOwnerEnforced": ACLs disabled
    abort_multipart_days: int | None = None  # a lifecycle rule aborting incomplete uploads
    post_object: bool = True  # False: refuse browser POST, as Cloudflare R2 does
    denied_actions: frozenset[str] = frozenset()  # e.g. {"s3:DeleteObject"}: AccessDenied


def new_credentials() -> tuple[str, str]:
    """A fresh access key id shaped like AWS's (20 upper-case letters and digits) and a
    40-character secret, for a local S3 whose keys only the running process knows."""
    digits = ACCESS_KEY_ID_LENGTH - len(ACCESS_KEY_PREFIX)
    return ACCESS_KEY_PREFIX + secrets.token_hex(digits).upper()[:digits], secrets.token_urlsafe(30)
