"""Direct-to-S3 browser uploads: a Bottle app that signs, never touches the file bytes.

The browser asks ``GET /s3_credentials`` for a signed POST policy, sends the file straight to
S3 as multipart/form-data, then reports the finished upload to ``POST /uploads``, which checks
it with a signed HEAD request and records it in SQLite. With no bucket configured, ``main``
starts the embedded local S3 (``local_s3.py``) so everything runs offline.

The file reads in request order: configuration, app and templates, page, signing endpoint,
upload registration, errors, entry point. Run ``python server.py --help`` for the settings.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.header
import hashlib
import hmac
import http.client
import importlib
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import socket
import sqlite3
import sys
import threading
import time
import unicodedata
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import bottle
import jinja2

import serving
import signer

LOG = logging.getLogger("server")
HERE = Path(__file__).resolve().parent
Clock = Callable[[], datetime]


# ---- Configuration: every setting, read from the environment in one place -------------------


class ConfigError(ValueError):
    """A setting is missing or wrong; the message is one sentence naming the variable."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("S3_BUCKET", None, "bucket to upload to; unset starts the embedded local S3"),
    Setting("AWS_ACCESS_KEY_ID", None, "access key id (required with S3_BUCKET)"),
    Setting("AWS_SECRET_ACCESS_KEY", None, "secret key (required with S3_BUCKET; never shown)"),
    Setting("AWS_SESSION_TOKEN", None, "session token for temporary credentials"),
    Setting("AWS_REGION", None, "bucket region, e.g. eu-west-1 (or AWS_DEFAULT_REGION)"),
    Setting("AWS_DEFAULT_REGION", None, "used when AWS_REGION is unset"),
    Setting("AWS_ENDPOINT_URL_S3", None, "custom S3 endpoint (MinIO, R2, Ceph); path-style URLs"),
    Setting("UPLOAD_MAX_BYTES", "10485760", "largest file accepted, in bytes (10 MB)"),
    Setting("UPLOAD_ALLOWED_TYPES", "image/*,application/pdf,text/plain", "allowed MIME types"),
    Setting("UPLOAD_KEY_PREFIX", "uploads", "object keys start with PREFIX/YYYY/MM/DD/"),
    Setting("UPLOAD_POLICY_TTL", "300", "seconds a signed upload form stays valid"),
    Setting("UPLOAD_RATE_LIMIT", "30/minute", "signed forms per client, N/second|minute|hour; off"),
    Setting("S3_ACL", None, "canned ACL for uploads, e.g. private (unset: bucket default)"),
    Setting("S3_TIMEOUT", "5", "seconds to wait for S3 when checking an upload"),
    Setting(
        "UPLOAD_AUTH",
        None,
        "login for page and forms: basic:USER:PASSWORD, or module:function(request) -> allowed",
    ),
    Setting("HOST", "127.0.0.1", "address the app listens on"),
    Setting("PUBLIC_HOST", None, "host name browsers use to reach HOST, e.g. with HOST=0.0.0.0"),
    Setting("PORT", "8080", "port the app listens on"),
    Setting(
        "TRUSTED_PROXY",
        None,
        "address of your reverse proxy, e.g. 127.0.0.1 (or *): its X-Forwarded-* name the client",
    ),
    Setting("S3_PORT", "9000", "port of the embedded local S3 (only without S3_BUCKET)"),
    Setting("DATA_DIR", "data", "folder for the upload list and the embedded S3's objects"),
    Setting("WAITRESS_THREADS", "4", "worker threads serving requests (2 per core is plenty)"),
    Setting("ACCESS_LOG", "off", "one log line per request, on|off (a proxy in front logs too)"),
)
DEFAULTS = {setting.name: setting.default for setting in SETTINGS}

# https://docs.aws.amazon.com/AmazonS3/latest/userguide/acl-overview.html#canned-acl
CANNED_ACLS = frozenset(
    {
        "private",
        "public-read",
        "public-read-write",
        "aws-exec-read",
        "authenticated-read",
        "bucket-owner-read",
        "bucket-owner-full-control",
    }
)
# S3 refuses POST uploads over 5 GB:
# https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html
S3_POST_MAX_BYTES = 5 * 1024**3
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
KEY_PREFIX = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
MIME_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"  # RFC 6838 restricted-name
MIME_TYPE = re.compile(rf"{MIME_NAME}/{MIME_NAME}")
MIME_PATTERN = re.compile(rf"{MIME_NAME}/(\*|{MIME_NAME})")
RATE_UNITS = {"second": 1, "minute": 60, "hour": 3600}


@dataclass(frozen=True)
class RateLimit:
    requests: int
    seconds: int


