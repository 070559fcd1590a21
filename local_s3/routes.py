"""Step 4: the answers. The local S3 as a WSGI app (create_app): each route takes a request
through the steps in S3's order and answers as S3 does, errors as S3's XML.
https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html
"""

from __future__ import annotations

import base64
import errno
import functools
import hashlib
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import bottle

import signer
from local_s3.config import S3Config
from local_s3.cors import (
    MAX_CORS_XML_BYTES,
    CorsRule,
    cors_configuration_xml,
    cors_headers,
    matching_rule,
    parse_cors_configuration,
    preflight,
    startup_rules,
)
from local_s3.errors import S3Error, error_xml, xml_document
from local_s3.form import (
    FileSink,
    PostForm,
    body_chunks,
    check_content_md5,
    checked_content_md5,
    read_post_form,
)
from local_s3.listing import list_bucket_result, list_page, parse_list_request
from local_s3.objects import (
    ANONYMOUS_READ_ACLS,
    checked_key,
    object_attributes,
    object_headers,
    put_fields,
)
from local_s3.policy import expand_filename, verify_post_form
from local_s3.sigv4 import authenticate, check_payload_hash
from local_s3.storage import ObjectStore, StoredObject, Upload

LOG = logging.getLogger("local_s3")
XML_CONTENT_TYPE = {"Content-Type": "application/xml"}


def create_app(config: S3Config, clock: Callable[[], datetime] | None = None) -> bottle.Bottle:
    """The local S3 as a WSGI app: POST Object, GET/HEAD/PUT Object, CORS, S3 errors.

    `clock` (default: config.clock) is read once per request, so tests can freeze time.
    """
    routes = S3Routes(config, clock or config.clock)
    s3 = s3_response(routes)
    app = bottle.Bottle()
    for path, method, handler in [
        ("/<bucket>", "POST", routes.post_object),
        ("/<bucket>/", "POST", routes.post_object),
        ("/<bucket>/<key:path>", ["GET", "HEAD"], routes.get_object),
        ("/<bucket>/<key:path>", "PUT", routes.put_object),
        ("/<bucket>/<key:path>", "DELETE", routes.delete_object),
        ("/<bucket>", "OPTIONS", routes.cors_preflight),
        ("/<bucket>/", "OPTIONS", routes.cors_preflight),
        ("/<bucket>/<key:path>", "OPTIONS", routes.cors_preflight),
        ("/<bucket>", "GET", routes.bucket_get),
        ("/<bucket>/", "GET", routes.bucket_get),
        ("/<bucket>", ["PUT", "DELETE"], routes.bucket_cors),
        ("/<bucket>/", ["PUT", "DELETE"], routes.bucket_cors),
        ("/", "ANY", routes.not_supported),
        ("/<bucket>", "ANY", routes.not_supported),
        ("/<bucket>/", "ANY", routes.not_supported),
        ("/<bucket>/<key:path>", "ANY", routes.not_supported),
    ]:
        app.route(path, method, s3(handler))
    return app


