"""Direct-to-S3 browser uploads: a Bottle app that signs, never touches the file bytes.

The browser asks ``GET /s3_credentials`` for a signed POST policy, sends the file straight to
S3 as multipart/form-data, then reports the finished upload to ``POST /uploads``, which checks
it with a signed HEAD request and records it. With no bucket configured, ``main`` starts the
embedded local S3 (the ``local_s3`` package) so everything runs offline.

The file reads in request order: app and routes, page, signing endpoint, upload registration,
errors, entry point. Settings, tokens, filenames, the S3 client, the upload registry and
serving live in the modules of those names beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, urlsplit

import bottle
import jinja2

import file_types
import filenames
import s3_client
import s3_rules
import serving
import settings
import signer
import tokens
from rate_limit import RateLimiter
from registry import RegistryError, UploadRegistry
from settings import BasicAuth, Config, ConfigError

LOG = logging.getLogger("server")
HERE = Path(__file__).resolve().parent
Clock = Callable[[], datetime]


# ---- App and routes --------------------------------------------------------------------------


def create_app(config: Config | None = None, *, clock: Clock | None = None) -> bottle.Bottle:
    """The WSGI app for one S3 target (from the environment when `config` is None);
    `clock` returns an aware UTC datetime."""
    config = config or Config.from_env(os.environ, Path(".env"))
    if config.credentials is None or config.bucket is None:
        raise ConfigError("create_app needs a bucket and credentials; main() provides them.")
    app = App()
    app.state = AppState(
        config=config,
        clock=clock or (lambda: datetime.now(UTC)),
        secrets=tokens.Secrets.derive(config.credentials.secret_key),
        limiter=RateLimiter(config.rate_limit) if config.rate_limit else None,
        registry=UploadRegistry.create(config.data_dir / "uploads.sqlite3"),
        page=templates().get_template("index.html"),
        headers=security_headers(s3_origin(config)),
    )
    app.install(json_errors)
    app.install(require_login)  # inside json_errors, so a refusal is JSON too
    app.route("/", "GET", page)
    app.route("/static/<path:path>", "GET", static)
    app.route("/vendor/<name>", "GET", vendor)
    app.route("/s3_credentials", "GET", s3_credentials)
    app.route("/uploads", "POST", register_upload)
    app.route("/uploads", "GET", list_uploads)
    app.route("/uploads/done", "GET", upload_done)
    app.route("/healthz", "GET", healthz)
    app.default_error_handler = error_page
    return app


@dataclass(frozen=True)
class AppState:
    """What the request handlers share; it hangs off the Bottle app, never a module global."""

    config: Config
    clock: Clock
    secrets: tokens.Secrets
    limiter: RateLimiter | None
    registry: UploadRegistry
    page: jinja2.Template
    headers: tuple[tuple[str, str], ...]


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


# ---- Page: GET / -----------------------------------------------------------------------------

VENDOR_FILES = {
    "jquery.js": "jquery/dist/jquery.min.js",
    "jquery.ui.widget.js": "blueimp-file-upload/js/vendor/jquery.ui.widget.js",
    "jquery.iframe-transport.js": "blueimp-file-upload/js/jquery.iframe-transport.js",
    "jquery.fileupload.js": "blueimp-file-upload/js/jquery.fileupload.js",
}


def page() -> str:
    app, moment = state(), now()
    config = app.config
    kinds = file_types.form_kinds(config.allowed_types)
    return app.page.render(
        limits=limits(config),
        page_token=tokens.issue_page_token(app.secrets, moment),
        s3_origin=s3_origin(config),
        nojs_forms=[nojs_form(config, app.secrets, moment, request_origin(), k) for k in kinds],
        uploads=[with_download_url(config, record, moment) for record in app.registry.recent()],
        notice=page_notice(app.registry, request_query()),
        type_name=file_types.type_name,
    )


def limits(config: Config) -> dict[str, Any]:
    return {
        "max_bytes": config.max_bytes,
        "max_human": s3_rules.human_size(config.max_bytes),
        "allowed_types": list(config.allowed_types),
        "allowed_names": file_types.describe(config.allowed_types),
        "type_names": file_types.TYPE_NAMES,
        "policy_ttl": config.policy_ttl,
        "form_ttl": config.form_ttl,
        "auto_start": config.auto_start,
    }


class Notice(NamedTuple):
    text: str
    is_error: bool = False


def page_notice(registry: UploadRegistry, query: Mapping[str, str]) -> Notice | None:
    """The line shown after the no-JavaScript form's redirect back to the page."""
    if query.get("uploaded"):
        record = registry.get(query["uploaded"])
        return Notice(f"Uploaded {record['filename']}") if record else None
    if query.get("error"):
        return Notice("Upload not recorded: " + query["error"][:200], is_error=True)
    return None