@dataclass(frozen=True)
class Config:
    """Everything the app needs to know, read once at start-up."""

    credentials: signer.Credentials | None
    bucket: str | None
    region: str
    endpoint: str | None = None
    max_bytes: int = 10 * 1024 * 1024
    allowed_types: tuple[str, ...] = ("image/*", "application/pdf", "text/plain")
    key_prefix: str = "uploads"
    policy_ttl: int = 300
    rate_limit: RateLimit | None = RateLimit(30, 60)
    acl: str | None = None
    s3_timeout: float = 5.0
    host: str = "127.0.0.1"
    port: int = 8080
    s3_port: int = 9000
    data_dir: Path = Path("data")
    public_host: str | None = None
    trusted_proxy: str | None = None
    threads: int = 4
    access_log: bool = False
    embedded: bool = False
    auth: Callable[[bottle.BaseRequest], Any] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], dotenv: Path | None = None) -> Config:
        """Read the settings; a `.env` file fills in what the environment leaves unset."""
        values = {**read_dotenv(dotenv), **environ}

        def get(name: str) -> str | None:
            return values.get(name) or DEFAULTS[name]

        bucket = get("S3_BUCKET")
        return cls(
            credentials=read_credentials(get) if bucket else None,
            bucket=read_bucket(bucket) if bucket else None,
            region=read_region(get) if bucket else "us-east-1",
            endpoint=read_endpoint(get("AWS_ENDPOINT_URL_S3")),
            max_bytes=read_int(get, "UPLOAD_MAX_BYTES", 1, S3_POST_MAX_BYTES),
            allowed_types=read_allowed_types(get("UPLOAD_ALLOWED_TYPES")),
            key_prefix=read_key_prefix(get("UPLOAD_KEY_PREFIX")),
            policy_ttl=read_int(get, "UPLOAD_POLICY_TTL", 1, 7 * 24 * 3600),
            rate_limit=read_rate_limit(get("UPLOAD_RATE_LIMIT")),
            acl=read_acl(get("S3_ACL")),
            s3_timeout=read_int(get, "S3_TIMEOUT", 1, 300),
            host=get("HOST"),
            port=read_int(get, "PORT", 1, 65535),
            s3_port=read_int(get, "S3_PORT", 0, 65535),
            data_dir=Path(get("DATA_DIR")),
            public_host=get("PUBLIC_HOST"),
            trusted_proxy=read_trusted_proxy(get("TRUSTED_PROXY")),
            threads=read_int(get, "WAITRESS_THREADS", 1, 256),
            access_log=read_switch(get, "ACCESS_LOG"),
            auth=read_upload_auth(get("UPLOAD_AUTH")),
        )

    @property
    def browser_host(self) -> str:
        """The host in the URLs browsers are given: listening on every interface (0.0.0.0, ::)
        is not an address a browser can use, so that means loopback unless PUBLIC_HOST says."""
        if self.public_host:
            return self.public_host
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def app_origin(self) -> str:
        return f"http://{self.browser_host}:{self.port}"


def read_dotenv(path: Path | None) -> dict[str, str]:
    """Parse a simple `.env` file: KEY=VALUE lines, `#` comments, optional quotes."""
    if path is None or not path.is_file():
        return {}
    values = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip().removeprefix("export ").strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            raise ConfigError(f"{path} line {number} is not KEY=VALUE.")
        values[name.strip()] = value.strip().strip("\"'")
    return values


def read_int(get: Callable[[str], str | None], name: str, low: int, high: int) -> int:
    text = get(name) or ""
    if not re.fullmatch(r"[0-9]{1,12}", text.strip()) or not low <= int(text) <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, not {text!r}.")
    return int(text)


def read_credentials(get: Callable[[str], str | None]) -> signer.Credentials:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if not get(name):
            raise ConfigError(f"{name} is not set; it is required when S3_BUCKET is set.")
    return signer.Credentials(
        get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY"), get("AWS_SESSION_TOKEN")
    )


def read_bucket(bucket: str) -> str:
    if not BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(f"S3_BUCKET {bucket!r} is not a valid S3 bucket name.")
    return bucket


def read_region(get: Callable[[str], str | None]) -> str:
    region = get("AWS_REGION") or get("AWS_DEFAULT_REGION")
    if not region:
        raise ConfigError("AWS_REGION is not set; it is required when S3_BUCKET is set.")
    if not re.fullmatch(r"[a-z0-9-]{2,32}", region):
        raise ConfigError(f"AWS_REGION {region!r} is not a region name like eu-west-1.")
    return region


def read_endpoint(endpoint: str | None) -> str | None:
    if not endpoint:
        return None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError(f"AWS_ENDPOINT_URL_S3 {endpoint!r} is not an http(s):// URL.")
    return endpoint.rstrip("/")


def read_allowed_types(text: str) -> tuple[str, ...]:
    patterns = tuple(item.strip().lower() for item in text.split(",") if item.strip())
    for pattern in patterns:
        if not MIME_PATTERN.fullmatch(pattern):
            raise ConfigError(f"UPLOAD_ALLOWED_TYPES entry {pattern!r} is not like image/png.")
    if not patterns:
        raise ConfigError("UPLOAD_ALLOWED_TYPES is empty; list types like image/*,application/pdf.")
    return patterns


def read_key_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if not KEY_PREFIX.fullmatch(prefix) or ".." in prefix.split("/"):
        raise ConfigError(
            f"UPLOAD_KEY_PREFIX {prefix!r} must be /-separated names of letters, digits, "
            "'.', '-' and '_', none of them '..'."
        )
    return prefix


def read_rate_limit(text: str) -> RateLimit | None:
    if text.strip().lower() in ("0", "off"):
        return None
    match = re.fullmatch(r"\s*([0-9]{1,6})\s*/\s*(second|minute|hour)\s*", text)
    if not match or int(match[1]) == 0:
        raise ConfigError(f"UPLOAD_RATE_LIMIT {text!r} must look like 30/minute, or be off.")
    return RateLimit(int(match[1]), RATE_UNITS[match[2]])