class S3Routes:
    """The route handlers, bound to one configuration, one store and one clock."""

    def __init__(self, config: S3Config, clock: Callable[[], datetime]) -> None:
        self.config, self.clock = config, clock
        self.store = ObjectStore(config.data_dir)

    def post_object(self, bucket: str) -> bottle.HTTPResponse:
        """POST Object: stream the form, verify it when the file begins, store atomically."""
        now = self.clock()
        self.require_bucket(bucket)
        content_length(bottle.request.environ)
        with self.store.upload() as upload:
            post = PostObject(self.config, bucket, now, upload)
            read_post_form(bottle.request.environ, PostForm(post.on_file))
            stored = self.store.commit(upload, post.record())
        return post_success(post.fields, stored, object_location(bottle.request, stored))

    def get_object(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """GET/HEAD Object. Unsigned reads see only public-read objects and, like S3 without
        list permission, cannot tell a missing key from a private one."""
        now = self.clock()
        self.require_bucket(bucket)
        signed = authenticate(bottle.request.environ, self.config, now)
        check_payload_hash(signed, signer.EMPTY_SHA256)  # a GET or HEAD has no body
        opened = self.store.open(bucket, key)
        if opened is None:
            raise S3Error("NoSuchKey", Key=key) if signed else S3Error("AccessDenied")
        stored, body = opened
        if not signed and stored.acl not in ANONYMOUS_READ_ACLS:
            body.close()
            raise S3Error("AccessDenied")
        return bottle.HTTPResponse(body, 200, object_headers(stored))

    def put_object(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """PUT Object with a presigned URL or a signed request; the body streams like a POST's."""
        now = self.clock()
        self.require_bucket(bucket)
        environ = bottle.request.environ
        signed = authenticate(environ, self.config, now)
        if signed is None:
            raise S3Error("AccessDenied")
        fields = put_fields(environ, checked_key(key))
        attributes = object_attributes(fields)
        content_md5 = checked_content_md5(fields.get("content-md5"))
        with self.store.upload() as upload:
            check_payload_hash(signed, receive_put_body(environ, upload, self.config))
            check_content_md5(upload, content_md5)
            record = {"bucket": bucket, "key": key, "last_modified": now.isoformat()}
            stored = self.store.commit(upload, {**record, **attributes})
        return bottle.HTTPResponse(status=200, headers={"ETag": stored.etag})

    def delete_object(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """DeleteObject, signed only: 204, whether or not the key existed (an unversioned
        bucket). https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObject.html"""
        self.require_bucket(bucket)
        signed = authenticate(bottle.request.environ, self.config, self.clock())
        if signed is None:
            raise S3Error("AccessDenied")
        check_payload_hash(signed, signer.EMPTY_SHA256)
        self.store.delete(bucket, key)
        return bottle.HTTPResponse(status=204)

    def cors_preflight(self, bucket: str, key: str = "") -> bottle.HTTPResponse:
        self.require_bucket(bucket)
        return preflight(bottle.request.environ, self.cors_rules(bucket))

    def bucket_get(self, bucket: str) -> bottle.HTTPResponse:
        """GET /BUCKET?cors (GetBucketCors), or ?list-type=2 (ListObjectsV2)."""
        if bottle.request.query.get("list-type") == "2" and "cors" not in bottle.request.query:
            return self.list_objects_v2(bucket)
        return self.bucket_cors(bucket)

    def list_objects_v2(self, bucket: str) -> bottle.HTTPResponse:
        """ListObjectsV2, signed requests only: S3 lists a bucket to its owner's grants alone."""
        now = self.clock()
        self.require_bucket(bucket)
        signed = authenticate(bottle.request.environ, self.config, now)
        if signed is None:
            raise S3Error("AccessDenied")
        check_payload_hash(signed, signer.EMPTY_SHA256)
        query = parse_qsl(bottle.request.query_string, keep_blank_values=True)
        request = parse_list_request(dict(query))
        objects = {o.key: o for o in self.store.records() if o.bucket == bucket}
        page = list_page(sorted(objects), request)
        body = list_bucket_result(bucket, request, page, objects)
        return bottle.HTTPResponse(body, 200, XML_CONTENT_TYPE)

    def bucket_cors(self, bucket: str) -> bottle.HTTPResponse:
        """GET, PUT and DELETE /BUCKET?cors, signed requests only, as on S3."""
        now = self.clock()
        self.require_bucket(bucket)
        environ, method = bottle.request.environ, bottle.request.method
        if "cors" not in bottle.request.query:
            raise S3Error("MethodNotAllowed", Method=method, ResourceType="BUCKET")
        if authenticate(environ, self.config, now) is None:
            raise S3Error("AccessDenied")
        if method == "PUT":
            self.store.set_cors_rules(bucket, parse_cors_configuration(cors_body(environ)))
            return bottle.HTTPResponse(status=200)
        if method == "DELETE":
            self.store.set_cors_rules(bucket, None)
            return bottle.HTTPResponse(status=204)
        rules = self.cors_rules(bucket)
        if not rules:
            raise S3Error("NoSuchCORSConfiguration", BucketName=bucket)
        return bottle.HTTPResponse(cors_configuration_xml(rules), 200, XML_CONTENT_TYPE)

    def not_supported(self, bucket: str = "", key: str = "") -> bottle.HTTPResponse:
        if bucket:
            self.require_bucket(bucket)
        resource = "OBJECT" if key else "BUCKET" if bucket else "SERVICE"
        raise S3Error("MethodNotAllowed", Method=bottle.request.method, ResourceType=resource)

    def require_bucket(self, bucket: str) -> None:
        if bucket not in self.config.buckets:
            raise S3Error("NoSuchBucket", BucketName=bucket)

    def cors_rules(self, bucket: str) -> tuple[CorsRule, ...]:
        """The bucket's rules set with PUT ?cors, else the ones configured at start."""
        stored = self.store.cors_rules(bucket) if bucket in self.config.buckets else None
        return startup_rules(self.config) if stored is None else stored


# --- every answer: S3's XML errors, CORS headers, a request id ---


def s3_response(routes: S3Routes) -> Callable:
    """Wraps a route: S3 errors become S3's XML, anything else is a bug, logged and answered
    with InternalError. Every response gets the bucket's CORS headers and a request id."""

    def decorate(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def wrapper(*args: object, **kwargs: object) -> bottle.HTTPResponse:
            request_id = secrets.token_hex(8).upper()
            try:
                response = handler(*args, **kwargs)
            except S3Error as error:
                response = error_response(error, request_id)
            except Exception as error:
                log_failure(error)
                response = error_response(S3Error("InternalError"), request_id)
            origin = bottle.request.get_header("Origin")
            rules = routes.cors_rules(str(kwargs.get("bucket", "")))
            rule = matching_rule(rules, origin, bottle.request.method)
            response.headers.update(cors_headers(rule, origin))
            response.set_header("x-amz-request-id", request_id)
            return response

        return wrapper

    return decorate


def log_failure(error: Exception) -> None:
    """A full disk is the operator's to fix, not a bug: one clear line instead of a traceback."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        LOG.error("no space left to store uploads: %s", error.strerror)
    else:
        LOG.exception("local S3 bug on %s %s", bottle.request.method, bottle.request.path)


def error_response(error: S3Error, request_id: str) -> bottle.HTTPResponse:
    host_id = base64.b64encode(secrets.token_bytes(24)).decode()
    body = error_xml(error, request_id, host_id)
    return bottle.HTTPResponse(body, error.status, {**XML_CONTENT_TYPE, "x-amz-id-2": host_id})


# --- POST Object: from the file's first byte to S3's success answer ---


@dataclass
class PostObject:
    """One POST Object request, from its first form field to the stored object."""

    config: S3Config
    bucket: str
    now: datetime
    upload: Upload
    fields: dict[str, str] = field(default_factory=dict)

    def on_file(self, fields: dict[str, str], filename: str | None) -> FileSink:
        self.fields = expand_filename(fields, filename)
        policy = verify_post_form(self.fields, self.bucket, self.config, self.now)
        checked_key(self.fields["key"])
        object_attributes(self.fields)
        content_md5 = checked_content_md5(self.fields.get("content-md5"))
        low, high = policy.size_range(self.config.max_body_bytes)
        self.upload.begin()
        return FileSink(self.upload, low, high, content_md5)

    def record(self) -> dict[str, object]:
        return {
            "bucket": self.bucket,
            "key": self.fields["key"],
            "last_modified": self.now.isoformat(),
            **object_attributes(self.fields),
        }


def post_success(
    fields: Mapping[str, str], stored: StoredObject, location: str
) -> bottle.HTTPResponse:
    """success_action_redirect wins (303); else success_action_status 200, 201 (PostResponse
    XML) or 204, which is also what S3 returns for any other value."""
    headers = {"ETag": stored.etag, "Location": location}
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect and urlsplit(redirect).scheme in ("http", "https"):
        return bottle.HTTPResponse(
            status=303, headers={**headers, "Location": redirect_to(redirect, stored)}
        )
    status = fields.get("success_action_status")
    if status == "201":
        body = xml_document(
            "PostResponse",
            {"Location": location, "Bucket": stored.bucket, "Key": stored.key, "ETag": stored.etag},
        )
        return bottle.HTTPResponse(body, 201, {**headers, **XML_CONTENT_TYPE})
    return bottle.HTTPResponse(status=200 if status == "200" else 204, headers=headers)


def redirect_to(url: str, stored: StoredObject) -> str:
    """S3 appends bucket, key and etag to the redirect URL's query."""
    query = urlencode({"bucket": stored.bucket, "key": stored.key, "etag": stored.etag})
    joined = f"{url}{'&' if urlsplit(url).query else '?'}{query}"
    return quote(joined, safe=":/?#[]@!$&'()*+,;=%")


def object_location(request: bottle.BaseRequest, stored: StoredObject) -> str:
    """The object's path-style URL on this server, as S3 returns it in Location."""
    origin = f"{request.urlparts.scheme}://{request.urlparts.netloc}"
    return f"{origin}/{quote(stored.bucket)}/{quote(stored.key, safe='/')}"


# --- request bodies other than a form: PUT Object, PUT ?cors ---


def content_length(environ: Mapping[str, object]) -> int:
    """S3 takes an upload's length from Content-Length only: a chunked body, with none, is
    411 MissingContentLength."""
    value = str(environ.get("CONTENT_LENGTH") or "")
    if not value.isdigit():
        raise S3Error("MissingContentLength")
    return int(value)


def receive_put_body(environ: Mapping[str, object], upload: Upload, config: S3Config) -> str:
    """Streams the body into the upload and returns its hex SHA-256, for x-amz-content-sha256."""
    size = content_length(environ)
    if size > config.max_body_bytes:
        raise S3Error("EntityTooLarge", ProposedSize=size, MaxSizeAllowed=config.max_body_bytes)
    sha256 = hashlib.sha256()
    upload.begin()
    for chunk in body_chunks(environ):
        sha256.update(chunk)
        upload.write(chunk)
    return sha256.hexdigest()


def cors_body(environ: Mapping[str, object]) -> bytes:
    """A CORS configuration is small; anything over 64 KB is not one."""
    if content_length(environ) > MAX_CORS_XML_BYTES:
        raise S3Error("MalformedXML")
    return b"".join(body_chunks(environ))