def nojs_form(
    config: Config, keys: tokens.Secrets, moment: datetime, origin: str, kind: file_types.FormKind
) -> dict:
    """A ready signed form for browsers without JavaScript, one per kind of file.

    The key is chosen before the user picks a file, so it has no extension, and S3 takes the
    object's type from the form's Content-Type field only: the policy pins the kind's type, or
    its family's prefix for the type the person picks (checked at /uploads/done). The name
    reaches S3's metadata through S3's `${filename}` variable, filled in from the file part.
    S3 then redirects the browser to /uploads/done with bucket, key and etag appended.
    https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html
    """
    key = object_key(config.key_prefix, moment, uuid.uuid4(), extension="")
    redirect = f"{origin}/uploads/done?token={tokens.key_token(keys, key)}"
    form = signer.presigned_post(
        config.credentials,
        **post_target(config, key) | {"expires_in": config.form_ttl},
        content_type=kind.content_type,
        success_action_redirect=redirect,
        metadata={"filename": signer.FILENAME_VARIABLE},
        now=moment,
    )
    return {**form, "kind": kind}


def static(path: str) -> bottle.HTTPResponse:
    return bottle.static_file(path, root=HERE / "public")


def vendor(name: str) -> bottle.HTTPResponse:
    """Only the listed browser libraries, from node_modules: never an arbitrary path."""
    if name not in VENDOR_FILES:
        raise AppError(404, f"There is no vendor file named {name!r}.")
    return bottle.static_file(VENDOR_FILES[name], root=HERE / "node_modules")


# ---- Signing endpoint: GET /s3_credentials ---------------------------------------------------

SIZE = re.compile(r"[0-9]{1,15}")


def s3_credentials() -> dict[str, Any]:
    """A signed form for one file. Other sites are refused before they spend any rate budget."""
    app, moment = state(), now()
    refuse_cross_site(app.secrets, moment)
    if app.limiter:
        client = bottle.request.environ.get("REMOTE_ADDR", "")
        if wait := app.limiter.wait(client, moment.timestamp()):
            raise AppError(429, "Too many upload requests; wait and try again.", wait=wait)
    upload = parse_upload_request(request_query(), app.config)
    extension = filenames.extension(upload.filename)
    key = object_key(app.config.key_prefix, moment, uuid.uuid4(), extension)
    form = signer.presigned_post(
        app.config.credentials,
        **post_target(app.config, key),
        content_type=upload.content_type,
        metadata={"filename": filenames.encode_metadata(upload.filename)},
        success_action_status="201",
        now=moment,
    )
    expires_at = moment + timedelta(seconds=app.config.policy_ttl)
    token = tokens.key_token(app.secrets, key)
    return {**form, "key": key, "expires_at": iso_utc(expires_at), "token": token}


