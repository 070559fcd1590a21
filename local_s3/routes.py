"""Step 4: the answers. The local S3 as a WSGI app (create_app): each route takes a request
through the steps in S3's order and answers as S3 does, errors as S3's XML.
https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import functools
import hashlib
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import bottle

import signer
from local_s3.bucket import (
    check_acl_allowed,
    lifecycle_xml,
    ownership_controls_xml,
    region_header,
)
from local_s3.checksums import (
    Checksum,
    RunningChecksum,
    requested_checksum,
    response_headers,
    running,
)
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
from local_s3.multipart import (
    MAX_COMPLETE_XML_BYTES,
    MultipartStore,
    check_part_size,
    checked_part_number,
    complete_result,
    initiate_result,
    list_parts_result,
    list_uploads_result,
    parse_completion,
    parse_parts_request,
    parse_uploads_request,
)
from local_s3.objects import (
    ANONYMOUS_READ_ACLS,
    checked_key,
    object_attributes,
    object_headers,
    put_fields,
)
from local_s3.policy import expand_filename, verify_post_form
from local_s3.sigv4 import SignedRequest, authenticate, check_payload_hash
from local_s3.storage import ObjectStore, StoredObject, Upload

LOG = logging.getLogger("local_s3")
XML_CONTENT_TYPE = {"Content-Type": "application/xml"}
# Cloudflare R2 implements no POST Object: 501 NotImplemented with this message, as reported
# in https://github.com/opslane/opslane/issues/194 (AWS documents no such answer).
POST_NOT_IMPLEMENTED = "Presigned post requests are not yet implemented"


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
        ("/<bucket>/<key:path>", "POST", routes.post_to_object),
        ("/<bucket>", "HEAD", routes.head_bucket),
        ("/<bucket>/", "HEAD", routes.head_bucket),
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
        self.uploads = MultipartStore(self.store)

    def post_object(self, bucket: str) -> bottle.HTTPResponse:
        """POST Object: stream the form, verify it when the file begins, store atomically."""
        now = self.clock()
        self.require_bucket(bucket)
        if not self.config.post_object:
            raise S3Error("NotImplemented", POST_NOT_IMPLEMENTED)
        content_length(bottle.request.environ)
        with self.store.upload() as upload:
            post = PostObject(self.config, bucket, now, upload)
            read_post_form(bottle.request.environ, PostForm(post.on_file))
            stored = self.store.commit(upload, post.record())
        return post_success(post.fields, stored, object_location(bottle.request, stored))

    def get_object(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """GET/HEAD Object. Unsigned reads see only public-read objects and, like S3 without
        list permission, cannot tell a missing key from a private one."""
        if bottle.request.method == "GET" and "uploadId" in bottle.request.query:
            return self.list_parts(bucket, key)
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
        headers = {
            **object_headers(stored),
            **response_headers(stored.checksum, bottle.request.environ),
        }
        return bottle.HTTPResponse(body, 200, headers)

    def put_object(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """PUT Object with a presigned URL or a signed request; the body streams like a POST's."""
        if "uploadId" in bottle.request.query:
            return self.upload_part(bucket, key)
        now = self.clock()
        self.require_bucket(bucket)
        environ = bottle.request.environ
        signed = authenticate(environ, self.config, now)
        if signed is None:
            raise S3Error("AccessDenied")
        fields = put_fields(environ, checked_key(key))
        attributes = object_attributes(fields)
        check_acl_allowed(self.config, fields.get("acl"))
        with self.store.upload() as upload:
            verified = receive_checked_body(environ, upload, self.config, signed, fields)
            record = {"bucket": bucket, "key": key, "last_modified": now.isoformat()}
            stored = self.store.commit(upload, {**record, **attributes, **kept(verified)})
        headers = {"ETag": stored.etag, **(verified.headers() if verified else {})}
        return bottle.HTTPResponse(status=200, headers=headers)

    def delete_object(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """DeleteObject, signed only: 204 whether or not the key existed, as S3 answers.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObject.html"""
        if "uploadId" in bottle.request.query:
            return self.abort_multipart_upload(bucket, key)
        now = self.clock()
        self.require_bucket(bucket)
        signed = self.authorize(now, "s3:DeleteObject")
        check_payload_hash(signed, signer.EMPTY_SHA256)
        self.store.delete(bucket, checked_key(key))
        return bottle.HTTPResponse(status=204)

    def head_bucket(self, bucket: str) -> bottle.HTTPResponse:
        """HeadBucket: 200 for a signed request; every answer names the region (see
        bucket_headers), none has a body."""
        now = self.clock()
        self.require_bucket(bucket)
        signed = self.authorize(now, "s3:ListBucket")
        check_payload_hash(signed, signer.EMPTY_SHA256)
        return bottle.HTTPResponse(status=200)

    def cors_preflight(self, bucket: str, key: str = "") -> bottle.HTTPResponse:
        self.require_bucket(bucket)
        return preflight(bottle.request.environ, self.cors_rules(bucket))

    def bucket_get(self, bucket: str) -> bottle.HTTPResponse:
        """GET /BUCKET?cors (GetBucketCors), or ?list-type=2 (ListObjectsV2)."""
        if "uploads" in bottle.request.query:
            return self.list_multipart_uploads(bucket)
        if bottle.request.query.get("list-type") == "2" and "cors" not in bottle.request.query:
            return self.list_objects_v2(bucket)
        if "ownershipControls" in bottle.request.query:
            return self.bucket_setting(
                bucket, "s3:GetBucketOwnershipControls", ownership_controls_xml
            )
        if "lifecycle" in bottle.request.query:
            return self.bucket_setting(bucket, "s3:GetLifecycleConfiguration", lifecycle_xml)
        return self.bucket_cors(bucket)

    def bucket_setting(
        self, bucket: str, action: str, answer: Callable[[S3Config, str], bytes]
    ) -> bottle.HTTPResponse:
        """GET ?ownershipControls or ?lifecycle: the configured setting as S3's XML."""
        now = self.clock()
        self.require_bucket(bucket)
        check_payload_hash(self.authorize(now, action), signer.EMPTY_SHA256)
        return bottle.HTTPResponse(answer(self.config, bucket), 200, XML_CONTENT_TYPE)

    def list_objects_v2(self, bucket: str) -> bottle.HTTPResponse:
        """ListObjectsV2, signed requests only: S3 lists a bucket to its owner's grants alone."""
        now = self.clock()
        self.require_bucket(bucket)
        signed = self.authorize(now, "s3:ListBucket")
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
        self.authorize(now, "s3:PutBucketCORS" if method == "PUT" else "s3:GetBucketCORS")
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

    # --- multipart uploads (multipart.py): create, parts, list, complete, abort ---

    def post_to_object(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """POST /BUCKET/KEY?uploads starts a multipart upload; ?uploadId=ID completes one."""
        if "uploads" in bottle.request.query:
            return self.create_multipart_upload(bucket, key)
        if "uploadId" in bottle.request.query:
            return self.complete_multipart_upload(bucket, key)
        return self.not_supported(bucket, key)

    def create_multipart_upload(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """CreateMultipartUpload: the object's type, metadata and ACL are given now and kept
        until Complete. https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateMultipartUpload.html
        """
        now = self.clock()
        self.require_bucket(bucket)
        check_payload_hash(self.authorize(now, "s3:PutObject"), signer.EMPTY_SHA256)
        fields = put_fields(bottle.request.environ, checked_key(key))
        check_acl_allowed(self.config, fields.get("acl"))
        upload = self.uploads.create(bucket, key, object_attributes(fields), now)
        return bottle.HTTPResponse(initiate_result(upload), 200, XML_CONTENT_TYPE)

    def upload_part(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """UploadPart: streamed and hashed like PUT Object; the same part number sent again
        replaces the part. https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPart.html"""
        now = self.clock()
        self.require_bucket(bucket)
        environ, query = bottle.request.environ, request_query()
        signed = self.authorize(now, "s3:PutObject")
        number = checked_part_number(query.get("partNumber"))
        upload = self.uploads.get(bucket, key, query.get("uploadId"))
        check_part_size(content_length(environ))
        fields = put_fields(environ, key)
        with self.store.upload() as received:
            verified = receive_checked_body(environ, received, self.config, signed, fields)
            part = self.uploads.save_part(upload, number, received, now)
        headers = {"ETag": part.etag, **(verified.headers() if verified else {})}
        return bottle.HTTPResponse(status=200, headers=headers)

    def list_parts(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """ListParts: the parts stored so far, max-parts at a time after part-number-marker.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListParts.html"""
        now = self.clock()
        self.require_bucket(bucket)
        signed = self.authorize(now, "s3:ListMultipartUploadParts")
        check_payload_hash(signed, signer.EMPTY_SHA256)
        query = request_query()
        request = parse_parts_request(query)
        upload = self.uploads.get(bucket, key, query["uploadId"])
        body = list_parts_result(upload, request, list(self.uploads.parts(upload).values()))
        return bottle.HTTPResponse(body, 200, XML_CONTENT_TYPE)

    def complete_multipart_upload(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """CompleteMultipartUpload: the listed parts become the object, whole and at once; the
        upload and its parts are gone.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html"""
        now = self.clock()
        self.require_bucket(bucket)
        signed = self.authorize(now, "s3:PutObject")
        upload = self.uploads.get(bucket, key, request_query().get("uploadId"))
        body = completion_body(bottle.request.environ)
        check_payload_hash(signed, hashlib.sha256(body).hexdigest())
        stored = self.uploads.complete(upload, parse_completion(body), now)
        answer = complete_result(object_location(bottle.request, stored), stored)
        return bottle.HTTPResponse(answer, 200, XML_CONTENT_TYPE)

    def abort_multipart_upload(self, bucket: str, key: str) -> bottle.HTTPResponse:
        """AbortMultipartUpload: 204, and every part deleted.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_AbortMultipartUpload.html"""
        now = self.clock()
        self.require_bucket(bucket)
        check_payload_hash(self.authorize(now, "s3:AbortMultipartUpload"), signer.EMPTY_SHA256)
        upload = self.uploads.get(bucket, key, request_query().get("uploadId"))
        self.uploads.abort(upload)
        return bottle.HTTPResponse(status=204)

    def list_multipart_uploads(self, bucket: str) -> bottle.HTTPResponse:
        """ListMultipartUploads: the bucket's uploads in progress, by key then initiation.
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html"""
        now = self.clock()
        self.require_bucket(bucket)
        signed = self.authorize(now, "s3:ListBucketMultipartUploads")
        check_payload_hash(signed, signer.EMPTY_SHA256)
        request = parse_uploads_request(request_query())
        body = list_uploads_result(bucket, request, self.uploads.uploads(bucket))
        return bottle.HTTPResponse(body, 200, XML_CONTENT_TYPE)

    def not_supported(self, bucket: str = "", key: str = "") -> bottle.HTTPResponse:
        if bucket:
            self.require_bucket(bucket)
        resource = "OBJECT" if key else "BUCKET" if bucket else "SERVICE"
        raise S3Error("MethodNotAllowed", Method=bottle.request.method, ResourceType=resource)

    def authorize(self, now: datetime, action: str) -> SignedRequest:
        """A signed request for an action these credentials may take; AccessDenied otherwise
        (`denied_actions` plays a policy without that permission)."""
        signed = authenticate(bottle.request.environ, self.config, now)
        if signed is None or action in self.config.denied_actions:
            raise S3Error("AccessDenied")
        return signed

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
                check_body_framing(bottle.request.environ)
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
            response.headers.update(bucket_headers(routes.config, kwargs))
            response.set_header("Date", format_datetime(routes.clock().astimezone(UTC), True))
            response.set_header("x-amz-request-id", request_id)
            return response

        return wrapper

    return decorate


def bucket_headers(config: S3Config, route: Mapping[str, object]) -> dict[str, str]:
    """HeadBucket's answers, errors included, name the bucket's region."""
    bucket = route.get("bucket")
    if bottle.request.method != "HEAD" or "key" in route or bucket not in config.buckets:
        return {}
    return region_header(config)


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
    sink: FileSink | None = None

    def on_file(self, fields: dict[str, str], filename: str | None) -> FileSink:
        self.fields = expand_filename(fields, filename)
        policy = verify_post_form(self.fields, self.bucket, self.config, self.now)
        check_acl_allowed(self.config, self.fields.get("acl"))
        checked_key(self.fields["key"])
        object_attributes(self.fields)
        content_md5 = checked_content_md5(self.fields.get("content-md5"))
        checksum = running(requested_checksum(self.fields, "x-amz-checksum-algorithm"))
        low, high = policy.size_range(self.config.max_body_bytes)
        self.upload.begin()
        self.sink = FileSink(self.upload, low, high, content_md5, checksum)
        return self.sink

    def record(self) -> dict[str, object]:
        return {
            "bucket": self.bucket,
            "key": self.fields["key"],
            "last_modified": self.now.isoformat(),
            **object_attributes(self.fields),
            **kept(self.sink.verified),
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

BODILESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


def check_body_framing(environ: Mapping[str, object]) -> None:
    """Checked before a byte of the body is read. S3 answers Transfer-Encoding: chunked with 501
    NotImplemented naming the header, whatever the request (it takes a size from Content-Length
    only), and a body on a request that takes none with UnexpectedContent."""
    if environ.get("HTTP_TRANSFER_ENCODING"):
        raise S3Error("NotImplemented", Header="Transfer-Encoding")
    length = str(environ.get("CONTENT_LENGTH") or "0")
    if environ["REQUEST_METHOD"] in BODILESS_METHODS and (not length.isdigit() or int(length)):
        raise S3Error("UnexpectedContent")


def content_length(environ: Mapping[str, object]) -> int:
    """S3 takes an upload's length from Content-Length only: a PUT or POST without one is 411
    MissingContentLength (a chunked one never gets here: check_body_framing)."""
    value = str(environ.get("CONTENT_LENGTH") or "")
    if not value.isdigit():
        raise S3Error("MissingContentLength")
    return int(value)


def receive_checked_body(
    environ: Mapping[str, object],
    upload: Upload,
    config: S3Config,
    signed: SignedRequest | None,
    fields: Mapping[str, str],
) -> Checksum | None:
    """A PUT's or a part's body, checked as S3 checks it: Content-MD5 and any x-amz-checksum-*
    well-formed before a byte is read, then the signed payload hash, the MD5 and the checksum
    of what arrived. Returns the verified checksum, if one was sent."""
    content_md5 = checked_content_md5(fields.get("content-md5"))
    checksum = running(requested_checksum(fields, "x-amz-sdk-checksum-algorithm"))
    check_payload_hash(signed, receive_put_body(environ, upload, config, signed, checksum))
    check_content_md5(upload, content_md5)
    return checksum.verify() if checksum else None


def receive_put_body(
    environ: Mapping[str, object],
    upload: Upload,
    config: S3Config,
    signed: SignedRequest | None,
    checksum: RunningChecksum | None = None,
) -> str:
    """Streams the body into the upload (and the x-amz-checksum-* digest, if one was sent) and
    returns its hex SHA-256 for x-amz-content-sha256; with UNSIGNED-PAYLOAD (every presigned
    URL) there is nothing to compare it with, so the body is not hashed twice for nothing."""
    size = content_length(environ)
    if size > config.max_body_bytes:
        raise S3Error("EntityTooLarge", ProposedSize=size, MaxSizeAllowed=config.max_body_bytes)
    unsigned = signed is None or signed.payload_hash == signer.UNSIGNED_PAYLOAD
    sha256 = None if unsigned else hashlib.sha256()
    upload.begin()
    for chunk in body_chunks(environ):
        if sha256 is not None:
            sha256.update(chunk)
        if checksum is not None:
            checksum.update(chunk)
        upload.write(chunk)
    return signer.UNSIGNED_PAYLOAD if sha256 is None else sha256.hexdigest()


def kept(checksum: Checksum | None) -> dict[str, object]:
    """What the object's record keeps of a verified checksum, returned on GET and HEAD."""
    return {} if checksum is None else {"checksum": dataclasses.asdict(checksum)}


def cors_body(environ: Mapping[str, object]) -> bytes:
    """A CORS configuration is small; anything over 64 KB is not one."""
    if content_length(environ) > MAX_CORS_XML_BYTES:
        raise S3Error("MalformedXML")
    return b"".join(body_chunks(environ))


def request_query() -> dict[str, str]:
    """The query's parameters decoded as UTF-8 (bottle's own query is decoded as Latin-1)."""
    return dict(parse_qsl(bottle.request.query_string, keep_blank_values=True))


def completion_body(environ: Mapping[str, object]) -> bytes:
    """The CompleteMultipartUpload XML, read whole: it is small (see MAX_COMPLETE_XML_BYTES)."""
    if content_length(environ) > MAX_COMPLETE_XML_BYTES:
        raise S3Error("MalformedXML")
    return b"".join(body_chunks(environ))
