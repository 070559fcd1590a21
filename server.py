"""Direct-to-S3 browser uploads: a Bottle app that signs, never touches the file bytes.

The browser asks ``GET /s3_credentials`` for a signed POST policy, sends the file straight to
S3 as multipart/form-data, then reports the finished upload to ``POST /uploads``, which checks
it with a signed HEAD request and records it. With no bucket configured, ``main`` starts the
embedded local S3 (the ``local_s3`` package) so everything runs offline.

The file reads in request order: app and routes, page, signing endpoint, upload registration,
errors, entry point. Settings, tokens, filenames, media types, the S3 client, the upload
registry, serving, request checks and the request/response plumbing (web.py) live in the modules
of those names beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import bottle
import jinja2

import file_types
import filenames
import media_types
import parts
import registry
import request_checks
import s3_client
import s3_rules
import serving
import settings
import signer
import tokens
from app_errors import AppError
from rate_limit import RateLimiter
from registry import UploadRegistry
from settings import BasicAuth, Config, ConfigError
from web import NO_STORE, request_header, request_origin, request_query, s3_origin, security_headers

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
        registry=UploadRegistry(config),
        page=templates().get_template("index.html"),
        headers=security_headers(s3_origin(config)),
        hosts=request_checks.allowed_hosts(config),
    )
    app.install(json_errors)
    app.install(refuse_bad_requests)  # before the login: a refused request learns nothing more
    app.install(require_login)  # inside json_errors, so a refusal is JSON too
    app.route("/", "GET", page)
    app.route("/static/<path:path>", "GET", static)
    app.route("/vendor/<name>", "GET", vendor)
    app.route("/s3_credentials", "GET", s3_credentials)
    app.route("/uploads", "POST", register_upload)
    app.route("/uploads", "GET", list_uploads)
    app.route("/uploads/links", "POST", upload_links)
    app.route("/uploads/done", "GET", upload_done)
    app.route("/multipart", "POST", start_multipart)
    app.route("/multipart/urls", "POST", part_urls)
    app.route("/multipart/parts", "POST", stored_parts)
    app.route("/multipart/complete", "POST", complete_multipart)
    app.route("/multipart/abort", "POST", abort_multipart)
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
    hosts: frozenset[str]


@functools.cache
def templates() -> jinja2.Environment:
    """Jinja2 with autoescape on for every template: a filename can never become markup. One
    environment for the process, so each app reuses the compiled page."""
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
    wait = rate_limit_wait(app, moment)  # the page signs forms too: they count like any other
    origin = request_origin(config.public_url)
    uploads, uploads_error = [], None
    if config.auth is not None:  # the list of every upload is for logged-in users only
        try:
            uploads = recent_uploads(app, moment, None)["uploads"]
        except AppError as error:
            uploads_error = error.message
    return app.page.render(
        limits=limits(config),
        page_token=tokens.issue_page_token(app.secrets, moment),
        s3_origin=s3_origin(config),
        upload_method=config.upload_method,
        nojs_forms=[] if wait else nojs_forms(config, app.secrets, moment, origin),
        retry_after=wait,
        uploads=uploads,
        uploads_error=uploads_error,
        list_all=config.auth is not None,
        notice=page_notice(config, request_query(), moment),
        type_name=file_types.type_name,
    )


def limits(config: Config) -> dict[str, Any]:
    return {
        "max_bytes": config.max_bytes,
        "max_human": s3_rules.human_size(config.max_bytes),
        "allowed_types": list(
            media_types.signable_types(config.allowed_types, config.allow_active_types)
        ),
        "allowed_names": file_types.describe(config.allowed_types),
        "type_names": file_types.TYPE_NAMES,
        "policy_ttl": config.policy_ttl,
        "form_ttl": config.form_ttl,
        "auto_start": config.auto_start,
        "multipart_threshold": config.multipart_threshold,
    }


class Notice(NamedTuple):
    text: str
    is_error: bool = False
    url: str = ""


# After a failed no-JavaScript upload, /uploads/done sends the browser to /?error=<status>: a
# code, never text, so a link to the page cannot make it say anything but these sentences.
NOJS_ERRORS = {
    "400": "the file went to a different bucket.",
    "403": "this server did not issue the form it was sent with.",
    "404": "S3 has no such file, or this app may not read it.",
    "409": "the file in S3 is not the one the browser reported.",
    "415": "the file's first bytes are not those of the kind of file its form was for, so it "
    "was deleted.",
    "502": "S3 could not be reached to check it; try again.",
    "503": "the file is in S3 but could not be recorded; try again.",
    "504": "S3 did not answer in time; try again.",
}


def page_notice(config: Config, query: Mapping[str, str], moment: datetime) -> Notice | None:
    """The line shown after the no-JavaScript form's redirect back to the page; the name is
    the one S3 holds for an upload of ours, never text from the query."""
    key = query.get("uploaded", "")
    if key.startswith(config.key_prefix + "/"):
        try:
            info = s3_client.head_object(config, key, moment)
        except s3_client.S3Failure:
            return None
        name = upload_record(key, info, moment)["filename"]
        return Notice(f"Uploaded {name}", url=download_url(config, key, moment.replace(second=0)))
    if query.get("error"):
        reason = NOJS_ERRORS.get(query["error"], "try again.")
        return Notice(f"Upload not recorded: {reason}", is_error=True)
    return None


def nojs_forms(config: Config, keys: tokens.Secrets, moment: datetime, origin: str) -> list:
    return [
        nojs_form(config, keys, moment, origin, k)
        for k in file_types.form_kinds(config.allowed_types)
    ]


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
    redirect = f"{origin}/uploads/done?token={tokens.key_token(keys, key, moment)}"
    form = signer.presigned_post(
        config.credentials,
        **post_target(config, key) | {"expires_in": config.form_ttl},
        content_type=kind.content_type,
        success_action_redirect=redirect,
        content_disposition=media_types.ATTACHMENT,  # no type is pinned: every file downloads
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
    spend_rate_budget(app, moment)
    upload = parse_upload_request(request_query(), app.config)
    if upload.size > s3_rules.MAX_POST_OBJECT_BYTES:
        raise AppError(413, "A file over 5 GB goes to S3 in parts: POST /multipart.")
    key = object_key(
        app.config.key_prefix, moment, uuid.uuid4(), media_types.extension(upload.content_type)
    )
    signed = sign_upload(app.config, key, upload, moment)
    expires_at = moment + timedelta(seconds=app.config.policy_ttl)
    token = tokens.key_token(app.secrets, key, moment)
    return {**signed, "key": key, "expires_at": iso_utc(expires_at), "token": token}


def sign_upload(config: Config, key: str, upload: UploadRequest, moment: datetime) -> dict:
    """UPLOAD_METHOD=post: a signed POST form, {method, url, fields}. put: a presigned PUT URL
    and the headers its signature covers, {method, url, headers, canonical_request,
    string_to_sign}, for providers without browser POST (Cloudflare R2, Backblaze B2)."""
    metadata = {"filename": filenames.encode_metadata(upload.filename)}
    target = {**post_target(config, key), "content_type": upload.content_type, "now": moment}
    disposition = media_types.content_disposition(upload.content_type)
    if config.upload_method == "put":
        put = signer.presigned_put(
            config.credentials,
            **target,
            size=upload.size,
            metadata=metadata,
            content_disposition=disposition,
        )
        return {"method": "PUT", **put}
    return {
        "method": "POST",
        **signer.presigned_post(
            config.credentials, **target, metadata=metadata, content_disposition=disposition
        ),
    }


def spend_rate_budget(app: AppState, moment: datetime) -> None:
    """Each signed upload counts against its client's rate limit, however it is asked for."""
    if wait := rate_limit_wait(app, moment):
        raise AppError(429, "Too many upload requests; wait and try again.", wait=wait)


