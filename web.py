"""What every handler reads from a request, and what every answer carries.

The query and headers as the client sent them (never a crash on bytes that are not UTF-8),
this app's and the bucket's origins, and the security headers built from them. server.py's
handlers use these; none of it is the upload protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

import bottle

import signer
from settings import Config


def request_query() -> Mapping[str, str]:
    """The query string decoded as UTF-8; bytes that are not UTF-8 become U+FFFD, never a 500."""
    return dict(parse_qsl(bottle.request.query_string, keep_blank_values=True))


def request_header(name: str) -> str:
    """A header as the client sent it. Bottle decodes headers as UTF-8 and raises on any other
    bytes; headers are the client's to write, so read the Latin-1 text WSGI hands over."""
    return bottle.request.environ.get("HTTP_" + name.upper().replace("-", "_"), "")


def request_origin(public_url: str | None) -> str:
    """This app's origin as the browser sees it: PUBLIC_URL when set (behind a platform's HTTPS
    router the request itself says http), else the request's scheme and Host header."""
    parts = bottle.request.urlparts
    return public_url or f"{parts.scheme}://{parts.netloc}"


def s3_origin(config: Config) -> str:
    parts = urlsplit(signer.bucket_url(config.bucket, config.region, config.endpoint))
    return f"{parts.scheme}://{parts.netloc}"


def security_headers(origin: str) -> tuple[tuple[str, str], ...]:
    """CSP: only our own scripts; the browser may talk to (and post forms to) S3 and no one else.

    Built once per app: they depend on the S3 origin only, and every response carries them.
    """
    csp = (
        f"default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src 'self' data: blob: {origin}; connect-src 'self' {origin}; "
        f"form-action 'self' {origin}; frame-ancestors 'none'; base-uri 'none'"
    )
    return (
        ("Content-Security-Policy", csp),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "same-origin"),
        ("X-Frame-Options", "DENY"),
    )


NO_STORE = (("Cache-Control", "no-store"),)
