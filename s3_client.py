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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from typing import Any
from urllib.parse import quote, urlencode

import s3_rules
import signer
from settings import Config

METADATA_HEADER = "x-amz-meta-"


class S3Failure(Exception):
    """S3 gave no useful answer; `status` is what the app answers its own client with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
