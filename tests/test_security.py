"""The app's defences from the security review (issue 14), each tried the way an attacker would.

docs/SECURITY.md names each defence and where it lives; the tests here follow its order.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import webtest
from conftest import APP_NOW, connect, free_port, page_config

import media_types
import page_data
import request_checks
import server
import tokens
from rate_limit import RateLimit, RateLimiter
from settings import SETTINGS, BasicAuth, Config, ConfigError

GET_BODY = "A GET or HEAD request must not have a body."
TOO_LARGE = "The body is larger than 64 KB; this app takes less."
CHUNKED = "Send the body with a Content-Length, not in chunks."
BAD_LENGTH = "The Content-Length header is not a number."
MISDIRECTED = "This server does not answer for that host name."


def token_header(client: webtest.TestApp) -> dict[str, str]:
    """The X-Upload-Token our page would send, for the app under `client`."""
    return {"X-Upload-Token": tokens.issue_page_token(client.app.state.secrets, APP_NOW)}


# ---- settings: a secret's value is never shown ----------------------------------------------

SECRET_MARKER = "Pa55-Marker-never-shown"
SECRET_SETTINGS = [setting.name for setting in SETTINGS if setting.secret]
EXTERNAL = {
    "S3_BUCKET": "b-1",
    "AWS_ACCESS_KEY_ID": "AKIDSECURITYTEST0001",
    "AWS_SECRET_ACCESS_KEY": "security-test-secret",
    "AWS_REGION": "eu-west-1",
}
# Values a person might mistype, each carrying the marker where the secret part would be.
MISTYPED = [
    SECRET_MARKER,
    f"basci:alice:{SECRET_MARKER}",
    f"basic:{SECRET_MARKER}",
    f"basic::{SECRET_MARKER}",
    f"{SECRET_MARKER}:function",
    f"os:{SECRET_MARKER}",
    f" {SECRET_MARKER} ",
]


def test_the_secret_settings_are_the_credentials_and_the_login() -> None:
    assert SECRET_SETTINGS == ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "UPLOAD_AUTH"]


@pytest.mark.parametrize("name", SECRET_SETTINGS)
@pytest.mark.parametrize("value", MISTYPED)
def test_a_mistyped_secret_setting_never_shows_its_value_in_the_error(name, value) -> None:
    try:
        Config.from_env({**EXTERNAL, name: value}, None)
    except ConfigError as error:
        assert name in str(error)
        assert SECRET_MARKER not in str(error)


def test_secret_settings_have_no_default_to_show_in_the_help() -> None:
    assert [s.default for s in SETTINGS if s.secret] == [None] * len(SECRET_SETTINGS)


# ---- settings: a trusted proxy is one address -------------------------------------------------


def test_trusting_every_proxy_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError) as error:
        Config.from_env({"TRUSTED_PROXY": "*"}, None)
    assert str(error.value) == (
        "TRUSTED_PROXY=* would let every client choose its own address (and a fresh rate "
        "budget); name your proxy's address, e.g. 127.0.0.1."
    )


# ---- the rate limiter: a bounded table, least recently seen pushed out ----------------------


def test_rate_limiter_keeps_at_most_its_bound_of_clients_however_many_are_active() -> None:
    limiter = RateLimiter(RateLimit(30, 60), max_clients=100)
    for n in range(1_000):
        assert limiter.wait(f"198.51.100.{n}", 1000.0) == 0  # every one inside the window
    assert len(limiter.clients) == 100
    assert next(iter(limiter.clients)) == "198.51.100.900"


def test_rate_limiter_pushes_out_the_client_seen_longest_ago() -> None:
    limiter = RateLimiter(RateLimit(2, 60), max_clients=3)
    for client in ("a", "a", "b", "c"):
        limiter.wait(client, 1000.0)
    assert limiter.wait("a", 1001.0) == 59  # "a" is seen again: now the most recent
    limiter.wait("d", 1002.0)  # a fourth client pushes out "b", seen longest ago
    assert list(limiter.clients) == ["c", "a", "d"]
    assert limiter.wait("a", 1003.0) == 57  # still refused: its log survived


# ---- bodies: refused from their headers, before they are read -----------------------------


class UnreadableBody:
    """A wsgi.input that fails the test if anyone reads it."""

    def read(self, *args: object) -> bytes:
        raise AssertionError("the body was read")

    readline = readlines = __iter__ = read


def unread(**environ: str) -> dict[str, Any]:
    return {"wsgi.input": UnreadableBody(), **environ}


@pytest.mark.parametrize(
    ("method", "path", "environ", "status", "message"),
    [
        ("GET", "/", {"CONTENT_LENGTH": "10"}, 400, GET_BODY),
        ("GET", "/healthz", {"CONTENT_LENGTH": "300000000"}, 400, GET_BODY),
        ("HEAD", "/healthz", {"CONTENT_LENGTH": "1"}, 400, None),
        ("GET", "/s3_credentials", {"HTTP_TRANSFER_ENCODING": "chunked"}, 400, GET_BODY),
        ("POST", "/uploads", {"CONTENT_LENGTH": "65537"}, 413, TOO_LARGE),
        ("POST", "/uploads", {"CONTENT_LENGTH": "300000000"}, 413, TOO_LARGE),
        ("POST", "/uploads", {"HTTP_TRANSFER_ENCODING": "chunked"}, 411, CHUNKED),
    ],
)
def test_unwanted_bodies_are_refused_before_a_byte_is_read(
    client, method, path, environ, status, message
) -> None:
    response = client.request(path, method=method, environ=unread(**environ), expect_errors=True)
    assert response.status_int == status
    if message:  # a HEAD answer has no body
        assert response.json == {"error": message}


def test_a_content_length_that_is_not_a_number_is_refused() -> None:
    environ = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "12abc"}
    assert request_checks.body_refusal(environ) == (400, BAD_LENGTH)


def test_bodies_are_refused_even_behind_the_login(config, clock) -> None:
    guarded = dataclasses.replace(config, auth=BasicAuth("alice", "a-long-passphrase"))
    client = webtest.TestApp(server.create_app(guarded, clock=clock))
    environ = unread(CONTENT_LENGTH="293000000")
    response = client.request("/uploads", method="POST", environ=environ, expect_errors=True)
    assert (response.status_int, response.json) == (413, {"error": TOO_LARGE})


def test_a_registration_body_over_4_kb_is_413(client) -> None:
    body = json.dumps({"key": "k" * 5000, "etag": "e", "token": "t"})
    headers = {**token_header(client), "Content-Type": "application/json"}
    response = client.post("/uploads", body, headers, status=413)
    assert response.json == {"error": "The body is too large for an upload report."}


def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, bytes, bool]:
    """Send a request head (and body) by hand; (status, answer body, whether the server then
    closed the connection)."""
    with connect(url) as sock:
        sock.sendall(head.encode() + body)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        content = answer.read()
        closed = answer.will_close
    return answer.status, content, closed


def head(method: str, url: str, path: str, *lines: str, host: str = "") -> str:
    host = host or urlsplit(url).netloc
    return "\r\n".join([f"{method} {path} HTTP/1.1", f"Host: {host}", *lines]) + "\r\n\r\n"


@pytest.fixture
def served_app(config, clock, served) -> Iterator[str]:
    """The app under waitress as `make run` serves it, on its own configured port."""
    port = free_port()
    app = server.create_app(dataclasses.replace(config, port=port), clock=clock)
    with served(app, port=port) as url:
        yield url


def test_a_huge_declared_body_is_refused_by_waitress_before_it_is_sent(served_app) -> None:
    request = head("POST", served_app, "/uploads", "Content-Length: 300000000")
    status, _, closed = raw_request(served_app, request)  # not one byte of the body sent
    assert (status, closed) == (413, True)


def test_a_chunked_body_is_refused_at_64_kb_while_it_arrives(served_app) -> None:
    chunk = b"%x\r\n%s\r\n" % (16 * 1024, b"[" * 16 * 1024)
    request = head("POST", served_app, "/uploads", "Transfer-Encoding: chunked")
    with connect(served_app) as sock:
        sock.sendall(request.encode())
        with contextlib.suppress(OSError):  # the server may close while we still send
            for _ in range(64):  # 1 MB offered, if the server kept reading
                sock.sendall(chunk)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
    assert answer.status == 413


@pytest.mark.parametrize("path", ["/healthz", "/"])
def test_a_get_with_a_small_body_over_the_network_is_a_json_400(served_app, path) -> None:
    request = head("GET", served_app, path, "Content-Length: 5")
    status, body, _ = raw_request(served_app, request, b"hello")
    assert (status, json.loads(body)) == (400, {"error": GET_BODY})


def test_a_chunked_get_over_the_network_is_a_json_400(served_app) -> None:
    request = head("GET", served_app, "/healthz", "Transfer-Encoding: chunked")
    status, body, _ = raw_request(served_app, request, b"5\r\nhello\r\n0\r\n\r\n")
    assert (status, json.loads(body)) == (400, {"error": GET_BODY})


# ---- JSON: nesting is counted before the parser recurses ----------------------------------


@pytest.mark.parametrize(
    ("text", "too_deep"),
    [
        (b'{"key": "k", "etag": "e", "token": "t"}', False),
        (b"[" * 8 + b"]" * 8, False),
        (b"[" * 9, True),
        (b'{"a": {"b": [[[[[[[1]]]]]]]}}', True),
        (b'["' + b"[" * 50 + b'"]', False),  # brackets inside a string
        (b'["\\"' + b"[" * 50 + b'"]', False),  # an escaped quote does not end the string
        (b'["\\\\"' + b"[" * 50, True),  # an escaped backslash does
        (b"", False),
    ],
)
def test_json_depth_is_counted_outside_strings(text, too_deep) -> None:
    assert request_checks.json_too_deep(text) is too_deep


def test_deeply_nested_registration_json_is_a_400_and_logs_nothing(client, caplog) -> None:
    body = b"[" * 4000 + b"]" * 96  # 4 KB: the size a report may have
    response = client.post(
        "/uploads", body, {**token_header(client), "Content-Type": "application/json"}, status=400
    )
    assert response.json == {"error": "The body is nested too deeply for an upload report."}
    assert caplog.records == []


# ---- slow clients: 150 connections that never finish their request ------------------------

SLOW_CLIENTS = 150


def open_slow_clients(url: str, count: int) -> list[socket.socket]:
    """Half send a request head and stop in its middle; half send a whole head and then trickle
    a body that never ends. Each keeps its connection busy and never finishes a request."""
    sockets = []
    for n in range(count):
        sock = connect(url)
        if n % 2:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        else:
            sock.sendall(head("POST", url, "/uploads", "Content-Length: 60000").encode() + b"[")
        sockets.append(sock)
    return sockets


def trickle(sockets: list[socket.socket], stop: threading.Event) -> None:
    """One more byte on every connection every 0.2 s, so none of them is ever idle."""
    while not stop.wait(0.2):
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.send(b"a")


def test_a_normal_request_is_answered_while_150_slow_clients_hold_connections(served_app):
    threads_before = threading.active_count()
    stop = threading.Event()
    sockets = open_slow_clients(served_app, SLOW_CLIENTS)
    trickler = threading.Thread(target=trickle, args=(sockets, stop))
    trickler.start()
    try:
        started = time.monotonic()
        connection = http.client.HTTPConnection(urlsplit(served_app).netloc, timeout=5)
        connection.request("GET", "/healthz")  # a timeout after 5 s fails the test
        reply = connection.getresponse()
        assert (reply.status, json.loads(reply.read())["status"]) == (200, "ok")
        connection.close()
        elapsed = time.monotonic() - started
        threads_during = threading.active_count() - 1  # the trickler is ours
    finally:
        stop.set()
        trickler.join()
        for sock in sockets:
            sock.close()
    assert threads_during == threads_before  # a slow connection holds no thread
    print(
        f"\n{SLOW_CLIENTS} slow clients: GET /healthz answered in {elapsed * 1000:.1f} ms; "
        f"threads {threads_before} before, {threads_during} with the slow clients"
    )


# ---- Host: only the app's own names, so a rebinding page cannot drive it -------------------

LOOPBACK_8080 = {"127.0.0.1:8080", "localhost:8080", "[::1]:8080"}


@pytest.mark.parametrize(
    ("environ", "hosts"),
    [
        ({}, LOOPBACK_8080),
        ({"HOST": "localhost"}, {"localhost:8080", "127.0.0.1:8080", "[::1]:8080"}),
        ({"HOST": "192.0.2.10"}, {"192.0.2.10:8080"}),
        ({"HOST": "0.0.0.0", "PUBLIC_HOST": "Up.Example.test"}, {"up.example.test:8080"}),
        ({"PORT": "80"}, {*(h.replace("8080", "80") for h in LOOPBACK_8080), "127.0.0.1"}),
        (
            {"HOST": "192.0.2.10", "PUBLIC_HOST": "up.example.test", "TRUSTED_PROXY": "192.0.2.1"},
            {"up.example.test:8080", "up.example.test"},
        ),
    ],
)
def test_the_app_answers_its_own_host_names_only(environ, hosts) -> None:
    expected = set(hosts)
    if environ.get("HOST") == "0.0.0.0":
        expected |= LOOPBACK_8080
    if environ.get("PORT") == "80":
        expected |= {"localhost", "[::1]"}
    assert request_checks.allowed_hosts(Config.from_env(environ, None)) == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/s3_credentials"), ("POST", "/uploads"), ("GET", "/static/style.css")],
)
@pytest.mark.parametrize("host", ["rebind.example:80", "rebind.example", "127.0.0.1.nip.io:80", ""])
def test_a_host_that_is_not_ours_is_421_misdirected(client, method, path, host) -> None:
    environ = {"HTTP_HOST": host}
    response = client.request(path, method=method, environ=environ, expect_errors=True)
    assert (response.status_int, response.json) == (421, {"error": MISDIRECTED})


def test_host_names_are_compared_without_case_and_health_answers_any_host(client) -> None:
    assert client.get("/", headers={"Host": "LocalHost:80"}).status_int == 200
    assert client.get("/healthz", headers={"Host": "probe.internal:9999"}).json["status"] == "ok"


def test_a_rebinding_page_gets_421_from_the_served_app_and_the_app_its_page(served_app) -> None:
    port = urlsplit(served_app).port
    for host, status in [(f"rebind.example:{port}", 421), (f"127.0.0.1:{port}", 200)]:
        request = head("GET", served_app, "/", host=host)
        assert raw_request(served_app, request)[0] == status


# ---- the page's notice: our own sentences only ----------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        "<b>S3 said no</b>",
        "Your account is locked: call +1 555 0100 now",
        "This key was not issued by this server.",
        "4090",
        "",
    ],
)
def test_the_page_never_shows_text_from_its_link(client, error) -> None:
    """What the page says is its text, not its signed forms' hex (which may hold "4090")."""
    html = client.get("/", {"error": error}).html
    for hidden in html.find_all(["script", "input"]):
        hidden.decompose()
    shown = html.get_text()
    if error:
        notices = [notice.get_text() for notice in html.find_all(class_="notice-error")]
        assert notices == ["Upload not recorded: try again."]
    for words in ("S3 said no", "locked", "not issued", "4090"):
        assert words not in shown


