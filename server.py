"""Direct-to-S3 browser uploads: a Bottle app that signs, never touches the file bytes.

The browser asks ``GET /s3_credentials`` for a signed POST policy, sends the file straight to
S3 as multipart/form-data, then reports the finished upload to ``POST /uploads``, which checks
it with a signed HEAD request and records it. With no bucket configured, ``main`` starts the
embedded local S3 (the ``local_s3`` package) so everything runs offline.

It reads in request order: app and routes, page, signing endpoint, registration, large files,
errors, entry point. What is not the web app lives in the modules beside it (README: Read the
code)."""

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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bottle
import jinja2

import file_types
import filenames
import media_types
import page_data
import parts
import registry
import request_checks
import s3_client
import s3_rules
import serving
import settings
import signer
import tokens
import web
from app_errors import AppError
from embedded import app_origins, start_embedded_s3
from guards import refuse_bad_requests, require_login
from rate_limit import RateLimiter
from registry import UploadRegistry
from settings import Config, ConfigError

LOG = logging.getLogger("server")
HERE = Path(__file__).resolve().parent
Clock = Callable[[], datetime]


# ---- web.App and routes --------------------------------------------------------------------------


def create_app(config: Config | None = None, *, clock: Clock | None = None) -> bottle.Bottle:
    """The WSGI app for one S3 target (from the environment when `config` is None);
    `clock` returns an aware UTC datetime."""
    config = config or Config.from_env(os.environ, Path(".env"))
    if config.credentials is None or config.bucket is None:
        raise ConfigError("create_app needs a bucket and credentials; main() provides them.")
    app = web.App()
    app.state = AppState(
        config=config,
        clock=clock or (lambda: datetime.now(UTC)),
        secrets=tokens.Secrets.derive(config.credentials.secret_key),
        limiter=RateLimiter(config.rate_limit) if config.rate_limit else None,
        registry=UploadRegistry(config),
        page=templates().get_template("index.html"),
        headers=web.security_headers(web.s3_origin(config)),
        hosts=request_checks.allowed_hosts(config),
    )
    app.install(json_errors)
    app.install(refuse_bad_requests)  # before the login: a refused request learns nothing more
    app.install(require_login)  # inside json_errors, so a refusal is JSON too
    app.route("/", "GET", page)
    app.route("/static/<path:path>", "GET", web.static)
    app.route("/vendor/<name>", "GET", web.vendor)
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
    """Autoescape on for every template, so a filename never becomes markup; built once."""
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


def page() -> str:
    app, moment, config = state(), now(), state().config
    wait = rate_limit_wait(app, moment)  # the page signs forms too: they count like any other
    origin = web.request_origin(config.public_url)
    uploads, uploads_error = [], None
    if config.auth is not None:  # the list of every upload is for logged-in users only
        try:
            uploads = recent_uploads(app, moment, None)["uploads"]
        except AppError as error:
            uploads_error = error.message
    return app.page.render(
        limits=page_data.limits(config),
        page_token=tokens.issue_page_token(app.secrets, moment),
        s3_origin=web.s3_origin(config),
        upload_method=config.upload_method,
        nojs_forms=[] if wait else nojs_forms(config, app.secrets, moment, origin),
        retry_after=wait,
        uploads=uploads,
        uploads_error=uploads_error,
        list_all=config.auth is not None,
        notice=page_data.notice(config, web.request_query(), moment),
        type_name=file_types.type_name,
    )


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


# ---- Signing endpoint: GET /s3_credentials ---------------------------------------------------

SIZE = re.compile(r"[0-9]{1,15}")


def s3_credentials() -> dict[str, Any]:
    """A signed form for one file. Other sites are refused before they spend any rate budget."""
    app, moment = state(), now()
    refuse_cross_site(app.secrets, moment)
    spend_rate_budget(app, moment)
    upload = parse_upload_request(web.request_query(), app.config)
    if upload.size > s3_rules.MAX_POST_OBJECT_BYTES:
        raise AppError(413, "A file over 5 GB goes to S3 in parts: POST /multipart.")
    key = new_key(app.config, upload, moment)
    signed = sign_upload(app.config, key, upload, moment)
    expires_at = moment + timedelta(seconds=app.config.policy_ttl)
    token = tokens.key_token(app.secrets, key, moment)
    return {**signed, "key": key, "expires_at": registry.iso_utc(expires_at), "token": token}


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
    if web.request_header("Sec-Fetch-Site") == "cross-site":
        raise AppError(403, "Cross-site requests may not use this endpoint.")
    origin = web.request_header("Origin")
    if origin and origin != web.request_origin(state().config.public_url):
        raise AppError(403, "Requests from other origins may not use this endpoint.")
    if not tokens.page_token_valid(keys, web.request_header("X-Upload-Token"), moment):
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


def new_key(config: Config, upload: UploadRequest, moment: datetime) -> str:
    """A fresh key for an upload; its extension comes from the declared, allowed type."""
    extension = media_types.extension(upload.content_type)
    return object_key(config.key_prefix, moment, uuid.uuid4(), extension)


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


# ---- Upload registration: POST /uploads, GET /uploads, GET /uploads/done ---------------------

MAX_REGISTRATION_BYTES = 4096
MAX_LINKS_REQUEST_BYTES = 32 * 1024  # 50 keys and their tokens, with room to spare


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
    return recent_uploads(state(), now(), web.request_query().get("continuation") or None)


