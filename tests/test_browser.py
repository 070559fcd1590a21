"""The upload page in headless Chromium, against the real app and the embedded local S3.

Both servers listen on free loopback ports; the local S3 allows the app's origin (CORS), so the
browser posts each file straight to it, exactly as it would to Amazon S3.
"""

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import struct
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import Clock
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Request,
    Response,
    Route,
    expect,
)

import embedded
import registry
import server
import signer
import web
from settings import Config

pytestmark = pytest.mark.browser

BUCKET = embedded.EMBEDDED_BUCKET
REGION = embedded.EMBEDDED_REGION
Color = tuple[int, int, int]
SEA, SKY = (16, 78, 139), (135, 206, 235)
GRASS, SUN = (34, 139, 34), (238, 221, 130)


# ---- Servers -----------------------------------------------------------------------------------


class DeferredApp:
    """A WSGI app filled in later: the app's port must be known before the local S3 (whose CORS
    rule names the app's origin) starts, and the app needs the local S3's URL."""

    app: Callable[..., Any] | None = None

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Any:
        return self.app(environ, start_response)


@dataclass
class Site:
    origin: str
    s3_origin: str
    config: Config
    clock: Clock = field(default_factory=Clock)  # the real time: the local S3 checks expiry on it
    served: DeferredApp = field(default_factory=DeferredApp)

    def change_settings(self, **changes: Any) -> None:
        """Serve an app with some settings changed (e.g. auto_start=False) from now on."""
        self.config = dataclasses.replace(self.config, **changes)
        self.served.app = server.create_app(self.config, clock=self.clock)

    def read_object(self, key: str) -> bytes | None:
        """The object's bytes through a presigned GET, or None when S3 answers 404."""
        url = signer.object_url(BUCKET, key, REGION, self.config.endpoint)
        presigned = signer.presign_url(self.config.credentials, "GET", url, REGION)
        try:
            with urllib.request.urlopen(presigned, timeout=5) as reply:
                return reply.read()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def object_headers(self, key: str) -> dict[str, str]:
        """What S3 returns with the object besides its bytes, through a presigned HEAD."""
        url = signer.object_url(BUCKET, key, REGION, self.config.endpoint)
        presigned = signer.presign_url(self.config.credentials, "HEAD", url, REGION)
        request = urllib.request.Request(presigned, method="HEAD")
        with urllib.request.urlopen(request, timeout=5) as reply:
            return dict(reply.headers)

    def uploads(self) -> list[dict[str, Any]]:
        """The upload list in the bucket, newest first, as the app reads it."""
        return registry.UploadRegistry(self.config).recent(datetime.now(UTC)).uploads


@pytest.fixture
def site(tmp_path: Path, served, upload_method: str, app_environ: dict) -> Iterator[Site]:
    """The app and its embedded local S3 on free loopback ports, started as `make run` starts
    them: fresh random credentials, and a CORS rule naming the app's origin."""
    deferred = DeferredApp()
    with served(deferred) as origin, contextlib.ExitStack() as stack:
        settings = loopback_config(origin, tmp_path, upload_method, app_environ)
        config = embedded.start_embedded_s3(settings, stack, threads=16)  # no slow clients here
        site = Site(origin, web.s3_origin(config), config, served=deferred)
        deferred.app = server.create_app(config, clock=site.clock)
        yield site


