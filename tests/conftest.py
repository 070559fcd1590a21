"""Shared fixtures. Append new fixtures with small edits; do not rewrite others'."""

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from playwright.sync_api import Browser, sync_playwright

# Every response and log line of the whole suite is scanned for the suite's secret keys.
pytest_plugins = ("leak_scan",)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

# `make test` runs 40 examples per property, `make stress` (HYPOTHESIS_PROFILE=stress) 5,000;
# CI's profile is also derandomized, so a CI run is repeatable. No 200 ms deadline per example:
# that fails a test for the machine being busy, not for what the test checks.
settings.register_profile("stress", max_examples=5_000, deadline=None)
settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile("ci", parent=settings.get_profile("ci"), max_examples=40, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if "CI" in os.environ else "dev"))


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, launched once per session, so no Playwright browser download is needed."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


# --- local S3 (local_s3/): a frozen clock, test credentials, the WSGI app and a real server ---

S3_TEST_ACCESS_KEY = "AKIDLOCALS3TEST00001"
S3_TEST_SECRET_KEY = "local-s3-test-secret/not-a-real-key-0123"
S3_TEST_ORIGIN = "http://app.test"


@pytest.fixture
def s3_now():
    """The local S3's clock in WebTest tests: noon UTC on 1 January 2026, frozen."""
    from datetime import UTC, datetime

    return datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def s3_credentials():
    import signer

    return signer.Credentials(S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY)


@pytest.fixture
def s3_config(tmp_path, s3_now):
    """Buckets "uploads" and "other", CORS for http://app.test, data under tmp_path/data."""
    import local_s3

    return local_s3.S3Config(
        data_dir=tmp_path / "data",
        buckets=("uploads", "other"),
        credentials={S3_TEST_ACCESS_KEY: S3_TEST_SECRET_KEY},
        cors_origins=(S3_TEST_ORIGIN,),
        clock=lambda: s3_now,
    )


@pytest.fixture
def s3_app(s3_config):
    """The local S3 WSGI app under WebTest, reached as http://localhost (so signed Host matches)."""
    import webtest

    import local_s3

    return webtest.TestApp(local_s3.create_app(s3_config), extra_environ={"HTTP_HOST": "localhost"})


@pytest.fixture
def make_s3_app(s3_config):
    """make_s3_app(**changes) -> the local S3 of s3_config with `changes` under WebTest, as
    s3_app: e.g. object_ownership="BucketOwnerEnforced" for a bucket configured that way."""
    import webtest

    import local_s3

    def make(**changes):
        app = local_s3.create_app(dataclasses.replace(s3_config, **changes))
        return webtest.TestApp(app, extra_environ={"HTTP_HOST": "localhost"})

    return make


def signed_s3_request(app, credentials, now, method, path, body=b"", headers=None, status="*"):
    """A request to the local S3 under WebTest (at http://localhost) signed in its
    Authorization header, as the app's own requests are."""
    import signer

    url = f"http://localhost{path}"
    signed = signer.sign_request(
        credentials, method, url, "us-east-1", headers=headers, payload=body, now=now
    )
    signed = {k: v for k, v in signed.items() if k != "host"}
    headers = {**(headers or {}), **signed, "Host": "localhost"}
    return app.request(path, method=method, body=body, headers=headers, status=status)


def presigned(url, credentials, now, method="GET", **kwargs):
    """A presigned URL for the local S3 under WebTest, as a path (http://localhost dropped)."""
    import signer

    return signer.presign_url(
        credentials, method, url, "us-east-1", now=now, **kwargs
    ).removeprefix("http://localhost")


def boto3_client(server, secret=S3_TEST_SECRET_KEY):
    """botocore, the reference client, against a running local S3 (path-style, SigV4)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=S3_TEST_ACCESS_KEY,
        aws_secret_access_key=secret,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def error_of(response):
    """(Code, Message, {other elements}) of an S3 XML error."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(response.body)
    elements = {child.tag: child.text or "" for child in root}
    return elements.pop("Code"), elements.pop("Message"), elements


