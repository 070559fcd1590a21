"""The app's own requests to S3, signed with SigV4 and bounded by a deadline.

The app asks S3 about an uploaded object (`head_object`) and reads and writes its upload list
in the bucket (registry.py); the setup doctor (doctor.py) asks about the bucket and uploads a
probe the way a browser does (`post_form`, `put_presigned`). Every request goes through
`exchange`, which refuses to follow redirects and gives up at the deadline; `send` signs a
request first.
"""

from __future__ import annotations

import contextlib
import http.client
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from typing import Any
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

import s3_rules
import signer
from app_errors import AppError
from settings import Config

METADATA_HEADER = "x-amz-meta-"


class S3Failure(AppError):
    """S3 gave no useful answer; the status is what the app answers its own client with."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Message
    body: bytes


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD request to S3 tells us about an uploaded object."""

    size: int
    etag: str
    content_type: str
    metadata: dict[str, str]
    last_modified: str  # an HTTP date, as S3 sends it


def head_object(config: Config, key: str, now: datetime) -> ObjectInfo:
    """Size, ETag, type and user metadata of an object, or S3Failure saying why not."""
    reply = send(config, "HEAD", key, now=now)
    if reply.status == 200:
        return object_info(reply.headers)
    raise head_failure(reply.status)


def send(
    config: Config,
    method: str,
    key: str,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    *,
    now: datetime,
) -> Reply:
    """One signed request to the configured bucket; any HTTP answer is returned as it came.

    S3_TIMEOUT bounds sending the request and receiving the answer's status and headers; each
    read of the body is bounded by the same timeout. Not reaching S3, or not in time, raises
    S3Failure (502 or 504).
    """
    url = signer.object_url(config.bucket, key, config.region, config.endpoint)
    if query:
        url += "?" + urlencode(query, quote_via=quote, safe="-_.~")
    signed = signer.sign_request(
        config.credentials, method, url, config.region, headers=headers, payload=body, now=now
    )
    request = urllib.request.Request(
        url, body or None, {**(headers or {}), **signed}, method=method
    )
    return exchange(config, request)


def post_form(config: Config, form: Mapping[str, Any], content: bytes, filename: str) -> Reply:
    """A browser's form upload (POST Object) of a signed form `{url, fields}`: the fields in
    order, then the file, as multipart/form-data."""
    boundary = secrets.token_hex(16)
    body = multipart_body(form["fields"], content, filename, boundary)
    content_type = f"multipart/form-data; boundary={boundary}"
    request = urllib.request.Request(form["url"], body, {"Content-Type": content_type}, "POST")
    return exchange(config, request)


def multipart_body(
    fields: Mapping[str, str], content: bytes, filename: str, boundary: str
) -> bytes:
    """RFC 7578: one part per field, the file last (S3 ignores fields after it)."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
    parts.append(f"{head}\r\nContent-Type: application/octet-stream\r\n\r\n")
    return "".join(parts).encode() + content + f"\r\n--{boundary}--\r\n".encode()


def put_presigned(config: Config, url: str, headers: Mapping[str, str], body: bytes) -> Reply:
    """A browser's PUT to a presigned URL, with exactly the headers it signed."""
    return exchange(config, urllib.request.Request(url, body, dict(headers), method="PUT"))


def exchange(config: Config, request: urllib.request.Request) -> Reply:
    """Any HTTP answer, as it came; S3Failure (502 or 504) when S3 is not reached in time."""
    deadline = time.monotonic() + config.s3_timeout
    try:
        with opener(config).open(request, timeout=config.s3_timeout) as answer:
            if time.monotonic() >= deadline:  # cut off by the deadline: the headers may be partial
                raise TimeoutError
            return Reply(answer.status, answer.headers, answer.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers, error.read())
    except urllib.error.URLError as error:
        raise unreachable(error.reason, deadline) from None
    except (OSError, http.client.HTTPException) as error:
        raise unreachable(error, deadline) from None