def refuse_cross_site(keys: tokens.Secrets, moment: datetime) -> None:
    """Only our own page may mint forms: other sites are refused by Fetch metadata, Origin, token.

    The X-Upload-Token header also forces a CORS preflight, which this app never answers.
    Fetch metadata (Sec-Fetch-Site): https://www.w3.org/TR/fetch-metadata/
    """
    if request_header("Sec-Fetch-Site") == "cross-site":
        raise AppError(403, "Cross-site requests may not use this endpoint.")
    origin = request_header("Origin")
    if origin and origin != request_origin(state().config.public_url):
        raise AppError(403, "Requests from other origins may not use this endpoint.")
    if not tokens.page_token_valid(keys, request_header("X-Upload-Token"), moment):
        raise AppError(403, "The X-Upload-Token header is missing or expired; reload the page.")


def rate_limit_wait(app: AppState, moment: datetime) -> int:
    """Seconds before this client may have another signed form (0: now, and it is counted).
    Every signed form counts, the page's no-JavaScript form as much as /s3_credentials'."""
    client = bottle.request.environ.get("REMOTE_ADDR", "")
    return app.limiter.wait(client, moment.timestamp()) if app.limiter else 0


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
    if not media_types.signable(content_type, config.allowed_types, config.allow_active_types):
        raise AppError(415, f"Files of type {content_type} are not accepted here.")
    return UploadRequest(filename, content_type, int(size_text))