@pytest.fixture
def start_s3(tmp_path):
    """start_s3(threads=4, **config) -> a real LocalS3 on 127.0.0.1 with a free port and the real
    clock (botocore signs with now), serving bucket "uploads"; stopped after the test."""
    import contextlib

    import local_s3

    with contextlib.ExitStack() as running:

        def start(threads=4, **config):
            settings = local_s3.S3Config(
                data_dir=tmp_path / "data",
                buckets=("uploads",),
                credentials={S3_TEST_ACCESS_KEY: S3_TEST_SECRET_KEY},
                **{"cors_origins": (S3_TEST_ORIGIN,), **config},
            )
            return running.enter_context(local_s3.LocalS3(settings, threads=threads))

        yield start


@pytest.fixture
def running_s3(start_s3):
    """A real LocalS3 with 4 threads: see start_s3."""
    return start_s3()


FORM_BOUNDARY = "LocalS3TestBoundary7MA4YWxkTrZu0gW"


def _encode_form(parts, boundary=FORM_BOUNDARY):
    """multipart/form-data in exactly the order given. A (filename, bytes) value is a file part;
    a bytes value is raw. Duplicates and any order are allowed: that is what tamper tests need."""
    chunks = []
    for name, value in parts:
        disposition = f'form-data; name="{name}"'
        head = ""
        if isinstance(value, tuple):
            filename, value = value
            disposition += f'; filename="{filename}"'
            head = "Content-Type: application/octet-stream\r\n"
        data = value if isinstance(value, bytes) else value.encode()
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{head}\r\n".encode()
            + data
            + b"\r\n"
        )
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


@pytest.fixture
def encode_form():
    """encode_form(parts) -> (content_type, body): see _encode_form."""
    return _encode_form


def browser_form(fields, content, filename="f.bin", boundary=FORM_BOUNDARY):
    """(content_type, body) of a browser's form upload: the fields in order, then the file."""
    return _encode_form([*fields.items(), ("file", (filename, content))], boundary)


# --- faults: a tiny filesystem, to run out of space on purpose ---------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """tiny_disk(size) -> a fresh folder on a tmpfs of `size` (e.g. "2m"), unmounted afterwards.

    Mounting needs root and a sandbox that allows it; elsewhere the test is skipped, saying why.
    """
    import subprocess

    mounted = []

    def mount(size):
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a {size} tmpfs here: {result.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=True)


# --- the app (server.py): a fixed clock, its settings, served by waitress, a form poster -----

APP_NOW = datetime(2026, 12, 2, 1, 2, 3, tzinfo=UTC)


class Clock:
    """The app's clock in tests: fixed at `moment` and moved by hand; with no moment it follows
    the real time (for a real local S3, which checks expiry on its own clock), moved the same way.
    """

    def __init__(self, moment: datetime | None = None) -> None:
        self.moment = moment
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return (self.moment or datetime.now(UTC)) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def now() -> datetime:
    """The app's moment in WebTest tests: 2 December 2026, 01:02:03 UTC."""
    return APP_NOW


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now)


# WebTest's requests say `Host: localhost:80`; the app answers only its own host names, so the
# tests' app listens (in name) on port 80 of loopback, where localhost:80 is its own.
WEBTEST_PORT = 80


def app_config(**fields: Any) -> Any:
    """The app's settings for bucket "uploads" in us-east-1, on loopback port 80 (WebTest's
    default host): the defaults of settings.SETTINGS (what an empty environment gives), with
    `fields` changed. Give it `credentials`."""
    from settings import Config

    fields = {"port": WEBTEST_PORT, **fields}
    return dataclasses.replace(Config.from_env({}), bucket="uploads", region="us-east-1", **fields)


APP_SECRET = "APP-TEST-SECRET/wJalrXUtnFEMIK7MDENGbPxRfiCY"


OWNER = ("owner", "owner-password/not-a-real-one")


def logged_in_owner(config: Any) -> tuple[Any, dict[str, str]]:
    """`config` behind UPLOAD_AUTH's Basic login, and the WSGI environ of its owner logged in:
    the list of every upload is shown only behind a login."""
    import base64

    from settings import read_upload_auth

    auth = read_upload_auth("UPLOAD_AUTH", "basic:{}:{}".format(*OWNER))
    header = "Basic " + base64.b64encode(":".join(OWNER).encode()).decode()
    return dataclasses.replace(config, auth=auth), {"HTTP_AUTHORIZATION": header}