def upload_links() -> dict[str, Any]:
    """Fresh download links for the uploads this browser recorded, each proven by its own key
    token: a browser renews the links to its own files and to no one else's."""
    app, moment = state(), now()
    refuse_cross_site(app.secrets, moment)
    body = request_checks.read_json(bottle.request, MAX_LINKS_REQUEST_BYTES, "a links request")
    entries = body.get("uploads") if isinstance(body, dict) else None
    if not isinstance(entries, list) or len(entries) > registry.RECENT_UPLOADS:
        raise AppError(400, 'The body must be {"uploads": [{"key", "token"}, ...]}.')
    proofs = [(e["key"], e["token"]) for e in entries if is_key_proof(e)]
    mine = [key for key, token in proofs if tokens.key_token_valid(app.secrets, key, token, moment)]
    return {"links": {key: registry.download_url(app.config, key, moment) for key in mine}}


def is_key_proof(entry: object) -> bool:
    return isinstance(entry, dict) and all(isinstance(entry.get(n), str) for n in ("key", "token"))


def recent_uploads(app: AppState, moment: datetime, continuation: str | None) -> dict[str, Any]:
    listing = app.registry.recent(moment, continuation=continuation)
    uploads = [registry.with_download_url(app.config, entry, moment) for entry in listing.uploads]
    return {"uploads": uploads, "next": listing.next}


def upload_done() -> None:
    """Where S3 sends a no-JavaScript browser after its upload (success_action_redirect).

    This is a top-level navigation from S3's origin, so there is no page token; the key token in
    the URL is the proof, and registering a real, issued object is harmless to replay.
    """
    app, moment, query = state(), now(), web.request_query()
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
    body = request_checks.read_json(request, MAX_REGISTRATION_BYTES, "an upload report")
    fields = ("key", "etag", "token")
    if not isinstance(body, dict) or not all(isinstance(body.get(f), str) for f in fields):
        raise AppError(400, "The body must be a JSON object with string key, etag and token.")
    return body["key"], body["etag"], body["token"]


def record_upload(
    app: AppState, key: str, etag: str, token: str, moment: datetime, *, check_type: bool = False
) -> dict:
    """Trust nothing the browser says: the key must be ours, and S3 must confirm the object."""
    if not tokens.key_token_valid(app.secrets, key, token, moment):
        raise AppError(403, "This key was not issued by this server.")
    info = s3_client.head_object(app.config, key, moment)
    if check_type:
        file_types.keep_only_allowed(app.config, key, info.content_type, moment)
    if not info.etag or registry.normalise_etag(etag) != registry.normalise_etag(info.etag):
        raise AppError(409, "The ETag does not match the object stored in S3.")
    if not 1 <= info.size <= app.config.max_bytes:
        raise AppError(409, "The stored object's size is outside the allowed range.")
    created = registry.upload_time(info.last_modified, moment)
    record = registry.upload_record(key, info, created)
    try:
        app.registry.add(record, created, moment)
    except AppError as error:  # the object is safe in S3; registering again is harmless
        LOG.error("could not record upload %s: %s", key, error.message)
        raise AppError(503, "The file is in S3 but could not be recorded; try again.") from None
    return registry.with_download_url(app.config, record, moment)


def see_other(location: str) -> None:
    """A 303 to a path on this site. Relative, unlike bottle.redirect, which builds an absolute
    URL from the Host header: a client-chosen Host must not pick where the browser goes next."""
    raise bottle.HTTPResponse(status=303, headers={"Location": location})


# ---- Large files: POST /multipart, then /multipart/urls|parts|complete|abort (parts.py) -----

MULTIPART_REQUEST = (8 * 1024, "a multipart request")  # the largest body, and what it is


def start_multipart() -> dict[str, Any]:
    """The server starts the upload for a key it chooses; the browser then sends the parts."""
    app, moment = state(), now()
    refuse_cross_site(app.secrets, moment)
    spend_rate_budget(app, moment)
    body = request_checks.read_json(bottle.request, *MULTIPART_REQUEST)
    fields = {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}
    upload = parse_upload_request(fields, app.config)
    key = new_key(app.config, upload, moment)
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
    body = request_checks.read_json(bottle.request, *MULTIPART_REQUEST)
    body = body if isinstance(body, dict) else {}
    upload = parts.proven_upload(app.secrets, body, moment)
    return app, moment, upload, body


# ---- Errors: always JSON {"error": "..."} with the right status, never a bare 500 ------------


def json_errors(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Bottle plugin: turn an AppError raised by a handler into its JSON response."""

    def handler(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except AppError as error:
            headers = {"Retry-After": str(error.wait)} if error.wait else {}
            return web.json_response(error.status, error.message, headers)

    return handler


def error_page(error: bottle.HTTPError) -> str:
    """Bottle's own errors (unknown route, wrong method, crash) as JSON too."""
    if error.status_code >= 500:
        LOG.error("unexpected error: %s", error.exception, exc_info=error.exception)
    messages = {404: "Not found.", 405: "Method not allowed.", 500: "Internal error; see the log."}
    bottle.response.content_type = "application/json"
    return json.dumps({"error": messages.get(error.status_code, str(error.body))})


# ---- Entry point -----------------------------------------------------------------------------


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
            return parts.cleanup_command(config)
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


def banner(config: Config) -> str:
    where = "embedded local S3" if config.embedded else f"bucket {config.bucket}"
    endpoint = config.endpoint or web.s3_origin(config)
    return f"Upload app: {config.app_origin}/\nS3: {endpoint} ({where})"


if __name__ == "__main__":
    sys.exit(main())