def read_upload_auth(text: str | None) -> Callable[[bottle.BaseRequest], Any] | None:
    """basic:USER:PASSWORD, or module:function, imported now so that a typo stops start-up."""
    if not text:
        return None
    if text.startswith("basic:"):
        user, colon, password = text.removeprefix("basic:").partition(":")
        if not user or not colon or not password:
            raise ConfigError("UPLOAD_AUTH basic:USER:PASSWORD needs a user and a password.")
        return BasicAuth(user, password)
    module_name, colon, function_name = text.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError):
        function = None
    if not colon or not callable(function):
        raise ConfigError(f"UPLOAD_AUTH {text!r} is not basic:USER:PASSWORD or module:function.")
    return function


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic authentication (RFC 7617) against one user and password; repr hides both."""

    user: str = field(repr=False)
    password: str = field(repr=False)

    def __call__(self, request: bottle.BaseRequest) -> bool:
        scheme, _, encoded = request.environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:  # not base64, or not even ASCII
            return False
        expected = f"{self.user}:{self.password}".encode()
        return scheme.lower() == "basic" and hmac.compare_digest(given, expected)


def read_switch(get: Callable[[str], str | None], name: str) -> bool:
    text = (get(name) or "").strip().lower()
    if text not in ("on", "off"):
        raise ConfigError(f"{name} must be on or off, not {text!r}.")
    return text == "on"


def read_trusted_proxy(address: str | None) -> str | None:
    """waitress believes X-Forwarded-* only from this one peer address, or from anyone with *."""
    if address and address != "*":
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(
                f"TRUSTED_PROXY {address!r} is not an IP address such as 127.0.0.1 (or *)."
            ) from None
    return address or None


def read_acl(acl: str | None) -> str | None:
    if acl and acl not in CANNED_ACLS:
        raise ConfigError(f"S3_ACL {acl!r} is not a canned ACL such as private.")
    return acl or None


# ---- App and templates -----------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    """Keys derived from the AWS secret key, so tokens survive restarts with no extra setting.

    Each purpose gets its own key (HMAC of a label), so a page token can never pass for a key
    token.
    """

    key_token: bytes
    page_token: bytes

    @classmethod
    def derive(cls, secret_key: str) -> Secrets:
        return cls(
            hmac.digest(secret_key.encode(), b"upload-key-token/v1", "sha256"),
            hmac.digest(secret_key.encode(), b"upload-page-token/v1", "sha256"),
        )

    def __repr__(self) -> str:
        return "Secrets(...)"


@dataclass(frozen=True)
class AppState:
    """What the request handlers share; it hangs off the Bottle app, never a module global."""

    config: Config
    clock: Clock
    secrets: Secrets
    limiter: RateLimiter | None
    store: UploadStore
    page: jinja2.Template
    headers: tuple[tuple[str, str], ...]


class App(bottle.Bottle):
    """Bottle, with the security headers added to every response as it leaves the app.

    Added to the WSGI header list rather than through Bottle's response object: every answer
    carries them, Bottle's own error pages included, and Bottle's per-header bookkeeping (name
    and value normalised on each set, re-encoded on each read) is not paid for five fixed
    headers on every request.
    """

    state: AppState

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        extra = self.state.headers
        if not environ.get("PATH_INFO", "").startswith(("/static/", "/vendor/")):
            extra += NO_STORE  # pages and answers carry signed, expiring forms

        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            return start_response(status, [*headers, *extra], exc_info)

        return super().wsgi(environ, start)


def create_app(config: Config, *, clock: Clock | None = None) -> bottle.Bottle:
    """Build the WSGI app for one S3 target; `clock` returns an aware UTC datetime."""
    if config.credentials is None or config.bucket is None:
        raise ConfigError("create_app needs a bucket and credentials; main() provides them.")
    app = App()
    app.state = AppState(
        config=config,
        clock=clock or (lambda: datetime.now(UTC)),
        secrets=Secrets.derive(config.credentials.secret_key),
        limiter=RateLimiter(config.rate_limit) if config.rate_limit else None,
        store=UploadStore.create(config.data_dir / "uploads.sqlite3"),
        page=templates().get_template("index.html"),
        headers=security_headers(s3_origin(config)),
    )
    app.install(json_errors)
    app.install(require_login)  # inside json_errors, so a refusal is JSON too
    add_routes(app)
    app.default_error_handler = error_page
    return app


def add_routes(app: bottle.Bottle) -> None:
    app.route("/", "GET", page)
    app.route("/static/<path:path>", "GET", static)
    app.route("/vendor/<name>", "GET", vendor)
    app.route("/s3_credentials", "GET", s3_credentials)
    app.route("/uploads", "POST", register_upload)
    app.route("/uploads", "GET", list_uploads)
    app.route("/uploads/done", "GET", upload_done)
    app.route("/healthz", "GET", healthz)


def templates() -> jinja2.Environment:
    """Jinja2 with autoescape on for every template: a filename can never become markup."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "views"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def state() -> AppState:
    return bottle.request.app.state


def now() -> datetime:
    """The request's one clock reading, passed down to everything it signs."""
    return state().clock()


# ---- Page --------------------------------------------------------------------------------------