def object_key(prefix: str, moment: datetime, unique: uuid.UUID, extension: str) -> str:
    """PREFIX/YYYY/MM/DD/<uuid4><.ext>: the server chooses; the user's filename is never a path.

    Dates here are written from the datetime's fields: strftime costs twice as much.
    """
    return f"{prefix}/{moment.year:04}/{moment.month:02}/{moment.day:02}/{unique}{extension}"


def post_target(config: Config, key: str) -> dict[str, Any]:
    """The arguments every signed upload shares, a form (presigned_post) or a PUT URL.

    content-length-range is [1, UPLOAD_MAX_BYTES] rather than the declared size: the declared
    size is checked here for a quick 413, and S3's EntityTooLarge then means "over the limit",
    which is what the page tells the user. The minimum of 1 refuses empty files (EntityTooSmall).
    A PUT signs the declared size itself, after checking it is in the same range.
    https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html
    """
    return {
        "bucket": config.bucket,
        "key": key,
        "region": config.region,
        "endpoint": config.endpoint,
        "min_bytes": 1,
        "max_bytes": min(config.max_bytes, s3_rules.MAX_POST_OBJECT_BYTES),
        "acl": config.acl,
        "expires_in": config.policy_ttl,
    }


def iso_utc(moment: datetime) -> str:
    """2026-12-02T01:02:03Z."""
    t = moment.astimezone(UTC)
    return f"{t.year:04}-{t.month:02}-{t.day:02}T{t.hour:02}:{t.minute:02}:{t.second:02}Z"


# ---- Upload registration: POST /uploads, GET /uploads, GET /uploads/done ---------------------

MAX_REGISTRATION_BYTES = 4096
MAX_LINKS_REQUEST_BYTES = 32 * 1024  # 50 keys and their tokens, with room to spare
DOWNLOAD_URL_LIFETIME = 3600


def register_upload() -> dict[str, Any]:
    app, moment = state(), now()
    refuse_cross_site(app.secrets, moment)
    key, etag, token = parse_registration(bottle.request)
    record = record_upload(app, key, etag, token, moment)
    bottle.response.status = 201
    return {"upload": record}


def list_uploads() -> dict[str, Any]:
    """A page of the list of every upload, newest first; `next` asks for the following page.
    It hands out links to everyone's files, so only behind UPLOAD_AUTH's login."""
    if state().config.auth is None:
        raise AppError(403, "The list of every upload needs UPLOAD_AUTH; the page shows yours.")
    return recent_uploads(state(), now(), request_query().get("continuation") or None)


def upload_links() -> dict[str, Any]:
    """Fresh download links for the uploads this browser recorded, each proven by its own key
    token: a browser renews the links to its own files and to no one else's."""
    app, moment = state(), now()
    refuse_cross_site(app.secrets, moment)
    body = read_json(bottle.request, MAX_LINKS_REQUEST_BYTES, "a links request")
    entries = body.get("uploads") if isinstance(body, dict) else None
    if not isinstance(entries, list) or len(entries) > registry.RECENT_UPLOADS:
        raise AppError(400, 'The body must be {"uploads": [{"key", "token"}, ...]}.')
    proofs = [(e["key"], e["token"]) for e in entries if is_key_proof(e)]
    mine = [key for key, token in proofs if tokens.key_token_valid(app.secrets, key, token, moment)]
    return {"links": {key: download_url(app.config, key, moment.replace(second=0)) for key in mine}}


def is_key_proof(entry: object) -> bool:
    return isinstance(entry, dict) and all(isinstance(entry.get(n), str) for n in ("key", "token"))


def recent_uploads(app: AppState, moment: datetime, continuation: str | None) -> dict[str, Any]:
    listing = app.registry.recent(moment, continuation=continuation)
    uploads = [with_download_url(app.config, entry, moment) for entry in listing.uploads]
    return {"uploads": uploads, "next": listing.next}


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
        see_other(f"/?error={error.status}")
    see_other("/?uploaded=" + quote(key))


def healthz() -> dict[str, str]:
    return {"status": "ok", "s3": "embedded" if state().config.embedded else "external"}