def loopback_config(
    origin: str, data_dir: Path, upload_method: str = "post", environ: dict | None = None
) -> Config:
    """The settings of `make run` with no bucket, for an app already listening at `origin`."""
    port = str(urlsplit(origin).port)
    ours = {"PORT": port, "S3_PORT": "0", "DATA_DIR": str(data_dir), "UPLOAD_METHOD": upload_method}
    return Config.from_env({**ours, **(environ or {})})


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page; every test also proves the page threw no error and broke no CSP rule."""
    with checked_page(browser) as fresh:
        yield fresh


@contextlib.contextmanager
def checked_page(browser: Browser, **options: Any) -> Iterator[Page]:
    """A page in a new context (Playwright's new_context options), closed at the end, that
    fails the test if the page threw an error or broke a CSP rule."""
    options = {"viewport": {"width": 1000, "height": 800}, **options}
    context = browser.new_context(**options)
    problems: list[str] = []
    page = context.new_page()

    def note_csp_violation(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            problems.append(message.text)

    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on("console", note_csp_violation)
    try:
        yield page
    finally:
        context.close()
    assert problems == []


# ---- Files -------------------------------------------------------------------------------------


def png(width: int, height: int, start: Color, end: Color) -> bytes:
    """A diagonal gradient PNG, so the uploaded list shows real thumbnails."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    def pixel(x: int, y: int) -> bytes:
        mix = (x / width + y / height) / 2
        return bytes(round(a + (b - a) * mix) for a, b in zip(start, end, strict=True))

    rows = (b"\x00" + b"".join(pixel(x, y) for x in range(width)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    image = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
    return b"\x89PNG\r\n\x1a\n" + image + chunk(b"IEND", b"")


def payload(name: str, mime_type: str, content: bytes) -> dict[str, Any]:
    return {"name": name, "mimeType": mime_type, "buffer": content}


def md5(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


def row(page: Page, filename: str) -> Locator:
    return page.locator("#queue .file").filter(has_text=filename)


# ---- Uploading ---------------------------------------------------------------------------------


def test_uploads_three_files_at_once_straight_to_s3(site: Site, page: Page) -> None:
    files = [
        payload("harbour.png", "image/png", png(240, 160, SEA, SKY)),
        payload("meadow.png", "image/png", png(240, 160, GRASS, SUN)),
        payload("rapport d'été.pdf", "application/pdf", b"%PDF-1.4\n" + os.urandom(300_000)),
    ]
    page.goto(site.origin)
    page.set_input_files("#file-input", files)

    expect(page.locator("#overall-label")).to_have_text("3 of 3 uploaded")
    for upload in files:
        expect(page.locator("#uploads")).to_contain_text(upload["name"])
    expect(page.locator("#overall-percent")).to_have_text("100%")
    expect(page.locator("#queue .file")).to_have_count(0)
    stored = {upload["filename"]: upload["key"] for upload in site.uploads()}
    for upload in files:
        assert md5(site.read_object(stored[upload["name"]])) == md5(upload["buffer"])


def test_reloaded_page_lists_uploads_as_the_script_did(site: Site, page: Page) -> None:
    files = [
        payload("notes.txt", "text/plain", b"x" * 1536),
        payload("photo.png", "image/png", png(40, 30, SKY, SEA)),
    ]
    page.goto(site.origin)
    page.set_input_files("#file-input", files)
    expect(page.locator("#overall-label")).to_have_text("2 of 2 uploaded")
    expect(page.locator("#uploads .upload")).to_have_count(2)
    listed_by_script = page.inner_text("#uploads")

    page.reload()

    expect(page.locator("#uploads .upload")).to_have_count(2)
    assert page.inner_text("#uploads") == listed_by_script
    assert "TXT\nnotes.txt\n1.5 KB · text file" in listed_by_script
    assert "photo.png\n791 bytes · PNG image" in listed_by_script


def test_another_browser_sees_none_of_my_uploads(site: Site, page: Page, browser: Browser):
    """Without UPLOAD_AUTH each browser lists what it uploaded itself, never anyone else's."""
    page.goto(site.origin)
    page.set_input_files("#file-input", [payload("mine.txt", "text/plain", b"mine")])
    expect(page.locator("#uploads .upload")).to_have_count(1)
    context = browser.new_context()
    try:
        stranger = context.new_page()
        stranger.goto(site.origin)
        expect(stranger.locator("#uploads-empty")).to_be_visible()
        expect(stranger.locator("#uploads .upload")).to_have_count(0)
    finally:
        context.close()
    assert [upload["filename"] for upload in site.uploads()] == ["mine.txt"]


def test_protocol_panel_shows_the_last_exchange_with_the_signature_shortened(
    site: Site, page: Page
) -> None:
    cat = png(32, 32, SUN, SEA)
    page.goto(site.origin)
    expect(page.locator("#protocol")).not_to_have_attribute("open", "")
    page.set_input_files("#file-input", [payload("cat.png", "image/png", cat)])
    expect(page.locator("#uploads")).to_contain_text("cat.png")

    page.get_by_text("Protocol: what the last upload sent").click()

    fields = page.locator("#protocol-fields tr")
    expect(fields.last.locator("th")).to_have_text("file")
    expect(fields.last.locator("td")).to_have_text(f"cat.png ({len(cat)} bytes, always last)")
    signature = fields.filter(has_text="x-amz-signature").locator("td")
    expect(signature).to_have_text(re.compile(r"^[0-9a-f]{4}…[0-9a-f]{4}$"))
    expect(page.locator("#protocol-policy")).to_contain_text(
        '[ "content-length-range", 1, 10485760 ]'
    )
    expect(page.locator("#protocol-status")).to_have_text("HTTP 201 Created")
    expect(page.locator("#protocol-response")).to_contain_text("<PostResponse>")


def test_refuses_an_oversize_file_before_sending_anything(
    site: Site, page: Page, tmp_path: Path
) -> None:
    too_big = tmp_path / "holiday.mov"
    with too_big.open("wb") as file:
        file.truncate(site.config.max_bytes + 1)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(site.origin)
    page.set_input_files("#file-input", too_big)

    expect(row(page, "holiday.mov")).to_have_attribute("data-state", "refused")
    expect(row(page, "holiday.mov")).to_contain_text("This file is larger than the 10 MB limit.")
    assert not [url for url in requested if url.startswith(site.s3_origin)]
    assert not [url for url in requested if "/s3_credentials" in url]


def flip_last_hex_digit(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


def unknown_access_key(credential: str) -> str:
    return "AKIDUNKNOWN/" + credential.partition("/")[2]


# Each case edits one signed field on its way to the page, as a bug or an attacker would; the
# real local S3 then refuses the form, and the page shows S3's error code and a sentence for people.
TAMPERED_FIELDS = [
    pytest.param(
        "Content-Type",
        lambda _: "image/gif",
        "AccessDenied",
        "does not match the signed policy (Invalid according to Policy: Policy Condition failed",
        id="content-type-changed",
    ),
    pytest.param(
        "x-amz-signature",
        flip_last_hex_digit,
        "SignatureDoesNotMatch",
        "S3 signed the same string to sign as the app, so the key differs",
        id="signature-changed",
    ),
    pytest.param(
        "x-amz-credential",
        unknown_access_key,
        "InvalidAccessKeyId",
        "S3 does not know the access key AKIDUNKNOWN: check AWS_ACCESS_KEY_ID",
        id="unknown-access-key",
    ),
]


@pytest.mark.parametrize(("name", "change", "code", "sentence"), TAMPERED_FIELDS)
def test_shows_s3_error_code_when_s3_refuses_the_form(
    site: Site, page: Page, name: str, change: Callable[[str], str], code: str, sentence: str
) -> None:
    issued: list[str] = []

    def tampered_credentials(route: Route) -> None:
        form = route.fetch().json()
        form["fields"][name] = change(form["fields"][name])
        issued.append(form["key"])
        route.fulfill(json=form)

    page.route("**/s3_credentials?*", tampered_credentials)
    page.goto(site.origin)
    page.set_input_files("#file-input", [payload("cat.png", "image/png", png(32, 32, SUN, SEA))])

    expect(row(page, "cat.png")).to_have_attribute("data-state", "error")
    expect(row(page, "cat.png").locator(".error-code")).to_have_text(code)
    expect(row(page, "cat.png")).to_contain_text(sentence)
    page.click("#protocol summary")
    expect(page.locator("#protocol-response")).to_contain_text(f"<Code>{code}</Code>")
    assert site.read_object(issued[0]) is None


def test_s3_entity_too_large_is_explained_with_the_limit(site: Site, page: Page) -> None:
    """The form is re-signed with a 1 KB maximum the page does not know about, so S3's
    content-length-range condition is what refuses the file."""

    def form_signed_for_one_kilobyte(route: Route) -> None:
        form = route.fetch().json()
        smaller = signer.presigned_post(
            site.config.credentials,
            bucket=BUCKET,
            key=form["key"],
            region=REGION,
            endpoint=site.config.endpoint,
            max_bytes=1024,
            content_type="image/png",
        )
        route.fulfill(json={**form, **smaller})

    page.route("**/s3_credentials?*", form_signed_for_one_kilobyte)
    page.goto(site.origin)
    page.set_input_files("#file-input", [payload("poster.png", "image/png", os.urandom(1025))])

    expect(row(page, "poster.png").locator(".error-code")).to_have_text("EntityTooLarge")
    expect(row(page, "poster.png")).to_contain_text("This file is larger than the 10 MB limit.")


def test_network_error_names_the_s3_endpoint(site: Site, page: Page) -> None:
    page.route(site.s3_origin + "/**", lambda route: route.abort("connectionrefused"))
    page.goto(site.origin)
    page.set_input_files("#file-input", [payload("cat.png", "image/png", png(32, 32, SUN, SEA))])

    expect(row(page, "cat.png")).to_have_attribute("data-state", "error")
    expect(row(page, "cat.png")).to_contain_text("The file could not reach the storage server")
    page.click("#protocol summary")
    expect(page.locator("#protocol-status")).to_have_text(
        f"no answer from {site.s3_origin}: a network error, or its CORS rule refused this page"
    )


def test_cancel_stops_the_upload_and_leaves_no_object(
    site: Site, page: Page, tmp_path: Path
) -> None:
    large = tmp_path / "video.pdf"
    large.write_bytes(os.urandom(8 * 1024 * 1024))
    devtools = page.context.new_cdp_session(page)
    devtools.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 2_000_000},
    )
    page.goto(site.origin)
    with page.expect_response("**/s3_credentials?*") as credentials:
        page.set_input_files("#file-input", large)
    key = credentials.value.json()["key"]
    expect(row(page, "video.pdf").locator("progress")).not_to_have_attribute("value", "0")
    sending = re.compile(r"^[\d.]+ (MB|KB) of 8 MB · [\d.]+ MB/s · (\d+ min )?\d+ s left$")
    expect(row(page, "video.pdf").locator(".file-stats")).to_have_text(sending)

    def to_s3(request: Request) -> bool:
        return request.url.startswith(site.s3_origin)

    # 8 MB at 2 MB/s: the POST would end well within 10 s had the cancel not aborted it.
    with page.expect_event("requestfailed", to_s3, timeout=10_000) as aborted:
        page.get_by_role("button", name="Cancel video.pdf").click()

    assert aborted.value.failure == "net::ERR_ABORTED"
    expect(row(page, "video.pdf")).to_have_attribute("data-state", "cancelled")
    expect(row(page, "video.pdf").locator(".file-status")).to_have_text("Cancelled")
    expect(row(page, "video.pdf").locator(".file-stats")).to_be_hidden()
    assert site.read_object(key) is None
    assert site.uploads() == []


@pytest.mark.parametrize(
    ("upload_method", "stored", "expired"),
    [
        ("post", 201, "Invalid according to Policy: Policy expired."),
        ("put", 200, "<Message>Request has expired</Message>"),
    ],
)
def test_expired_policy_is_retried_once_with_a_fresh_one(
    site: Site, page: Page, stored: int, expired: str
) -> None:
    site.clock.advance(-(site.config.policy_ttl + 60))
    s3_answers: list[Response] = []
    signed: list[str] = []

    def record_s3_answer(response: Response) -> None:
        if response.request.method in ("POST", "PUT") and response.url.startswith(site.s3_origin):
            s3_answers.append(response)

    def sign_now_after_the_first_form(route: Route) -> None:
        signed.append(route.request.url)
        if len(signed) > 1:
            site.clock.offset = timedelta(0)
        route.continue_()

    page.on("response", record_s3_answer)
    page.route("**/s3_credentials?*", sign_now_after_the_first_form)
    page.goto(site.origin)
    page.set_input_files("#file-input", [payload("late.png", "image/png", png(32, 32, SKY, GRASS))])

    expect(page.locator("#uploads")).to_contain_text("late.png")
    assert len(signed) == 2
    assert [answer.status for answer in s3_answers] == [403, stored]
    assert "<Code>AccessDenied</Code>" in s3_answers[0].text()
    assert expired in s3_answers[0].text()


def test_files_dropped_on_the_zone_are_uploaded(site: Site, page: Page) -> None:
    """Headless Chromium cannot drag a file from the desktop, and a script-made DataTransfer has
    no file-system entries (which blueimp reads first), so the drop event carries the files alone.
    """
    page.goto(site.origin)
    page.evaluate(
        """() => {
            const file = new File(["hello"], "dropped.txt", { type: "text/plain" });
            const drop = new DragEvent("drop", { bubbles: true, cancelable: true });
            const dataTransfer = { files: [file], types: ["Files"] };
            Object.defineProperty(drop, "dataTransfer", { value: dataTransfer });
            document.getElementById("dropzone").dispatchEvent(drop);
        }"""
    )

    expect(page.locator("#uploads")).to_contain_text("dropped.txt")
    assert site.read_object(site.uploads()[0]["key"]) == b"hello"


def test_keyboard_reaches_the_labelled_file_input_first(site: Site, page: Page) -> None:
    page.goto(site.origin)
    page.wait_for_function("document.hasFocus()")  # a Tab before the window has focus is lost
    page.keyboard.press("Tab")

    focused = page.locator(":focus")
    expect(focused).to_have_id("file-input")
    expect(page.get_by_label("Choose files to upload")).to_have_attribute("multiple", "")
    expect(page.locator("#nojs-forms")).to_be_hidden()


# ---- Without JavaScript ------------------------------------------------------------------------


@pytest.fixture
def nojs_page(browser: Browser) -> Iterator[Page]:
    with checked_page(browser, java_script_enabled=False) as fresh:
        yield fresh


def upload_without_javascript(page: Page, kind: str, file: dict[str, Any]) -> None:
    """Pick a file in the form for `kind` ("PDFs"), press its Upload, wait for the way back."""
    form = page.get_by_role("group", name=kind)
    form.get_by_label("File").set_input_files([file])
    form.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"/\?(uploaded|error)="))


@pytest.mark.parametrize("upload_method", ["post", "put"])
def test_plain_form_uploads_without_javascript(site: Site, nojs_page: Page) -> None:
    """UPLOAD_METHOD=put too: without JavaScript a browser can only POST a form."""
    page = nojs_page
    content = b"%PDF-1.4\n" + os.urandom(50_000)
    page.set_viewport_size({"width": 320, "height": 640})
    page.goto(site.origin)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 320
    expect(page.locator("#upload-form")).to_be_hidden()
    expect(page.locator("#nojs-limits")).to_contain_text("One file at a time, up to 10 MB.")
    expect(page.locator("#nojs-limits")).to_contain_text("works for 60 minutes")
    upload_without_javascript(page, "PDFs", payload("scan.pdf", "application/pdf", content))

    key = parse_qs(urlsplit(page.url).query)["uploaded"][0]
    expect(page.locator(".notice")).to_have_text("Uploaded scan.pdf · open it")
    link = page.get_by_role("link", name="open it").get_attribute("href")
    with urllib.request.urlopen(link, timeout=5) as download:
        assert md5(download.read()) == md5(content)
    assert [upload["key"] for upload in site.uploads()] == [key]


def test_plain_form_stores_a_png_as_image_png_with_a_thumbnail(site: Site, nojs_page: Page) -> None:
    page = nojs_page
    page.goto(site.origin)
    page.get_by_role("group", name="Images").get_by_label("Kind").select_option("image/png")
    upload_without_javascript(page, "Images", payload("sea.png", "image/png", png(8, 8, SEA, SKY)))

    expect(page.locator(".notice")).to_have_text("Uploaded sea.png · open it")
    assert [upload["content_type"] for upload in site.uploads()] == ["image/png"]


def test_plain_form_refuses_and_deletes_a_file_that_is_not_its_kind(
    site: Site, nojs_page: Page
) -> None:
    page = nojs_page
    page.goto(site.origin)
    upload_without_javascript(page, "Images", payload("a.zip", "application/zip", b"PK\x03\x04"))

    expect(page.locator(".notice-error")).to_have_text(
        "Upload not recorded: the file's first bytes are not those of the kind of file its form "
        "was for, so it was deleted."
    )
    expect(page.locator("#uploads .upload")).to_have_count(0)
    assert site.uploads() == []


def test_page_never_contains_the_secret_key(site: Site, page: Page) -> None:
    page.goto(site.origin)
    html = page.content()
    secret = site.config.credentials.secret_key
    assert secret not in html


# ---- Both methods: POST forms and presigned PUTs ---------------------------------------------


@pytest.mark.parametrize("upload_method", ["post", "put"])
def test_uploads_through_each_method_straight_to_s3(
    site: Site, page: Page, upload_method: str
) -> None:
    files = [
        payload("harbour.png", "image/png", png(120, 80, SEA, SKY)),
        payload("rapport d'été.pdf", "application/pdf", b"%PDF-1.4\n" + os.urandom(200_000)),
        payload("notes.txt", "text/plain", "Bonjour, résumé\n".encode()),  # no charset added
    ]
    sent: list[str] = []
    page.on(
        "request",
        lambda request: (
            sent.append(request.method) if request.url.startswith(site.s3_origin) else None
        ),
    )
    page.goto(site.origin)
    page.set_input_files("#file-input", files)

    expect(page.locator("#overall-label")).to_have_text("3 of 3 uploaded")
    for upload in files:
        expect(page.locator("#uploads")).to_contain_text(upload["name"])
    assert [method for method in sent if method in ("POST", "PUT")] == [upload_method.upper()] * 3
    stored = {upload["filename"]: upload for upload in site.uploads()}
    for upload in files:
        record = stored[upload["name"]]
        assert record["content_type"] == upload["mimeType"]
        assert md5(site.read_object(record["key"])) == md5(upload["buffer"]) == record["etag"]
        assert "Content-Disposition" not in site.object_headers(record["key"])


@pytest.mark.parametrize("upload_method", ["put"])
def test_protocol_panel_shows_a_puts_signed_headers_and_canonical_request(
    site: Site, page: Page
) -> None:
    cat = png(32, 32, SUN, SEA)
    page.goto(site.origin)
    page.set_input_files("#file-input", [payload("cat.png", "image/png", cat)])
    expect(page.locator("#uploads")).to_contain_text("cat.png")
    page.click("#protocol summary")

    expect(page.locator("#protocol-method")).to_have_text("Signed headers, PUT")
    fields = page.locator("#protocol-fields tr")
    expect(fields.first).to_have_text(f"Content-Length{len(cat)}")
    expect(fields.last.locator("td")).to_have_text(f"cat.png ({len(cat)} bytes, the body)")
    expect(page.locator("#protocol-policy")).to_contain_text(
        f"content-length:{len(cat)}\ncontent-type:image/png\nhost:"
    )
    expect(page.locator("#protocol-status")).to_have_text("HTTP 200 OK")


def tampered_put_type(route: Route) -> None:
    """The signing answer with another Content-Type to send than the one signed."""
    answer = route.fetch().json()
    answer["headers"]["Content-Type"] = "image/gif"
    route.fulfill(json=answer)


def tampered_post_policy(route: Route) -> None:
    """The form on its way to S3 with its policy's expiry a second later: same signature."""
    body = route.request.post_data_buffer
    policy = re.search(rb'name="policy"\r\n\r\n([A-Za-z0-9+/=]+)\r\n', body)[1]
    decoded = json.loads(base64.b64decode(policy))
    decoded["expiration"] = decoded["expiration"].replace(".000Z", ".001Z")
    changed = signer.policy_base64(decoded).encode()
    route.continue_(post_data=body.replace(policy, changed))


@pytest.mark.parametrize(
    ("upload_method", "name", "ours", "theirs"),
    [("put", "canonical request", "png", "gif"), ("post", "string to sign", None, None)],
)
def test_signature_mismatch_highlights_where_s3s_signed_text_differs_from_ours(
    site: Site, page: Page, upload_method: str, name: str, ours: str | None, theirs: str | None
) -> None:
    if upload_method == "put":
        page.route("**/s3_credentials?*", tampered_put_type)
    else:
        page.route(site.s3_origin + "/**", tampered_post_policy)
    page.goto(site.origin)
    page.set_input_files("#file-input", [payload("cat.png", "image/png", png(32, 32, SUN, SEA))])

    expect(row(page, "cat.png").locator(".error-code")).to_have_text("SignatureDoesNotMatch")
    expect(row(page, "cat.png")).to_contain_text(f"S3 signed a different {name} than the app did")
    page.click("#protocol summary")
    expect(page.locator("#protocol-compare")).to_be_visible()
    expect(page.locator("#protocol-compare-name")).to_have_text(name)
    expect(page.locator("#protocol-compare-verdict")).to_contain_text("They differ from character")
    our_mark = page.locator("#protocol-ours mark").inner_text()
    their_mark = page.locator("#protocol-theirs mark").inner_text()
    assert our_mark != their_mark
    if ours:
        assert (our_mark, their_mark) == (ours, theirs)
    error = ET.fromstring(page.locator("#protocol-response").inner_text())
    element = "CanonicalRequest" if upload_method == "put" else "StringToSign"
    assert page.locator("#protocol-theirs").inner_text() == error.findtext(element)
    assert site.uploads() == []