@pytest.fixture
def app_environ() -> dict[str, str]:
    """Settings a browser test's app gets besides those of `make run` (none); a test module
    overrides this fixture to try others."""
    return {}


@pytest.fixture
def upload_method() -> str:
    """UPLOAD_METHOD for a test's app: post, the default; a test parametrizes it to try put."""
    return "post"


def page_config(html: str) -> dict[str, Any]:
    """The settings the page hands its script, read as the script reads them: the JSON inside
    <script id="upload-config">, without parsing the rest of the page."""
    import json

    return json.loads(html.partition('id="upload-config">')[2].partition("</script>")[0])


def free_port() -> int:
    """A loopback port nothing listens on (the system's choice, released at once)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def config(tmp_path: Path) -> Any:
    """Bucket "uploads" behind a closed port (a HEAD to S3 is refused at once: 502), the upload
    list under tmp_path; every other setting at its default."""
    import signer

    credentials = signer.Credentials("AKIDAPPTEST000000001", APP_SECRET)
    return app_config(
        credentials=credentials, endpoint=closed_port_url(), data_dir=tmp_path, s3_timeout=0.5
    )


@pytest.fixture
def app(config: Any, clock: Clock) -> Any:
    import server

    return server.create_app(config, clock=clock)


@pytest.fixture
def client(app: Any) -> Any:
    """The app under WebTest, called from one client address (the rate limit counts per address)."""
    import webtest

    return webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.1"})


@pytest.fixture
def served() -> Callable[..., Any]:
    """served(app, threads=4, port=0) -> a context manager: the WSGI app under waitress as
    serving.serve configures it, on loopback (port 0: a free one), in a thread, giving its URL;
    every socket is closed when the block ends."""
    import serving

    @contextlib.contextmanager
    def serve(app: Callable[..., Any], threads: int = 4, port: int = 0) -> Iterator[str]:
        options = serving.waitress_options(threads, None)
        channel = serving.QuietChannel
        with serving.BackgroundServer(app, port=port, channel_class=channel, **options) as http:
            yield http.url

    return serve


def send_form(
    url: str,
    fields: Mapping[str, str],
    content: bytes,
    filename: str = "f.bin",
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any, bytes]:
    """A browser's form upload to url over real HTTP: (status, headers (any case), body)."""
    import http.client
    from urllib.parse import urlsplit

    content_type, body = browser_form(fields, content, filename)
    target = urlsplit(url)
    connection = http.client.HTTPConnection(target.netloc, timeout=30)
    try:
        connection.request(
            "POST", target.path, body, {"Content-Type": content_type, **(headers or {})}
        )
        reply = connection.getresponse()
        return reply.status, reply.headers, reply.read()
    finally:
        connection.close()


@pytest.fixture
def post_form() -> Callable[..., Any]:
    """post_form(url, fields, content, filename="f.bin", headers=None) -> (status, headers,
    body): a browser's form upload over real HTTP, the fields in order and the file last."""
    return send_form


# --- raw HTTP: a client that writes requests by hand, hangs up, or waits on the server -------


def raw_post_head(url: str, content_type: str, length: int, *extra_headers: str) -> bytes:
    """The head of a POST /uploads/ to url's host, as bytes, for a client sending by hand."""
    from urllib.parse import urlsplit

    lines = [
        "POST /uploads/ HTTP/1.1",
        f"Host: {urlsplit(url).netloc}",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
        *extra_headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(url: str, timeout: float = 10) -> Any:
    """A TCP socket connected to url's host and port."""
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(url)
    return socket.create_connection((address.hostname, address.port), timeout=timeout)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30) -> None:
    """Waits until condition() holds; the timeout only keeps a broken server from hanging."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


# --- the setup doctor (doctor.py) -------------------------------------------------------------


def doctor_output(config: Any, origins: tuple[str, ...], **options: Any) -> tuple[int, str]:
    """(exit status, report) of `python server.py doctor` against `config`, called in-process
    with the app's own form signer; the report is scanned for secrets like every response."""
    import io

    import leak_scan

    import doctor
    import server

    out = io.StringIO()
    status = doctor.main(config, origins, server.post_target, out, **options)
    leak_scan.scan_text("doctor report", out.getvalue())
    return status, out.getvalue()