def parse_registration(request: bottle.BaseRequest) -> tuple[str, str, str]:
    """The JSON body {"key", "etag", "token"}, all strings; anything else is a 400."""
    body = read_json(request, MAX_REGISTRATION_BYTES, "an upload report")
    fields = ("key", "etag", "token")
    if not isinstance(body, dict) or not all(isinstance(body.get(f), str) for f in fields):
        raise AppError(400, "The body must be a JSON object with string key, etag and token.")
    return body["key"], body["etag"], body["token"]


def read_json(request: bottle.BaseRequest, max_bytes: int, what: str) -> Any:
    """A small JSON body (`what` it is, for the errors), or a 4xx saying what is wrong."""
    if request.content_type.split(";")[0].strip() != "application/json":
        raise AppError(400, "The body must be JSON (Content-Type: application/json).")
    if request.content_length > max_bytes:
        raise AppError(413, f"The body is too large for {what}.")
    text = request.body.read(max_bytes)
    if request_checks.json_too_deep(text):
        raise AppError(400, f"The body is nested too deeply for {what}.")
    try:
        return json.loads(text)
    except ValueError:
        raise AppError(400, "The body is not valid JSON.") from None


def record_upload(
    app: AppState, key: str, etag: str, token: str, moment: datetime, *, check_type: bool = False
) -> dict:
    """Trust nothing the browser says: the key must be ours, and S3 must confirm the object."""
    if not tokens.key_token_valid(app.secrets, key, token, moment):
        raise AppError(403, "This key was not issued by this server.")
    info = s3_client.head_object(app.config, key, moment)
    if check_type:
        file_types.keep_only_allowed(app.config, key, info.content_type, moment)
    if not info.etag or normalise_etag(etag) != normalise_etag(info.etag):
        raise AppError(409, "The ETag does not match the object stored in S3.")
    if not 1 <= info.size <= app.config.max_bytes:
        raise AppError(409, "The stored object's size is outside the allowed range.")
    created = registry.upload_time(info.last_modified, moment)
    record = upload_record(key, info, created)
    try:
        app.registry.add(record, created, moment)
    except AppError as error:  # the object is safe in S3; registering again is harmless
        LOG.error("could not record upload %s: %s", key, error.message)
        raise AppError(503, "The file is in S3 but could not be recorded; try again.") from None
    return with_download_url(app.config, record, moment)


def upload_record(key: str, info: s3_client.ObjectInfo, created: datetime) -> dict[str, Any]:
    """What the list shows, from S3's answer: the name as S3 stored it, else the key's last part;
    the time is S3's, so recording the same upload again writes the same record."""
    filename = filenames.clean_filename(
        filenames.decode_metadata(info.metadata.get("filename", ""))
    )
    return {
        "key": key,
        "filename": filename or key.rpartition("/")[2],
        "size": info.size,
        "etag": normalise_etag(info.etag),
        "content_type": info.content_type,
        "created_at": iso_utc(created),
    }


def normalise_etag(etag: str) -> str:
    """S3 sends ETags quoted ("..."), browsers sometimes strip the quotes: compare the inside."""
    return etag.strip().removeprefix("W/").strip('"').lower()


def with_download_url(config: Config, record: Mapping[str, Any], moment: datetime) -> dict:
    """Add a presigned GET URL, so uploads in private buckets can be opened; an entry of the
    list that is broken has no link."""
    if "error" in record:
        return dict(record)
    return {**record, "url": download_url(config, record["key"], moment.replace(second=0))}


@functools.lru_cache(maxsize=4096)
def download_url(config: Config, key: str, signed_at: datetime) -> str:
    """A link valid for an hour from the start of the minute: every list asked for within that
    minute reuses it, instead of presigning 50 links per request."""
    url = signer.object_url(config.bucket, key, config.region, config.endpoint)
    return signer.presign_url(
        config.credentials,
        "GET",
        url,
        config.region,
        expires_in=DOWNLOAD_URL_LIFETIME,
        now=signed_at.replace(microsecond=0),
    )


def see_other(location: str) -> None:
    """A 303 to a path on this site. Relative, unlike bottle.redirect, which builds an absolute
    URL from the Host header: a client-chosen Host must not pick where the browser goes next."""
    raise bottle.HTTPResponse(status=303, headers={"Location": location})


# ---- Large files: POST /multipart, then /multipart/urls|parts|complete|abort (parts.py) -----

MAX_MULTIPART_REQUEST_BYTES = 8 * 1024


