"""What a request must be before any handler reads it: for this app's host, with a small body.

Pure functions of the WSGI environ (or of bytes), called by server.py's `refuse_bad_requests`
plugin before a route runs. Each refusal is an (HTTP status, sentence) pair, so the app answers
it as its usual JSON error, and nothing here reads the body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import bottle

from app_errors import AppError
from settings import EVERY_INTERFACE, Config

# The app's own bodies are JSON of a few hundred bytes (POST /uploads); 64 KB leaves room and
# still refuses anyone who would make the server buffer a file it never wanted. waitress
# enforces the same number on the socket (serving.waitress_options), before the app sees it.
MAX_BODY_BYTES = 64 * 1024
# {"key", "etag", "token"} is one level deep; anything nested deeper is not an upload report.
MAX_JSON_DEPTH = 8
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")  # as a Host header writes them
BODYLESS_METHODS = ("GET", "HEAD")
# Answered for any Host: a load balancer's or orchestrator's probe often names the address it
# dialled, and the answer ("ok", which S3) gives a rebinding page nothing to use.
ANY_HOST_PATHS = ("/healthz",)

Refusal = tuple[int, str]


def refusal(environ: Mapping[str, Any], hosts: frozenset[str]) -> Refusal | None:
    """The first reason to refuse the request from its headers alone, or None."""
    return host_refusal(environ, hosts) or body_refusal(environ)


def allowed_hosts(config: Config) -> frozenset[str]:
    """The Host headers this app answers: its own names, with its port.

    A DNS-rebinding page (evil.example, re-resolved to 127.0.0.1) reaches a loopback app from
    the victim's browser as same-origin, but its requests still say `Host: evil.example:PORT`:
    answering only our own names takes the app away from it. The browser's names for the
    app (PUBLIC_HOST, else HOST), the loopback names when it listens on loopback, and behind a
    trusted proxy PUBLIC_HOST alone, the host the proxy forwards (nginx's $host has no port).
    """
    names = {config.browser_host.lower()}
    if config.host in LOOPBACK_HOSTS or config.host in EVERY_INTERFACE:
        names.update(LOOPBACK_NAMES)
    hosts = {f"{name}:{config.port}" for name in names}
    if config.port == 80:  # a browser leaves the default port out of Host
        hosts.update(names)
    if config.trusted_proxy and config.public_host:
        hosts.add(config.public_host.lower())
    return frozenset(hosts)


def host_refusal(environ: Mapping[str, Any], hosts: frozenset[str]) -> Refusal | None:
    """421 Misdirected Request for a Host that is not ours.

    421 rather than 400: the request is well-formed, but reached a server that does not answer
    for that name (RFC 9110 15.5.20), which is exactly the rebinding case, and it tells a client
    that used a wrong name that another connection may succeed.
    """
    if environ.get("PATH_INFO") in ANY_HOST_PATHS:
        return None
    if environ.get("HTTP_HOST", "").lower() not in hosts:
        return 421, "This server does not answer for that host name."
    return None


def body_refusal(environ: Mapping[str, Any]) -> Refusal | None:
    """Refuse a body from its headers alone, before a byte of it is read.

    GET and HEAD carry no body in this app (RFC 9110 9.3.1: a body on GET has no meaning);
    a chunked body has no length to check before reading, so it must say its length (411
    Length Required, RFC 9110 15.5.12). waitress turns a chunked request into one with a
    Content-Length after reading at most its max_request_body_size, so this is for other servers.
    """
    length = content_length(environ)
    chunked = bool(environ.get("HTTP_TRANSFER_ENCODING"))
    if environ.get("REQUEST_METHOD") in BODYLESS_METHODS and (length or chunked):
        return 400, "A GET or HEAD request must not have a body."
    if chunked:
        return 411, "Send the body with a Content-Length, not in chunks."
    if length is None:
        return 400, "The Content-Length header is not a number."
    if length > MAX_BODY_BYTES:
        return 413, f"The body is larger than {MAX_BODY_BYTES // 1024} KB; this app takes less."
    return None


def content_length(environ: Mapping[str, Any]) -> int | None:
    """The declared length, 0 when absent, None when not a whole number."""
    text = environ.get("CONTENT_LENGTH", "").strip()
    if not text:
        return 0
    return int(text) if text.isascii() and text.isdigit() else None


def json_too_deep(text: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text opens more than `limit` arrays or objects inside each other.

    Python's json parser recurses once per level and raises RecursionError near 1,000 levels,
    which a 4 KB body reaches: counted here first, so deep nesting is a 400 and never a crash.
    Brackets inside strings do not count; a backslash escapes the next character.
    """
    depth, in_string, escaped = 0, False, False
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            if depth > limit:
                return True
        elif byte in b"]}":
            depth -= 1
    return False


def read_json(request: bottle.BaseRequest, max_bytes: int, what: str) -> Any:
    """A small JSON body (`what` it is, for the errors), or a 4xx saying what is wrong."""
    if request.content_type.split(";")[0].strip() != "application/json":
        raise AppError(400, "The body must be JSON (Content-Type: application/json).")
    if request.content_length > max_bytes:
        raise AppError(413, f"The body is too large for {what}.")
    text = request.body.read(max_bytes)
    if json_too_deep(text):
        raise AppError(400, f"The body is nested too deeply for {what}.")
    try:
        return json.loads(text)
    except ValueError:
        raise AppError(400, "The body is not valid JSON.") from None