VENDOR_FILES = {
    "jquery.js": "jquery/dist/jquery.min.js",
    "jquery.ui.widget.js": "blueimp-file-upload/js/vendor/jquery.ui.widget.js",
    "jquery.iframe-transport.js": "blueimp-file-upload/js/jquery.iframe-transport.js",
    "jquery.fileupload.js": "blueimp-file-upload/js/jquery.fileupload.js",
    "jquery.fileupload-process.js": "blueimp-file-upload/js/jquery.fileupload-process.js",
    "jquery.fileupload-validate.js": "blueimp-file-upload/js/jquery.fileupload-validate.js",
}
PAGE_TOKEN_LIFETIME = timedelta(hours=12)
PAGE_TOKEN_ISSUED = re.compile(r"[0-9]{1,12}")


def page() -> str:
    app, moment = state(), now()
    config = app.config
    notice = page_notice(app.store, request_query())
    return app.page.render(
        limits=limits(config),
        page_token=issue_page_token(app.secrets, moment),
        s3_origin=s3_origin(config),
        nojs_form=nojs_form(config, app.secrets, moment, request_origin()),
        uploads=[with_download_url(config, record, moment) for record in app.store.recent()],
        notice=notice,
    )


def limits(config: Config) -> dict[str, Any]:
    return {
        "max_bytes": config.max_bytes,
        "max_human": human_size(config.max_bytes),
        "allowed_types": list(config.allowed_types),
        "policy_ttl": config.policy_ttl,
    }


def human_size(size: int) -> str:
    """10485760 -> "10 MB": binary multiples, the way browsers and file managers show sizes."""
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


class Notice(NamedTuple):
    text: str
    is_error: bool = False


def page_notice(store: UploadStore, query: Mapping[str, str]) -> Notice | None:
    """The line shown after the no-JavaScript form's redirect back to the page."""
    if query.get("uploaded"):
        record = store.get(query["uploaded"])
        return Notice(f"Uploaded {record['filename']}") if record else None
    if query.get("error"):
        return Notice("Upload not recorded: " + query["error"][:200], is_error=True)
    return None


def nojs_form(config: Config, keys: Secrets, moment: datetime, origin: str) -> dict[str, Any]:
    """A ready signed form for browsers without JavaScript.

    The key is chosen before the user picks a file, so it has no extension and no Content-Type
    can be pinned: S3 stores its default type. The file's name still reaches S3's metadata
    through S3's `${filename}` variable, which S3 fills in from the file part (the key stays
    ours). S3 then redirects the browser (`success_action_redirect`) to /uploads/done with
    bucket, key and etag appended.
    https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html
    """
    key = object_key(config.key_prefix, moment, uuid.uuid4(), extension="")
    redirect = f"{origin}/uploads/done?token={key_token(keys, key)}"
    return signer.presigned_post(
        config.credentials,
        **post_target(config, key),
        success_action_redirect=redirect,
        metadata={"filename": signer.FILENAME_VARIABLE},
        now=moment,
    )


def static(path: str) -> bottle.HTTPResponse:
    return bottle.static_file(path, root=HERE / "public")


def vendor(name: str) -> bottle.HTTPResponse:
    """Only the listed browser libraries, from node_modules: never an arbitrary path."""
    if name not in VENDOR_FILES:
        raise AppError(404, f"There is no vendor file named {name!r}.")
    return bottle.static_file(VENDOR_FILES[name], root=HERE / "node_modules")


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


def s3_origin(config: Config) -> str:
    parts = urlsplit(signer.bucket_url(config.bucket, config.region, config.endpoint))
    return f"{parts.scheme}://{parts.netloc}"


def request_query() -> Mapping[str, str]:
    """The query string decoded as UTF-8; bytes that are not UTF-8 become U+FFFD, never a 500."""
    return dict(parse_qsl(bottle.request.query_string, keep_blank_values=True))


def request_header(name: str) -> str:
    """A header as the client sent it. Bottle decodes headers as UTF-8 and raises on any other
    bytes; headers are the client's to write, so read the Latin-1 text WSGI hands over."""
    return bottle.request.environ.get("HTTP_" + name.upper().replace("-", "_"), "")


def request_origin() -> str:
    """This app's origin as the browser sees it (scheme and Host header)."""
    parts = bottle.request.urlparts
    return f"{parts.scheme}://{parts.netloc}"


# ---- Signing endpoint: GET /s3_credentials -----------------------------------------------------

MAX_FILENAME_CHARS = 255
# S3 limits all user metadata to 2 KB; the encoded filename keeps well inside it.
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingMetadata.html
MAX_METADATA_BYTES = 1024
# Printable ASCII except "%" and "$" stays readable; everything else is UTF-8 percent-encoded.
# "$" too, because S3 replaces ${filename} in every form field, this one included, before it
# checks the policy: a file named "${filename}.jpg" would fail its own exact-match condition.
METADATA_SAFE = " !\"#&'()*+,-./:;<=>?@[\\]^_`{|}~"
EXTENSION = re.compile(r"[a-z0-9]{1,10}")
SIZE = re.compile(r"[0-9]{1,15}")


@dataclass(frozen=True)
class UploadRequest:
    """A validated request for a signed form."""

    filename: str
    content_type: str
    size: int


def s3_credentials() -> dict[str, Any]:
    """A signed form for one file. Other sites are refused before they spend any rate budget."""
    app, moment = state(), now()
    refuse_cross_site(app.secrets, moment)
    if app.limiter:
        app.limiter.check(bottle.request.environ.get("REMOTE_ADDR", ""), moment.timestamp())
    upload = parse_upload_request(request_query(), app.config)
    key = object_key(app.config.key_prefix, moment, uuid.uuid4(), extension(upload.filename))
    form = signer.presigned_post(
        app.config.credentials,
        **post_target(app.config, key),
        content_type=upload.content_type,
        metadata={"filename": encode_metadata(upload.filename)},
        success_action_status="201",
        now=moment,
    )
    expires_at = moment + timedelta(seconds=app.config.policy_ttl)
    return {
        **form,
        "key": key,
        "expires_at": iso_utc(expires_at),
        "token": key_token(app.secrets, key),
    }