def test_each_refusal_of_a_no_js_upload_has_its_own_sentence() -> None:
    statuses = {400, 403, 404, 409, 415, 502, 503, 504}  # upload_done's, s3_client's, file_types'
    assert set(page_data.NOJS_ERRORS) == {str(status) for status in statuses}


# ---- the rate limit counts every signed form, the page's too ------------------------------


@pytest.fixture
def limited(config, clock) -> webtest.TestApp:
    """The app allowing 2 signed forms a minute, for client 192.0.2.1."""
    limit = dataclasses.replace(config, rate_limit=RateLimit(2, 60))
    return webtest.TestApp(server.create_app(limit, clock=clock), {"REMOTE_ADDR": "192.0.2.1"})


def ask_for_form(client: webtest.TestApp) -> webtest.TestResponse:
    query = {"filename": "a.png", "content_type": "image/png", "size": "10"}
    return client.get("/s3_credentials", query, token_header(client), expect_errors=True)


def has_signed_form(page: webtest.TestResponse) -> bool:
    return 'name="policy"' in page.text


def test_each_page_load_spends_one_signed_form(limited, clock) -> None:
    assert [has_signed_form(limited.get("/")) for _ in range(2)] == [True, True]
    clock.advance(15)
    page = limited.get("/")  # over the limit: the page still loads, without a signed form
    assert not has_signed_form(page)
    notice = " ".join(page.html.find(id="rate-limited").text.split())
    assert (
        notice == "Too many upload forms were asked for from your address: try again in 45 seconds."
    )
    assert ask_for_form(limited).status_int == 429
    clock.advance(45)
    assert has_signed_form(limited.get("/"))