def refuse_cross_site(keys: tokens.Secrets, moment: datetime) -> None:
    """Only our own page may mint forms: other sites are refused by Fetch metadata, Origin, token.

    The X-Upload-Token header also forces a CORS preflight, which this app never answers.
    Fetch metadata (Sec-Fetch-Site): https://www.w3.org/TR/fetch-metadata/
    """
    if request_header("Sec-Fetch-Site") == "cross-site":
        raise AppError(403, "Cross-site requests may not use this endpoint.")
    origin = request_header("Origin")
    if origin and origin != request_origin():
        raise AppError(403, "Requests from other origins may not use this endpoint.")
    if not tokens.page_token_valid(keys, request_header("X-Upload-Token"), moment):
        raise AppError(403, "The X-Upload-Token header is missing or expired; reload the page.")


@dataclass(frozen=True)
class UploadRequest:
    """A validated request for a signed form."""

    filename: str
    content_type: str
    size: int


def parse_upload_request(query: Mapping[str, str], config: Config) -> UploadRequest:
    """Check filename, content_type and size: 400 malformed, 413 too big, 415 type refused."""
    filename = filenames.clean_filename(query.get("filename", ""))
    content_type = query.get("content_type", "").strip().lower()
    size_text = query.get("size", "").strip()
    if not filename:
        raise AppError(400, "The filename parameter is missing or empty.")
    if not settings.MIME_TYPE.fullmatch(content_type):
        raise AppError(400, "The content_type parameter must be a MIME type like image/png.")
    if not SIZE.fullmatch(size_text) or int(size_text) < 1:
        raise AppError(400, "The size parameter must be a whole number of bytes, at least 1.")
    if int(size_text) > config.max_bytes:
        limit = s3_rules.human_size(config.max_bytes)
        raise AppError(413, f"The file is larger than the {limit} limit.")
    if not type_allowed(content_type, config.allowed_types):
        raise AppError(415, f"Files of type {content_type} are not accepted here.")
    return UploadRequest(filename, content_type, int(size_text))


def type_allowed(content_type: str, patterns: Iterable[str]) -> bool:
    """Exact types, or a whole family with "image/*"."""
    family = content_type.split("/")[0] + "/*"
    return any(pattern in (content_type, family) for pattern in patterns)


def object_key(prefix: str, moment: datetime, unique: uuid.UUID, extension: str) -> str:
    """PREFIX/YYYY/MM/DD/<uuid4><.ext>: the server chooses; the user's filename is never a path.

    Dates here are written from the datetime's fields: strftime costs twice as much.
    """
    return f"{prefix}/{moment.year:04}/{moment.month:02}/{moment.day:02}/{unique}{extension}"


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


def iso_utc(moment: datetime) -> str:
    """2026-12-02T01:02:03Z."""
    t = moment.astimezone(UTC)
    return f"{t.year:04}-{t.month:02}-{t.day:02}T{t.hour:02}:{t.minute:02}:{t.second:02}Z"


# ---- Upload registration: POST /uploads, GET /uploads, GET /uploads/done ---------------------

MAX_REGISTRATION_BYTES = 4096
DOWNLOAD_URL_LIFETIME = 3600


def register_upload() -> dict[str, Any]:
    app, moment = state(), now()
    refuse_cross_site(app.secrets, moment)
    key, etag, token = parse_registration(bottle.request)
    record = record_upload(app, key, etag, token, moment)
    bottle.response.status = 201
    return {"upload": record}


def list_uploads() -> dict[str, Any]:
    app, moment = state(), now()
    return {"uploads": [with_download_url(app.config, r, moment) for r in app.registry.recent()]}


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
        record_upload(app, key, etag, token, moment, check_type=True)
    except AppError as error:
        see_other("/?error=" + quote(error.message))
    see_other("/?uploaded=" + quote(key))


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