def post_target(config: Config, key: str) -> dict[str, Any]:
    """The presigned_post arguments every form shares.

    content-length-range is [1, UPLOAD_MAX_BYTES] rather than the declared size: the declared
    size is checked here for a quick 413, and S3's EntityTooLarge then means "over the limit",
    which is what the page tells the user. The minimum of 1 refuses empty files (EntityTooSmall).
    https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html
    """
    return {
        "bucket": config.bucket,
        "key": key,
        "region": config.region,
        "endpoint": config.endpoint,
        "min_bytes": 1,
        "max_bytes": config.max_bytes,
        "acl": config.acl,
        "expires_in": config.policy_ttl,
    }


def parse_upload_request(query: Mapping[str, str], config: Config) -> UploadRequest:
    """Check filename, content_type and size: 400 malformed, 413 too big, 415 type refused."""
    filename = clean_filename(query.get("filename", ""))
    content_type = query.get("content_type", "").strip().lower()
    size_text = query.get("size", "").strip()
    if not filename:
        raise AppError(400, "The filename parameter is missing or empty.")
    if not MIME_TYPE.fullmatch(content_type):
        raise AppError(400, "The content_type parameter must be a MIME type like image/png.")
    if not SIZE.fullmatch(size_text) or int(size_text) < 1:
        raise AppError(400, "The size parameter must be a whole number of bytes, at least 1.")
    if int(size_text) > config.max_bytes:
        raise AppError(413, f"The file is larger than the {human_size(config.max_bytes)} limit.")
    if not type_allowed(content_type, config.allowed_types):
        raise AppError(415, f"Files of type {content_type} are not accepted here.")
    return UploadRequest(filename, content_type, int(size_text))


def type_allowed(content_type: str, patterns: Iterable[str]) -> bool:
    """Exact types, or a whole family with "image/*"."""
    family = content_type.split("/")[0] + "/*"
    return any(pattern in (content_type, family) for pattern in patterns)


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
    while len(encode_metadata(name)) > MAX_METADATA_BYTES:
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


def extension(filename: str) -> str:
    """The extension, ".jpg" from "Holiday.JPG"; none unless it is 1-10 letters or digits."""
    stem, dot, ext = filename.rpartition(".")
    ext = ext.lower()
    return f".{ext}" if dot and stem and EXTENSION.fullmatch(ext) else ""


def object_key(prefix: str, moment: datetime, unique: uuid.UUID, extension: str) -> str:
    """PREFIX/YYYY/MM/DD/<uuid4><.ext>: the server chooses; the user's filename is never a path.

    Dates here are written from the datetime's fields: strftime costs twice as much.
    """
    return f"{prefix}/{moment.year:04}/{moment.month:02}/{moment.day:02}/{unique}{extension}"


def iso_utc(moment: datetime) -> str:
    """2026-12-02T01:02:03Z."""
    t = moment.astimezone(UTC)
    return f"{t.year:04}-{t.month:02}-{t.day:02}T{t.hour:02}:{t.minute:02}:{t.second:02}Z"


def key_token(keys: Secrets, key: str) -> str:
    """Proof that this server issued `key`: HMAC-SHA256, so no session is needed."""
    return hmac.new(keys.key_token, key.encode(), hashlib.sha256).hexdigest()


def key_token_valid(keys: Secrets, key: str, token: str) -> bool:
    return hmac.compare_digest(key_token(keys, key).encode(), token.encode())


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
    in_time = -60 <= age <= PAGE_TOKEN_LIFETIME.total_seconds()
    return hmac.compare_digest(page_mac(keys, issued).encode(), mac.encode()) and in_time


def page_mac(keys: Secrets, issued: str) -> str:
    return hmac.new(keys.page_token, issued.encode(), hashlib.sha256).hexdigest()


def refuse_cross_site(keys: Secrets, moment: datetime) -> None:
    """Only our own page may mint forms: other sites are refused by Fetch metadata, Origin, token.

    The X-Upload-Token header also forces a CORS preflight, which this app never answers.
    Fetch metadata (Sec-Fetch-Site): https://www.w3.org/TR/fetch-metadata/
    """
    if request_header("Sec-Fetch-Site") == "cross-site":
        raise AppError(403, "Cross-site requests may not use this endpoint.")
    origin = request_header("Origin")
    if origin and origin != request_origin():
        raise AppError(403, "Requests from other origins may not use this endpoint.")
    if not page_token_valid(keys, request_header("X-Upload-Token"), moment):
        raise AppError(403, "The X-Upload-Token header is missing or expired; reload the page.")