def test_forms_asked_for_by_script_leave_the_page_without_a_signed_form(limited) -> None:
    assert [ask_for_form(limited).status_int for _ in range(2)] == [200, 200]
    assert not has_signed_form(limited.get("/"))
    other = limited.get("/", extra_environ={"REMOTE_ADDR": "192.0.2.2"})
    assert has_signed_form(other)


# ---- active content: never signed by default -----------------------------------------------

ACTIVE = [
    "image/svg+xml",
    "text/html",
    "application/xhtml+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
    "application/x-unknown-thing",
]
EVERY_FAMILY = ("image/*", "text/*", "application/*")


@pytest.fixture
def broad(config, clock) -> webtest.TestApp:
    """The app allowing whole families (image/*, text/*, application/*), active types off."""
    wide = dataclasses.replace(config, allowed_types=EVERY_FAMILY, rate_limit=None)
    return webtest.TestApp(server.create_app(wide, clock=clock))


def form_for(client: webtest.TestApp, content_type: str, status: int = 200) -> Any:
    query = {"filename": "a.HTML", "content_type": content_type, "size": "10"}
    return client.get("/s3_credentials", query, token_header(client), status=status)


@pytest.mark.parametrize("content_type", ACTIVE)
def test_types_a_browser_runs_are_never_signed_by_default(broad, content_type) -> None:
    response = form_for(broad, content_type, status=415)
    assert response.json == {"error": f"Files of type {content_type} are not accepted here."}