def object_info(headers: Mapping[str, str]) -> ObjectInfo:
    length = headers.get("Content-Length", "")
    metadata = {
        name.lower().removeprefix(METADATA_HEADER): value
        for name, value in headers.items()
        if name.lower().startswith(METADATA_HEADER)
    }
    return ObjectInfo(
        size=int(length) if length.isdigit() else -1,
        etag=headers.get("ETag", ""),
        content_type=headers.get("Content-Type", s3_rules.DEFAULT_CONTENT_TYPE),
        metadata=metadata,
        last_modified=headers.get("Last-Modified", ""),
    )


def head_failure(status: int) -> S3Failure:
    """Without s3:ListBucket, S3 answers a HEAD for a missing object with 403, not 404.

    A HEAD answer has no body, so 403 cannot tell "missing" from "not allowed": say both.
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html
    """
    if status == 404:
        return S3Failure(404, "The object was not found in S3 (S3 answered 404).")
    if status == 403:
        return S3Failure(
            404, "The object was not found in S3, or this app may not read it (S3 answered 403)."
        )
    return S3Failure(502, f"S3 answered {status} when checking the upload.")


def unreachable(reason: object, deadline: float) -> S3Failure:
    if isinstance(reason, TimeoutError) or time.monotonic() >= deadline:
        return S3Failure(504, "S3 did not answer in time; try again.")
    if isinstance(reason, http.client.HTTPException):
        return S3Failure(502, "S3 sent an answer that is not valid HTTP.")
    return S3Failure(502, "S3 could not be reached to check the upload.")


# ---- The connection: no redirects, no proxy for the embedded S3, a deadline -----------------


def opener(config: Config) -> urllib.request.OpenerDirector:
    return OPENERS[config.embedded]


def build_opener(embedded: bool) -> urllib.request.OpenerDirector:
    """No redirects; no proxy for the embedded S3, which is always on this machine; and the
    timeout bounds the whole exchange. Built once: the handlers keep no state per request."""
    handlers = [NoRedirects(), DeadlineHTTPHandler(), DeadlineHTTPSHandler()]
    handlers += [urllib.request.ProxyHandler({})] * embedded
    return urllib.request.build_opener(*handlers)


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect from S3 (wrong region, say) is an answer to report, not a place to follow."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


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


OPENERS = {embedded: build_opener(embedded) for embedded in (False, True)}


# ---- Multipart uploads: the app starts, checks, completes and aborts; the browser sends parts --
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html


@dataclass(frozen=True)
class Part:
    number: int
    etag: str
    size: int


@dataclass(frozen=True)
class PendingUpload:
    key: str
    upload_id: str
    initiated: str  # ISO 8601, as S3 writes it


def create_multipart_upload(
    config: Config, key: str, headers: Mapping[str, str], now: datetime
) -> str:
    """CreateMultipartUpload with the object's type, metadata and ACL; returns the UploadId."""
    reply = send(config, "POST", key, {"uploads": ""}, headers, now=now)
    upload_id = xml_texts(reply.body, "UploadId") if reply.status == 200 else []
    if not upload_id:
        raise S3Failure(502, f"S3 answered {reply.status} when starting a multipart upload.")
    return upload_id[0]


def list_parts(config: Config, key: str, upload_id: str, now: datetime) -> list[Part]:
    """Every part S3 holds for the upload (ListParts, page after page, 1,000 at most each)."""
    parts: list[Part] = []
    markers = {"part-number-marker": "0"}
    while True:
        reply = send(config, "GET", key, {"uploadId": upload_id, **markers}, now=now)
        if reply.status != 200:
            raise multipart_failure(reply, "listing the parts")
        for part in xml_records(reply.body, "Part"):
            try:
                parts.append(Part(int(part["PartNumber"]), part["ETag"], int(part["Size"])))
            except (KeyError, ValueError):
                raise S3Failure(502, "S3 listed a part without a number, ETag or size.") from None
        if xml_texts(reply.body, "IsTruncated") != ["true"]:
            return parts
        last = str(parts[-1].number) if parts else ""
        following = {"part-number-marker": ("NextPartNumberMarker", last)}
        markers = next_markers(reply, following, markers)