def start_multipart() -> dict[str, Any]:
    """The server starts the upload for a key it chooses; the browser then sends the parts."""
    app, moment = state(), now()
    refuse_cross_site(app.secrets, moment)
    spend_rate_budget(app, moment)
    body = read_json(bottle.request, MAX_MULTIPART_REQUEST_BYTES, "a multipart request")
    fields = {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}
    upload = parse_upload_request(fields, app.config)
    key = object_key(
        app.config.key_prefix, moment, uuid.uuid4(), media_types.extension(upload.content_type)
    )
    started = parts.start(app.config, app.secrets, key, upload, moment)
    return {**started, "key_token": tokens.key_token(app.secrets, key, moment)}


def part_urls() -> dict[str, Any]:
    app, moment, upload, body = multipart_request()
    return parts.part_urls(app.config, upload, body.get("parts"), moment)


def stored_parts() -> dict[str, Any]:
    app, moment, upload, _ = multipart_request()
    return parts.stored_parts(app.config, upload, moment)


def complete_multipart() -> dict[str, Any]:
    """Completed by the server from S3's own list of parts, then checked and registered."""
    app, moment, upload, _ = multipart_request()
    etag = parts.complete(app.config, upload, moment)
    key_token = tokens.key_token(app.secrets, upload.key, moment)
    bottle.response.status = 201
    return {"upload": record_upload(app, upload.key, etag, key_token, moment)}


def abort_multipart() -> dict[str, Any]:
    app, moment, upload, _ = multipart_request()
    return parts.abort(app.config, upload, moment)


def multipart_request() -> tuple[AppState, datetime, parts.MultipartUpload, dict[str, Any]]:
    """Our page, and an upload this server started (its token says so)."""
    app, moment = state(), now()
    refuse_cross_site(app.secrets, moment)
    body = read_json(bottle.request, MAX_MULTIPART_REQUEST_BYTES, "a multipart request")
    body = body if isinstance(body, dict) else {}
    upload = parts.proven_upload(app.secrets, body, moment)
    return app, moment, upload, body


# ---- Responses: every answer carries the security headers (web.py builds them) -------------


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


def refuse_bad_requests(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Bottle plugin: a Host not ours, or a body the app never wants, refused from the headers."""

    def handler(*args: Any, **kwargs: Any) -> Any:
        if refusal := request_checks.refusal(bottle.request.environ, state().hosts):
            raise AppError(*refusal)
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
    """Read the settings, start the embedded S3 if no bucket is set, and serve until Ctrl-C
    (or, with `migrate`, copy an old SQLite upload list into the bucket; with `doctor`, check
    the bucket's setup: doctor.py)."""
    args = arguments().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = Config.from_env(os.environ, Path(".env"))
    except ConfigError as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        if config.bucket is None:
            config = start_embedded_s3(config, stack)
        legacy = config.data_dir / registry.LEGACY_DATABASE
        if args.command == "migrate":
            return registry.migrate_command(config, legacy)
        if args.command == "cleanup":
            return cleanup(config)
        if args.command == "doctor":
            import doctor

            origins = app_origins(config)
            return doctor.main(
                config,
                origins,
                post_target,
                sys.stdout,
                method=config.upload_method,
                fix_cors=args.fix_cors,
            )
        if legacy.is_file():
            LOG.warning("%s holds an older upload list: `python server.py migrate`", legacy)
        if not (HERE / "node_modules").is_dir():
            LOG.warning("node_modules is missing, so the page has no scripts: run `make run`.")
        return serving.serve(create_app(config), config, banner(config))


def cleanup(config: Config) -> int:
    """Abort the multipart uploads this app started over a day ago; say how many."""
    try:
        count = parts.cleanup(config, datetime.now(UTC))
    except s3_client.S3Failure as failure:
        print(f"Cleanup stopped: {failure.message}", file=sys.stderr)
        return 1
    print(f"Aborted {count} multipart uploads started over a day ago below {config.key_prefix}/.")
    return 0


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Direct-to-S3 browser uploads. Settings come from the environment, or from a "
        ".env file (KEY=VALUE lines) in the current folder; the environment wins.",
        epilog="environment variables:\n" + "\n".join(settings.help_lines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["cleanup", "doctor", "migrate"],
        help="cleanup: abort multipart uploads older than a day; doctor: check the S3 setup; "
        "migrate: copy an old DATA_DIR/uploads.sqlite3 into the bucket",
    )
    parser.add_argument("--fix-cors", action="store_true", help="doctor: add the CORS rule")
    return parser


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
        abort_multipart_days=1,  # it keeps no multipart parts, as this rule would on S3
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