class RateLimiter:
    """A sliding-window log per client: at most `requests` in any `seconds`, thread-safe."""

    MAX_CLIENTS = 10_000

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.clients: dict[str, deque[float]] = {}

    def check(self, client: str, moment: float) -> None:
        """Record one request, or raise 429 with the seconds until one is allowed again."""
        with self.lock:
            if len(self.clients) > self.MAX_CLIENTS:
                self.forget_idle(moment)
            times = self.clients.setdefault(client, deque())
            while times and times[0] <= moment - self.limit.seconds:
                times.popleft()
            if len(times) >= self.limit.requests:
                wait = max(1, math.ceil(times[0] + self.limit.seconds - moment))
                raise AppError(429, "Too many upload requests; wait and try again.", wait=wait)
            times.append(moment)

    def forget_idle(self, moment: float) -> None:
        idle = [c for c, times in self.clients.items() if times[-1] <= moment - self.limit.seconds]
        for client in idle:
            del self.clients[client]


# ---- Upload registration: POST /uploads, GET /uploads, GET /uploads/done ----------------------

MAX_REGISTRATION_BYTES = 4096
RECENT_UPLOADS = 50
DOWNLOAD_URL_LIFETIME = 3600


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD request to S3 tells us about an uploaded object."""

    size: int
    etag: str
    content_type: str
    filename: str


def register_upload() -> dict[str, Any]:
    app, moment = state(), now()
    refuse_cross_site(app.secrets, moment)
    key, etag, token = parse_registration(bottle.request)
    record = record_upload(app, key, etag, token, moment)
    bottle.response.status = 201
    return {"upload": record}


def list_uploads() -> dict[str, Any]:
    app, moment = state(), now()
    return {"uploads": [with_download_url(app.config, r, moment) for r in app.store.recent()]}


def upload_done() -> None:
    """Where S3 sends a no-JavaScript browser after its upload (success_action_redirect).

    This is a top-level navigation from S3's origin, so there is no page token; the key token in
    the URL is the proof, and registering a real, issued object is harmless to replay.
    """
    app, moment, query = state(), now(), request_query()
    key, etag, token = (query.get(name, "") for name in ("key", "etag", "token"))
    try:
        if query.get("bucket") != app.config.bucket:
            raise AppError(400, "The upload went to a different bucket.")
        record_upload(app, key, etag, token, moment)
    except AppError as error:
        see_other("/?error=" + quote(error.message))
    see_other("/?uploaded=" + quote(key))


def see_other(location: str) -> None:
    """A 303 to a path on this site. Relative, unlike bottle.redirect, which builds an absolute
    URL from the Host header: a client-chosen Host must not pick where the browser goes next."""
    raise bottle.HTTPResponse(status=303, headers={"Location": location})


def healthz() -> dict[str, str]:
    return {"status": "ok", "s3": "embedded" if state().config.embedded else "external"}


def parse_registration(request: bottle.BaseRequest) -> tuple[str, str, str]:
    """The JSON body {"key", "etag", "token"}, all strings; anything else is a 400."""
    if request.content_type.split(";")[0].strip() != "application/json":
        raise AppError(400, "The body must be JSON (Content-Type: application/json).")
    if request.content_length > MAX_REGISTRATION_BYTES:
        raise AppError(400, "The body is too large for an upload report.")
    try:
        body = json.loads(request.body.read(MAX_REGISTRATION_BYTES))
    except ValueError:
        raise AppError(400, "The body is not valid JSON.") from None
    fields = ("key", "etag", "token")
    if not isinstance(body, dict) or not all(isinstance(body.get(f), str) for f in fields):
        raise AppError(400, "The body must be a JSON object with string key, etag and token.")
    return body["key"], body["etag"], body["token"]


def record_upload(app: AppState, key: str, etag: str, token: str, moment: datetime) -> dict:
    """Trust nothing the browser says: the key must be ours, and S3 must confirm the object."""
    if not key_token_valid(app.secrets, key, token):
        raise AppError(403, "This key was not issued by this server.")
    info = head_object(app.config, key, moment)
    if not info.etag or normalise_etag(etag) != normalise_etag(info.etag):
        raise AppError(409, "The ETag does not match the object stored in S3.")
    if not 1 <= info.size <= app.config.max_bytes:
        raise AppError(409, "The stored object's size is outside the allowed range.")
    record = {
        "key": key,
        "filename": info.filename or key.rpartition("/")[2],
        "size": info.size,
        "etag": normalise_etag(info.etag),
        "content_type": info.content_type,
        "created_at": iso_utc(moment),
    }
    try:
        app.store.add(record)
    except sqlite3.Error as error:  # a full disk or a locked database: the object is safe in S3
        LOG.error("could not record upload %s: %s", key, error)
        raise AppError(503, "The file is in S3 but could not be recorded; try again.") from None
    return with_download_url(app.config, record, moment)


def normalise_etag(etag: str) -> str:
    """S3 sends ETags quoted ("..."), browsers sometimes strip the quotes: compare the inside."""
    return etag.strip().removeprefix("W/").strip('"').lower()


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect from S3 (wrong region, say) is an answer to report, not a place to follow."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def head_object(config: Config, key: str, moment: datetime) -> ObjectInfo:
    """Ask S3 about the object with a SigV4-signed HEAD request."""
    url = signer.object_url(config.bucket, key, config.region, config.endpoint)
    headers = signer.sign_request(config.credentials, "HEAD", url, config.region, now=moment)
    request = urllib.request.Request(url, method="HEAD", headers=headers)
    deadline = time.monotonic() + config.s3_timeout
    try:
        with s3_opener(config).open(request, timeout=config.s3_timeout) as reply:
            if time.monotonic() >= deadline:  # cut off by the deadline: the headers may be partial
                raise TimeoutError
            return object_info(reply.headers)
    except urllib.error.HTTPError as error:
        raise head_error(error.code) from None
    except urllib.error.URLError as error:
        raise s3_unreachable(error.reason, deadline) from None
    except (OSError, http.client.HTTPException) as error:
        raise s3_unreachable(error, deadline) from None


def s3_opener(config: Config) -> urllib.request.OpenerDirector:
    """No redirects; no proxy for the embedded S3, which is always on this machine; and the
    timeout bounds the whole exchange."""
    handlers = [NoRedirects(), DeadlineHTTPHandler(), DeadlineHTTPSHandler()]
    handlers += [urllib.request.ProxyHandler({})] * config.embedded
    return urllib.request.build_opener(*handlers)


class Deadline:
    """For http.client connections: `timeout` bounds sending the request and reading the
    answer's status and headers (all of a HEAD), not each read.

    A socket timeout only limits one read, so an endpoint that sends a byte every second would
    hold the request forever; at the deadline the socket is shut down and the read fails.
    """

    timeout: float
    sock: socket.socket | None

    def connect(self) -> None:
        super().connect()
        self.watchdog = threading.Timer(self.timeout, self.expire)
        self.watchdog.daemon = True
        self.watchdog.start()

    def getresponse(self) -> http.client.HTTPResponse:
        try:
            return super().getresponse()
        finally:
            self.watchdog.cancel()  # urllib closes the socket, not the connection, on success

    def expire(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if getattr(self, "watchdog", None):
            self.watchdog.cancel()
        super().close()


class DeadlineHTTPConnection(Deadline, http.client.HTTPConnection):
    pass


class DeadlineHTTPSConnection(Deadline, http.client.HTTPSConnection):
    pass


class DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(DeadlineHTTPConnection, request)


class DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(DeadlineHTTPSConnection, request, context=self._context)


def object_info(headers: Mapping[str, str]) -> ObjectInfo:
    length = headers.get("Content-Length", "")
    return ObjectInfo(
        size=int(length) if length.isdigit() else -1,
        etag=headers.get("ETag", ""),
        content_type=headers.get("Content-Type", "binary/octet-stream"),
        filename=clean_filename(decode_metadata(headers.get("x-amz-meta-filename", ""))),
    )


def head_error(status: int) -> AppError:
    """Without s3:ListBucket, S3 answers a HEAD for a missing object with 403, not 404.

    A HEAD answer has no body, so 403 cannot tell "missing" from "not allowed": say both.
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html
    """
    if status == 404:
        return AppError(404, "The object was not found in S3 (S3 answered 404).")
    if status == 403:
        return AppError(
            404, "The object was not found in S3, or this app may not read it (S3 answered 403)."
        )
    return AppError(502, f"S3 answered {status} when checking the upload.")


def s3_unreachable(reason: object, deadline: float) -> AppError:
    if isinstance(reason, TimeoutError) or time.monotonic() >= deadline:
        return AppError(504, "S3 did not answer in time; try again.")
    if isinstance(reason, http.client.HTTPException):
        return AppError(502, "S3 sent an answer that is not valid HTTP.")
    return AppError(502, "S3 could not be reached to check the upload.")


def with_download_url(config: Config, record: Mapping[str, Any], moment: datetime) -> dict:
    """Add a presigned GET URL (1 hour), so uploads in private buckets can be opened."""
    url = signer.object_url(config.bucket, record["key"], config.region, config.endpoint)
    download = signer.presign_url(
        config.credentials, "GET", url, config.region, expires_in=DOWNLOAD_URL_LIFETIME, now=moment
    )
    return {**record, "url": download}


class UploadStore:
    """Recorded uploads in SQLite: one short connection per call, WAL so readers never wait."""

    COLUMNS = ("key", "filename", "size", "etag", "content_type", "created_at")

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path) -> UploadStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        store = cls(path)
        with store.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS uploads (key TEXT PRIMARY KEY, filename TEXT NOT NULL,"
                " size INTEGER NOT NULL, etag TEXT NOT NULL, content_type TEXT NOT NULL,"
                " created_at TEXT NOT NULL)"
            )
        return store

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=5)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def add(self, record: Mapping[str, Any]) -> None:
        """Insert, or update when the same key is reported again (the last upload wins)."""
        with self.connect() as db:
            db.execute(
                "INSERT INTO uploads VALUES (:key, :filename, :size, :etag, :content_type,"
                " :created_at) ON CONFLICT(key) DO UPDATE SET filename=excluded.filename,"
                " size=excluded.size, etag=excluded.etag, content_type=excluded.content_type,"
                " created_at=excluded.created_at",
                {column: record[column] for column in self.COLUMNS},
            )

    def recent(self, limit: int = RECENT_UPLOADS) -> list[dict[str, Any]]:
        with self.connect() as db:
            rows = db.execute(
                "SELECT * FROM uploads ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,)
            )
            return [dict(row) for row in rows]

    def get(self, key: str) -> dict[str, Any] | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM uploads WHERE key = ?", (key,)).fetchone()
            return dict(row) if row else None


# ---- Errors: always JSON {"error": "..."} with the right status, never a bare 500 -------------


class AppError(Exception):
    """A refusal with its HTTP status and one clear sentence for the user."""

    def __init__(self, status: int, message: str, *, wait: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.wait = wait


def json_errors(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Bottle plugin: turn an AppError raised by a handler into its JSON response."""

    def handler(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except AppError as error:
            headers = {"Retry-After": str(error.wait)} if error.wait else {}
            return json_response(error.status, error.message, headers)

    return handler


# UPLOAD_AUTH guards everything that shows, signs or records uploads; static files stay open.
LOGIN_PATHS = frozenset({"/", "/s3_credentials", "/uploads", "/uploads/done"})
BASIC_CHALLENGE = 'Basic realm="uploads", charset="UTF-8"'


def require_login(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Bottle plugin: with UPLOAD_AUTH set, no one gets the page or a form before logging in.

    Basic auth answers 401 with a challenge, so the browser asks for the password (RFC 7617);
    a site's own function answers 403, since its login is not HTTP's. A function that raises is
    logged and counts as a refusal: the check fails closed.
    """

    def handler(*args: Any, **kwargs: Any) -> Any:
        auth = state().config.auth
        if auth is None or bottle.request.path not in LOGIN_PATHS:
            return callback(*args, **kwargs)
        if isinstance(auth, BasicAuth):
            if not auth(bottle.request):
                challenge = {"WWW-Authenticate": BASIC_CHALLENGE}
                return json_response(401, "Log in to upload files.", challenge)
        elif not login_allowed(auth):
            return json_response(403, "Log in to this site before uploading files.")
        return callback(*args, **kwargs)

    return handler


def login_allowed(auth: Callable[[bottle.BaseRequest], Any]) -> bool:
    try:
        return bool(auth(bottle.request))
    except Exception:
        LOG.exception("UPLOAD_AUTH function %r failed; refusing the request", auth)
        return False


def json_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> bottle.HTTPResponse:
    body = json.dumps({"error": message})
    return bottle.HTTPResponse(
        body, status, {"Content-Type": "application/json", **(headers or {})}
    )


def error_page(error: bottle.HTTPError) -> str:
    """Bottle's own errors (unknown route, wrong method, crash) as JSON too."""
    if error.status_code >= 500:
        LOG.error("unexpected error: %s", error.exception, exc_info=error.exception)
    messages = {404: "Not found.", 405: "Method not allowed.", 500: "Internal error; see the log."}
    bottle.response.content_type = "application/json"
    return json.dumps({"error": messages.get(error.status_code, str(error.body))})


# ---- Entry point -----------------------------------------------------------------------------

EMBEDDED_BUCKET = "uploads"
EMBEDDED_REGION = "us-east-1"


def main(argv: list[str] | None = None) -> int:
    """Read the settings, start the embedded S3 if no bucket is set, and serve until Ctrl-C."""
    arguments().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = Config.from_env(os.environ, Path(".env"))
    except ConfigError as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        if config.bucket is None:
            config = start_embedded_s3(config, stack)
        return serve(config)


def arguments() -> argparse.ArgumentParser:
    lines = [f"  {s.name:<22} {s.help}" + (f" [{s.default}]" * bool(s.default)) for s in SETTINGS]
    return argparse.ArgumentParser(
        description="Direct-to-S3 browser uploads. Settings come from the environment, or from a "
        ".env file (KEY=VALUE lines) in the current folder; the environment wins.",
        epilog="environment variables:\n" + "\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def start_embedded_s3(config: Config, stack: contextlib.ExitStack) -> Config:
    """Start local_s3 with fresh random credentials that only this process ever knows."""
    import local_s3

    credentials = signer.Credentials(
        "LOCAL" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    )
    s3_config = local_s3.S3Config(
        data_dir=config.data_dir / "s3",
        buckets=(EMBEDDED_BUCKET,),
        credentials={credentials.access_key: credentials.secret_key},
        region=EMBEDDED_REGION,
        cors_origins=app_origins(config),
    )
    s3 = stack.enter_context(local_s3.LocalS3(s3_config, host=config.host, port=config.s3_port))
    return replace(
        config,
        credentials=credentials,
        bucket=EMBEDDED_BUCKET,
        region=EMBEDDED_REGION,
        endpoint=f"http://{config.browser_host}:{s3.port}",
        embedded=True,
    )


def app_origins(config: Config) -> tuple[str, ...]:
    """The origins the browser may load the page from: localhost is 127.0.0.1 to people."""
    origins = (config.app_origin,)
    if config.browser_host == "127.0.0.1":
        origins += (f"http://localhost:{config.port}",)
    return origins


def serve(config: Config) -> int:
    import waitress

    app = create_app(config)
    if not (HERE / "node_modules").is_dir():
        LOG.warning("node_modules is missing, so the page has no scripts: run `make run`.")
    try:
        server = waitress.create_server(
            serving.access_log(app) if config.access_log else app,
            host=config.host,
            port=config.port,
            **serving.waitress_options(config.threads, config.trusted_proxy),
        )
    except OSError as error:
        print(f"Cannot listen on {config.host}:{config.port}: {error.strerror}.", file=sys.stderr)
        return 1
    server.channel_class = serving.QuietChannel
    # "Task queue depth is N" is logged for every request queued behind busy threads: under a
    # burst that is every request, and the logging then costs more than the request.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    print(banner(config), flush=True)
    try:
        server.run()  # waitress returns on Ctrl-C, once its workers have finished
    finally:
        server.close()
    print("Stopped.")
    return 0


def banner(config: Config) -> str:
    where = "embedded local S3" if config.embedded else f"bucket {config.bucket}"
    endpoint = config.endpoint or s3_origin(config)
    return f"Upload app: {config.app_origin}/\nS3: {endpoint} ({where})"


if __name__ == "__main__":
    sys.exit(main())