def complete_multipart_upload(
    config: Config, key: str, upload_id: str, parts: list[Part], now: datetime
) -> str:
    """CompleteMultipartUpload with the parts S3 listed; returns the object's ETag.

    S3 may answer 200 and still report an error in the body, so the body decides.
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html
    """
    items = "".join(
        f"<Part><PartNumber>{p.number}</PartNumber><ETag>{escape(p.etag)}</ETag></Part>"
        for p in parts
    )
    body = f"<CompleteMultipartUpload>{items}</CompleteMultipartUpload>".encode()
    reply = send(config, "POST", key, {"uploadId": upload_id}, body=body, now=now)
    etag = xml_texts(reply.body, "ETag") if reply.status == 200 else []
    if not etag:
        raise multipart_failure(reply, "completing the upload")
    return etag[0]


def abort_multipart_upload(config: Config, key: str, upload_id: str, now: datetime) -> None:
    """AbortMultipartUpload: S3 deletes the parts. An upload already gone is no error."""
    reply = send(config, "DELETE", key, {"uploadId": upload_id}, now=now)
    if reply.status not in (204, 404):
        raise multipart_failure(reply, "aborting the upload")


def list_multipart_uploads(config: Config, prefix: str, now: datetime) -> list[PendingUpload]:
    """The multipart uploads in progress below `prefix` (ListMultipartUploads, every page)."""
    pending: list[PendingUpload] = []
    markers = {"key-marker": "", "upload-id-marker": ""}
    while True:
        reply = send(config, "GET", "", {"uploads": "", "prefix": prefix, **markers}, now=now)
        if reply.status != 200:
            raise multipart_failure(reply, "listing the multipart uploads")
        for upload in xml_records(reply.body, "Upload"):
            fields = (upload.get(name, "") for name in ("Key", "UploadId", "Initiated"))
            pending.append(PendingUpload(*fields))
        if xml_texts(reply.body, "IsTruncated") != ["true"]:
            return pending
        last = pending[-1] if pending else PendingUpload("", "", "")
        following = {
            "key-marker": ("NextKeyMarker", last.key),
            "upload-id-marker": ("NextUploadIdMarker", last.upload_id),
        }
        markers = next_markers(reply, following, markers)


def next_markers(
    reply: Reply, following: Mapping[str, tuple[str, str]], previous: Mapping[str, str]
) -> dict[str, str]:
    """Where a truncated listing's next page starts: for each query parameter, S3's
    Next...Marker element or, where a server leaves it out, the last entry listed (a marker
    means "after this one" in every S3 listing). A page that would start where the last one
    did is S3's error, never an endless loop.
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListParts.html"""
    markers = {
        parameter: next(iter(xml_texts(reply.body, element)), "") or last
        for parameter, (element, last) in following.items()
    }
    if not any(markers.values()) or markers == dict(previous):
        raise S3Failure(502, "S3 said its list goes on, but not where from.")
    return markers


def multipart_failure(reply: Reply, doing: str) -> S3Failure:
    codes = xml_texts(reply.body, "Code")
    if codes == ["NoSuchUpload"]:
        return S3Failure(404, "This upload is not in progress in S3 (finished or cancelled).")
    said = f" ({codes[0]})" if codes else ""
    return S3Failure(502, f"S3 answered {reply.status}{said} when {doing}.")


def xml_root(body: bytes) -> ET.Element | None:
    """S3's XML answer, or None when the body is not XML (a HEAD, a proxy's HTML page)."""
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        return None


def xml_elements(root: ET.Element | None, name: str) -> list[ET.Element]:
    """Every element called `name`, with or without S3's namespace: S3-compatible servers
    differ there, and only the element names are the protocol."""
    if root is None:
        return []
    return [element for element in root.iter() if element.tag.rpartition("}")[2] == name]


def xml_texts(body: bytes | ET.Element | None, name: str) -> list[str]:
    root = xml_root(body) if isinstance(body, bytes) else body
    return [element.text or "" for element in xml_elements(root, name)]


def xml_records(body: bytes, name: str) -> list[dict[str, str]]:
    """Each element called `name` as {child name: text}."""
    return [
        {child.tag.rpartition("}")[2]: child.text or "" for child in element}
        for element in xml_elements(xml_root(body), name)
    ]