def record_upload(
    app: AppState, key: str, etag: str, token: str, moment: datetime, *, check_type: bool = False
) -> dict:
    """Trust nothing the browser says: the key must be ours, and S3 must confirm the object."""
    if not tokens.key_token_valid(app.secrets, key, token):
        raise AppError(403, "This key was not issued by this server.")
    try:
        info = s3_client.head_object(app.config, key, moment)
        if check_type:
            file_types.keep_only_allowed(app.config, key, info.content_type, moment)
    except s3_client.S3Failure as failure:
        raise AppError(failure.status, failure.message) from None
    if not info.etag or normalise_etag(etag) != normalise_etag(info.etag):
        raise AppError(409, "The ETag does not match the object stored in S3.")
    if not 1 <= info.size <= app.config.max_bytes:
        raise AppError(409, "The stored object's size is outside the allowed range.")
    record = upload_record(key, info, moment)
    try:
        app.registry.add(record)
    except RegistryError as error:  # a full disk or a locked database: the object is safe in S3
        LOG.error("could not record upload %s: %s", key, error)
        raise AppError(503, "The file is in S3 but could not be recorded; try again.") from None
    return with_download_url(app.config, record, moment)


def upload_record(key: str, info: s3_client.ObjectInfo, moment: datetime) -> dict[str, Any]:
    """What the list shows, from S3's answer: the name as S3 stored it, else the key's last part."""
    filename = filenames.clean_filename(
        filenames.decode_metadata(info.metadata.get("filename", ""))
    )
    return {
        "key": key,
        "filename": filename or key.rpartition("/")[2],
        "size": info.size,
        "etag": normalise_etag(info.etag),
        "content_type": info.content_type,
        "created_at": iso_utc(moment),
    }


def normalise_etag(etag: str) -> str:
    """S3 sends ETags quoted ("..."), browsers sometimes strip the quotes: compare the inside."""
    return etag.strip().removeprefix("W/").strip('"').lower()


def with_download_url(config: Config, record: Mapping[str, Any], moment: datetime) -> dict:
    """Add a presigned GET URL (1 hour), so uploads in private buckets can be opened."""
    url = signer.object_url(config.bucket, record["key"], config.region, config.endpoint)
    download = signer.presign_url(
        config.credentials, "GET", url, config.region, expires_in=DOWNLOAD_URL_LIFETIME, now=moment
    )
    return {**record, "url": download}


def see_other(location: str) -> None:
    """A 303 to a path on this site. Relative, unlike bottle.redirect, which builds an absolute
    URL from the Host header: a client-chosen Host must not pick where the browser goes next."""
    raise bottle.HTTPResponse(status=303, headers={"Location": location})


# ---- Requests and responses: what every handler reads and every answer carries --------------


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

    state: AppState

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        extra = self.state.headers
        if not environ.get("PATH_INFO", "").startswith(("/static/", "/vendor/")):
            extra += NO_STORE  # pages and answers carry signed, expiring forms

        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            return start_response(status, [*headers, *extra], exc_info)

        return super().wsgi(environ, start)


# ---- Errors: always JSON {"error": "..."} with the right status, never a bare 500 ------------


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
        if not (HERE / "node_modules").is_dir():
            LOG.warning("node_modules is missing, so the page has no scripts: run `make run`.")
        return serving.serve(create_app(config), config, banner(config))


def arguments() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        description="Direct-to-S3 browser uploads. Settings come from the environment, or from a "
        ".env file (KEY=VALUE lines) in the current folder; the environment wins.",
        epilog="environment variables:\n" + "\n".join(settings.help_lines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def start_embedded_s3(config: Config, stack: contextlib.ExitStack) -> Config:
    """Start local_s3 with fresh random credentials that only this process ever knows."""
    import local_s3

    credentials = signer.Credentials(*local_s3.new_credentials())
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


def banner(config: Config) -> str:
    where = "embedded local S3" if config.embedded else f"bucket {config.bucket}"
    endpoint = config.endpoint or s3_origin(config)
    return f"Upload app: {config.app_origin}/\nS3: {endpoint} ({where})"


if __name__ == "__main__":
    sys.exit(main())