@pytest.mark.parametrize("content_type", ["image/png", "text/plain", "application/pdf"])
def test_safe_types_are_signed_inline_with_the_extension_of_their_type(broad, content_type):
    form = form_for(broad, content_type).json
    assert form["key"].endswith(media_types.EXTENSIONS[content_type])
    assert "Content-Disposition" not in form["fields"]


@pytest.mark.parametrize("content_type", ACTIVE)
def test_allowed_active_types_are_pinned_as_downloads(config, clock, content_type) -> None:
    wide = dataclasses.replace(config, allowed_types=EVERY_FAMILY, allow_active_types=True)
    form = form_for(webtest.TestApp(server.create_app(wide, clock=clock)), content_type).json
    policy = json.loads(base64.b64decode(form["fields"]["policy"]))
    assert form["fields"]["Content-Disposition"] == "attachment"
    assert {"Content-Disposition": "attachment"} in policy["conditions"]
    assert form["key"].endswith(media_types.extension(content_type))
    assert not form["key"].endswith(".HTML")


def test_the_page_offers_exactly_the_types_the_server_signs(broad) -> None:
    page = broad.get("/")
    offered = page.html.find(id="file-input")["accept"].split(",")
    limits = page_config(page.text)["limits"]
    assert offered == limits["allowed_types"]
    families = {pattern.removesuffix("*") for pattern in EVERY_FAMILY}
    assert set(offered) == {t for t in media_types.SAFE_TYPES if t.startswith(tuple(families))}
    for content_type in offered:
        assert form_for(broad, content_type).status_int == 200
    assert "image/svg+xml" not in page.html.find(id="limits").text


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"UPLOAD_ALLOWED_TYPES": "image/png,image/svg+xml"},
            "UPLOAD_ALLOWED_TYPES names image/svg+xml, which browsers may run or show as a page;"
            " set UPLOAD_ALLOW_ACTIVE_TYPES=on to accept it, as a download.",
        ),
        (
            {"UPLOAD_ALLOWED_TYPES": "font/*"},
            "UPLOAD_ALLOWED_TYPES matches no type on the safe list (media_types.SAFE_TYPES);"
            " name one, or set UPLOAD_ALLOW_ACTIVE_TYPES=on.",
        ),
    ],
)
def test_an_active_type_named_without_the_switch_stops_start_up(environ, message) -> None:
    with pytest.raises(ConfigError) as error:
        Config.from_env(environ, None)
    assert str(error.value) == message
    assert Config.from_env({**environ, "UPLOAD_ALLOW_ACTIVE_TYPES": "on"}, None)


def test_the_safe_list_and_the_extension_table_agree() -> None:
    assert set(media_types.SAFE_TYPES) <= set(media_types.EXTENSIONS)
    assert not {"image/svg+xml", "text/html", "text/xml"} & set(media_types.SAFE_TYPES)
