"""What every handler reads from a request, and what every answer carries.

The query and headers as the client sent them (never a crash on bytes that are not UTF-8),
this app's and the bucket's origins, and the security headers built from them. server.py's
handlers use these; none of it is the upload protocol.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import bottle

import signer
from app_errors import AppError
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


class App(bottle.Bottle):
    """Bottle, with the security headers added to every response as it leaves the app.

    Added to the WSGI header list rather than through Bottle's response object: every answer
    carries them, Bottle's own error pages included, and Bottle's per-header bookkeeping is not
    paid for five fixed headers on every request.
    """

    state: Any  # server.AppState, set by create_app

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        extra = self.state.headers
        if not environ.get("PATH_INFO", "").startswith(("/static/", "/vendor/")):
            extra += NO_STORE  # pages and answers carry signed, expiring forms

        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            return start_response(status, [*headers, *extra], exc_info)

        return super().wsgi(environ, start)


def json_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> bottle.HTTPResponse:
    body = json.dumps({"error": message})
    return bottle.HTTPResponse(
        body, status, {"Content-Type": "application/json", **(headers or {})}
    )


# ---- Files: ours from public/, the browser libraries from node_modules ---------------------

HERE = Path(__file__).resolve().parent
VENDOR_FILES = {
    "jquery.js": "jquery/dist/jquery.min.js",
    "jquery.ui.widget.js": "blueimp-file-upload/js/vendor/jquery.ui.widget.js",
    "jquery.iframe-transport.js": "blueimp-file-upload/js/jquery.iframe-transport.js",
    "jquery.fileupload.js": "blueimp-file-upload/js/jquery.fileupload.js",
}


def static(path: str) -> bottle.HTTPResponse:
    return bottle.static_file(path, root=HERE / "public")


def vendor(name: str) -> bottle.HTTPResponse:
    """Only the listed browser libraries, from node_modules: never an arbitrary path."""
    if name not in VENDOR_FILES:
        raise AppError(404, f"There is no vendor file named {name!r}.")
    return bottle.static_file(VENDOR_FILES[name], root=HERE / "node_modules")
