"""The app's two HMAC tokens, so it keeps no sessions.

A *page token* proves a request comes from a page this server served (checked on every
`/s3_credentials` and `POST /uploads`); a *key token* proves this server chose an object key
for this browser (checked when the browser reports the upload, and when it asks for fresh
links to its own uploads). Both carry their time and expire, and both are keyed by secrets
derived from the AWS secret key, so they survive restarts with no extra setting.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

PAGE_TOKEN_LIFETIME = timedelta(hours=12)
# Long enough to register after a retry or a reload, and to renew the links of what this
# browser uploaded for a week; a token copied out of a browser opens nothing after that.
KEY_TOKEN_LIFETIME = timedelta(days=7)
CLOCK_SKEW_SECONDS = 60
PAGE_TOKEN_ISSUED = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class Secrets:
    """One key per purpose (HMAC of a label), so a page token can never pass for a key token."""

    key_token: bytes
    page_token: bytes
    multipart_token: bytes

    @classmethod
    def derive(cls, secret_key: str) -> Secrets:
        return cls(
            hmac.digest(secret_key.encode(), b"upload-key-token/v1", "sha256"),
            hmac.digest(secret_key.encode(), b"upload-page-token/v1", "sha256"),
            hmac.digest(secret_key.encode(), b"upload-multipart-token/v1", "sha256"),
        )

    def __repr__(self) -> str:
        return "Secrets(...)"


def key_token(keys: Secrets, key: str, moment: datetime) -> str:
    """ "<unix time issued>.<HMAC of time and key>": this server chose `key`, at that time."""
    return timed_token(keys.key_token, key, moment)


def key_token_valid(keys: Secrets, key: str, token: str, moment: datetime) -> bool:
    """Signed by us for this key, and issued at most KEY_TOKEN_LIFETIME ago."""
    return timed_token_valid(keys.key_token, key, token, moment)


def multipart_token(keys: Secrets, fields: tuple[str, ...], moment: datetime) -> str:
    """Proof that this server started a multipart upload: key, UploadId, size and part size."""
    return timed_token(keys.multipart_token, "\n".join(fields), moment)


def multipart_token_valid(
    keys: Secrets, fields: tuple[str, ...], token: str, moment: datetime
) -> bool:
    return timed_token_valid(keys.multipart_token, "\n".join(fields), token, moment)


def timed_token(secret: bytes, message: str, moment: datetime) -> str:
    issued = str(int(moment.timestamp()))
    return f"{issued}.{timed_mac(secret, issued, message)}"


def timed_token_valid(secret: bytes, message: str, token: str, moment: datetime) -> bool:
    issued, _, mac = token.partition(".")
    if not PAGE_TOKEN_ISSUED.fullmatch(issued):
        return False
    age = moment.timestamp() - int(issued)
    in_time = -CLOCK_SKEW_SECONDS <= age <= KEY_TOKEN_LIFETIME.total_seconds()
    return (
        hmac.compare_digest(timed_mac(secret, issued, message).encode(), mac.encode()) and in_time
    )


def timed_mac(secret: bytes, issued: str, message: str) -> str:
    return hmac.new(secret, f"{issued}\n{message}".encode(), hashlib.sha256).hexdigest()


def issue_page_token(keys: Secrets, moment: datetime) -> str:
    """A token "<unix time>.<HMAC>" proving the caller loaded our page (valid 12 hours)."""
    issued = str(int(moment.timestamp()))
    return f"{issued}.{page_mac(keys, issued)}"


def page_token_valid(keys: Secrets, token: str, moment: datetime) -> bool:
    """Signed by us, and issued at most 12 hours ago (a minute ahead allows for clock skew)."""
    issued, _, mac = token.partition(".")
    if not PAGE_TOKEN_ISSUED.fullmatch(issued):
        return False
    age = moment.timestamp() - int(issued)
    in_time = -CLOCK_SKEW_SECONDS <= age <= PAGE_TOKEN_LIFETIME.total_seconds()
    return hmac.compare_digest(page_mac(keys, issued).encode(), mac.encode()) and in_time


def page_mac(keys: Secrets, issued: str) -> str:
    return hmac.new(keys.page_token, issued.encode(), hashlib.sha256).hexdigest()
