"""The page as people meet it: failures they can recover from, honest totals, the keyboard,
a phone's width, a screen reader, and axe-core's accessibility rules.

Failures are forced with Playwright's request routing (an aborted S3 POST or registration, a
429 with Retry-After); the app and the embedded local S3 are real, as in test_browser.
"""

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect
from test_browser import (
    GRASS,
    SEA,
    SKY,
    SUN,
    Site,
    checked_page,
    page,
    payload,
    png,
    row,
    site,
)

from rate_limit import RateLimit

__all__ = ["page", "site"]  # fixtures from test_browser, used by name below
pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
DOCS = ROOT / "docs"
PHONE, DESKTOP = 320, 1280
WIDTHS = [pytest.param(DESKTOP, id="1280px"), pytest.param(PHONE, id="320px")]


def cat(name: str = "cat.png") -> dict[str, Any]:
    return payload(name, "image/png", png(16, 16, SUN, SEA))


def fail_first(times: int, failure: Callable[[Route], None]) -> Callable[[Route], None]:
    """A route handler that answers the first `times` requests with `failure`, then lets the
    rest through."""
    seen = []

    def handle(route: Route) -> None:
        seen.append(route.request.url)
        if len(seen) <= times:
            failure(route)
        else:
            route.continue_()

    return handle


def abort(route: Route) -> None:
    route.abort("connectionreset")


def abort_registrations(times: int) -> Callable[[Route], None]:
    """Aborts the first `times` POST /uploads; GET /uploads (the list) goes through."""
    aborted = fail_first(times, abort)

    def handle(route: Route) -> None:
        if route.request.method == "POST":
            aborted(route)
        else:
            route.continue_()

    return handle


def pending_registrations(page: Page) -> list[dict[str, Any]]:
    stored = page.evaluate("() => localStorage.getItem('s3-upload.pending-registrations')")
    return json.loads(stored or "[]")


def focused_name(page: Page) -> str:
    return page.evaluate("() => document.activeElement.getAttribute('aria-label') || ''")


# ---- 1. Registration survives a lost connection and a reload ---------------------------------


def test_registration_lost_to_the_network_is_retried_until_listed(site: Site, page: Page) -> None:
    page.clock.install()
    page.route("**/uploads", abort_registrations(1))
    page.goto(site.origin)
    page.set_input_files("#file-input", [cat()])

    expect(row(page, "cat.png")).to_contain_text("Stored in S3, but not recorded yet")
    expect(row(page, "cat.png")).to_contain_text("Trying again in 1 s…")
    assert site.uploads() == []
    page.clock.run_for(1000)
    expect(page.locator("#uploads")).to_contain_text("cat.png")
    assert [upload["filename"] for upload in site.uploads()] == ["cat.png"]
    assert pending_registrations(page) == []


def test_registration_pending_at_a_reload_is_sent_when_the_page_comes_back(
    site: Site, page: Page
) -> None:
    page.route("**/uploads", abort_registrations(100))
    page.goto(site.origin)
    page.set_input_files("#file-input", [cat("kept.png")])
    expect(row(page, "kept.png")).to_contain_text("Trying again in")
    [pending] = pending_registrations(page)
    assert pending["filename"] == "kept.png"
    assert site.uploads() == []

    page.unroute("**/uploads")
    page.reload()

    expect(page.locator("#uploads")).to_contain_text("kept.png")
    assert [upload["key"] for upload in site.uploads()] == [pending["key"]]
    assert pending_registrations(page) == []


def test_registration_that_keeps_failing_stops_and_retry_records_without_resending(
    site: Site, page: Page
) -> None:
    s3_posts: list[str] = []
    page.on(
        "request",
        lambda request: (
            s3_posts.append(request.url)
            if request.method == "POST" and request.url.startswith(site.s3_origin)
            else None
        ),
    )
    registration_given_up(site, page)

    page.unroute("**/uploads")
    page.get_by_role("button", name="Retry cat.png").click()

    expect(page.locator("#uploads")).to_contain_text("cat.png")
    assert len(s3_posts) == 1
    assert pending_registrations(page) == []


def registration_given_up(site: Site, page: Page) -> None:
    """Upload cat.png while every registration is lost, through the whole backoff, on the
    page's fake clock, until the page stops trying."""
    page.clock.install()
    page.route("**/uploads", abort_registrations(100))
    page.goto(site.origin)
    page.set_input_files("#file-input", [cat()])
    for seconds in (1, 2, 4, 8, 16, 30):
        expect(row(page, "cat.png")).to_contain_text(f"Trying again in {seconds} s…")
        page.clock.run_for(seconds * 1000)
    expect(row(page, "cat.png")).to_have_attribute("data-state", "error")
    expect(row(page, "cat.png")).to_contain_text("It is tried again when you press Retry")
    assert len(pending_registrations(page)) == 1


def test_removing_an_unrecorded_upload_stops_it_coming_back(site: Site, page: Page) -> None:
    registration_given_up(site, page)
    page.get_by_role("button", name="Remove cat.png").click()

    assert pending_registrations(page) == []
    page.unroute("**/uploads")
    page.reload()
    expect(page.locator("#queue .file")).to_have_count(0)
    assert site.uploads() == []


def test_registration_refused_by_the_app_is_not_retried(site: Site, page: Page) -> None:
    def wrong_token(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        body = json.loads(route.request.post_data)
        route.continue_(post_data=json.dumps({**body, "token": "forged"}))

    page.route("**/uploads", wrong_token)
    page.goto(site.origin)
    page.set_input_files("#file-input", [cat()])

    expect(row(page, "cat.png")).to_have_attribute("data-state", "error")
    expect(row(page, "cat.png")).to_contain_text("This key was not issued by this server.")
    assert pending_registrations(page) == []


# ---- 2. Retry, Remove, and the rate limit as a wait ------------------------------------------


def test_rate_limited_file_counts_down_and_goes_on_by_itself(site: Site, page: Page) -> None:
    def too_many(route: Route) -> None:
        route.fulfill(
            status=429,
            headers={"Retry-After": "2"},
            json={"error": "Too many upload requests; wait and try again."},
        )

    page.clock.install()
    page.route("**/s3_credentials?*", fail_first(1, too_many))
    page.goto(site.origin)
    page.set_input_files("#file-input", [cat()])

    expect(row(page, "cat.png")).to_have_attribute("data-state", "waiting")
    expect(row(page, "cat.png")).to_contain_text("Going on in 2 s…")
    page.clock.run_for(1000)
    expect(row(page, "cat.png")).to_contain_text("Going on in 1 s…")
    page.clock.run_for(1000)
    expect(page.locator("#uploads")).to_contain_text("cat.png")
    expect(page.locator("#overall-label")).to_have_text("1 of 1 uploaded")


def test_the_apps_own_rate_limit_is_waited_out_and_nothing_fails(site: Site, page: Page) -> None:
    """The real limiter, at 3 forms a minute: the page's own no-JavaScript forms count as one,
    two files get theirs, the third waits for its Retry-After. The app's clock and the page's
    are moved on together, so the minute passes at once."""
    site.change_settings(rate_limit=RateLimit(3, 60))
    page.clock.install()
    page.goto(site.origin)
    page.set_input_files("#file-input", [cat("a.png"), cat("b.png"), cat("c.png")])

    expect(page.locator("#overall-label")).to_have_text("2 of 3 uploaded, 1 waiting")
    waiting = page.locator('#queue .file[data-state="waiting"]')
    expect(waiting).to_contain_text(re.compile(r"Going on in (59|60) s…"))
    site.clock.advance(60)
    page.clock.run_for(60_000)

    expect(page.locator("#overall-label")).to_have_text("3 of 3 uploaded")
    assert len(site.uploads()) == 3


def test_cancel_during_the_rate_limit_wait_stops_the_countdown(site: Site, page: Page) -> None:
    def too_many(route: Route) -> None:
        route.fulfill(status=429, headers={"Retry-After": "5"}, json={"error": "Too many."})

    page.clock.install()
    page.route("**/s3_credentials?*", too_many)
    page.goto(site.origin)
    page.set_input_files("#file-input", [cat()])
    expect(row(page, "cat.png")).to_contain_text("Going on in 5 s…")

    page.get_by_role("button", name="Cancel cat.png").click()
    page.clock.run_for(10_000)

    expect(row(page, "cat.png").locator(".file-status")).to_have_text("Cancelled")
    expect(page.locator("#overall-label")).to_have_text("0 of 1 uploaded, 1 cancelled")


@pytest.mark.parametrize("width", WIDTHS)
def test_failed_upload_is_retried_with_the_keyboard(site: Site, page: Page, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 800})
    page.route(site.s3_origin + "/**", fail_first(1, abort))
    page.goto(site.origin)
    page.set_input_files("#file-input", [cat()])
    expect(row(page, "cat.png")).to_have_attribute("data-state", "error")
    expect(page.locator("#overall-label")).to_have_text("0 of 1 uploaded, 1 failed")

    page.focus("#file-input")
    page.keyboard.press("Tab")
    assert focused_name(page) == "Retry cat.png"
    page.keyboard.press("Enter")

    expect(page.locator("#uploads")).to_contain_text("cat.png")
    expect(page.locator("#overall-label")).to_have_text("1 of 1 uploaded")
    expect(page.locator("#overall-percent")).to_have_text("100%")


@pytest.mark.parametrize("width", WIDTHS)
def test_cancel_with_the_keyboard_moves_focus_to_retry_then_remove_to_the_input(
    site: Site, page: Page, width: int
) -> None:
    page.set_viewport_size({"width": width, "height": 800})
    page.route(site.s3_origin + "/**", lambda route: None)  # S3 never answers
    page.goto(site.origin)
    page.set_input_files("#file-input", [cat()])
    expect(row(page, "cat.png").locator(".file-status")).to_have_text("Uploading…")
    expect(row(page, "cat.png").locator(".file-stats")).to_contain_text("0.0 MB/s")
    assert scroll_width(page) <= width

    page.focus("#file-input")
    page.keyboard.press("Tab")
    assert focused_name(page) == "Cancel cat.png"
    page.keyboard.press("Enter")

    expect(row(page, "cat.png")).to_have_attribute("data-state", "cancelled")
    assert focused_name(page) == "Retry cat.png"
    expect(page.locator("#overall-label")).to_have_text("0 of 1 uploaded, 1 cancelled")
    page.keyboard.press("Tab")
    assert focused_name(page) == "Remove cat.png"
    page.keyboard.press("Enter")

    expect(page.locator("#queue .file")).to_have_count(0)
    expect(page.locator("#file-input")).to_be_focused()
    assert site.uploads() == []


# ---- 3. The overall bar counts what happened --------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
def test_overall_summary_counts_the_failed_file_and_is_announced_once(
    site: Site, page: Page, width: int
) -> None:
    """Also the README's screenshots, with UPDATE_SCREENSHOT=1: desktop and phone."""

    def abort_the_sunset(route: Route) -> None:
        if b"sunset.png" in (route.request.post_data_buffer or b""):
            route.abort("connectionreset")
        else:
            route.continue_()

    page.set_viewport_size({"width": width, "height": 800})
    page.route(site.s3_origin + "/**", abort_the_sunset)
    page.goto(site.origin)
    files = [
        payload("harbour.png", "image/png", png(120, 80, SEA, SKY)),
        payload("sunset.png", "image/png", png(120, 80, SUN, SEA)),
        payload("meadow.png", "image/png", png(120, 80, GRASS, SUN)),
    ]
    page.set_input_files("#file-input", files)

    expect(page.locator("#overall-label")).to_have_text("2 of 3 uploaded, 1 failed")
    expect(page.locator("#overall-percent")).not_to_have_text("100%")
    expect(page.locator("#announcer")).to_have_text(
        "2 of 3 uploaded, 1 failed. The list of uploaded files has 2 files."
    )
    expect(page.locator("[aria-live], [role=status], [role=alert]")).to_have_count(1)
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        name = "screenshot.png" if width == DESKTOP else "screenshot-phone.png"
        page.screenshot(path=DOCS / name, full_page=True)


# ---- 5. A phone's width ----------------------------------------------------------------------


def scroll_width(page: Page) -> int:
    return page.evaluate("() => document.documentElement.scrollWidth")


def test_nothing_overflows_at_320px_and_the_list_shows_a_page_at_a_time(
    site: Site, page: Page
) -> None:
    page.set_viewport_size({"width": PHONE, "height": 640})
    names = [f"note-{number:02}.txt" for number in range(14)]
    page.goto(site.origin)
    assert scroll_width(page) <= PHONE
    page.set_input_files(
        "#file-input", [payload(name, "text/plain", name.encode()) for name in names]
    )
    expect(page.locator("#overall-label")).to_have_text("14 of 14 uploaded")
    page.click("#protocol summary")

    assert scroll_width(page) <= PHONE
    expect(page.locator("#uploads .upload:visible")).to_have_count(12)
    assert page.locator("#uploads").bounding_box()["height"] < 1000
    page.get_by_role("button", name="Show 2 more (14 in all)").click()
    expect(page.locator("#uploads .upload:visible")).to_have_count(14)
    expect(page.locator("#uploads-more")).to_be_hidden()


# ---- 6 and 7. Words for people, said once ----------------------------------------------------


def test_refused_file_is_explained_in_words_and_announced(site: Site, page: Page) -> None:
    page.goto(site.origin)
    expect(page.locator("#limits")).to_have_text("Images, PDFs and text files, up to 10 MB each")
    page.set_input_files("#file-input", [payload("archive.zip", "application/zip", b"PK\x03\x04")])

    expected = "This kind of file is not accepted here: only images, PDFs and text files."
    expect(row(page, "archive.zip")).to_have_attribute("data-state", "refused")
    expect(row(page, "archive.zip").locator(".file-status")).to_have_text(f"Not sent. {expected}")
    expect(page.locator("#announcer")).to_contain_text(f"archive.zip was not sent. {expected}")
    expect(row(page, "archive.zip").get_by_role("button", name="Retry archive.zip")).to_be_hidden()


def test_the_same_file_chosen_twice_is_refused(site: Site, page: Page, tmp_path: Path) -> None:
    """A file from disk, so both choices carry its modification time, as a real pick would."""
    picture = tmp_path / "cat.png"
    picture.write_bytes(png(16, 16, SUN, SEA))
    site.change_settings(auto_start=False)
    page.goto(site.origin)
    page.set_input_files("#file-input", picture)
    page.set_input_files("#file-input", picture)

    expect(page.locator("#queue .file")).to_have_count(1)
    expect(page.locator("#announcer")).to_have_text(
        "cat.png is already chosen; it was not added again."
    )


# ---- 8. Review, then start; previews; paste ---------------------------------------------------


def test_review_then_start_shows_previews_and_starts_all(site: Site, page: Page) -> None:
    site.change_settings(auto_start=False)
    page.goto(site.origin)
    page.set_input_files("#file-input", [cat("a.png"), payload("b.txt", "text/plain", b"b")])

    expect(page.locator("#overall-label")).to_have_text("0 of 2 uploaded, 2 ready to start")
    preview = row(page, "a.png").locator("img.thumb")
    expect(preview).to_have_attribute("src", re.compile(r"^blob:"))
    expect(row(page, "b.txt").locator(".thumb-file")).to_have_text("TXT")
    assert site.uploads() == []
    blob_url = preview.get_attribute("src")

    page.get_by_role("button", name="Start all").click()

    expect(page.locator("#overall-label")).to_have_text("2 of 2 uploaded")
    assert sorted(upload["filename"] for upload in site.uploads()) == ["a.png", "b.txt"]
    expect(page.locator("#queue .file")).to_have_count(0)
    revoked = """url => new Promise((resolve) => {
        const image = new Image();
        image.onload = () => resolve(false);
        image.onerror = () => resolve(true);
        image.src = url;
    })"""
    assert page.evaluate(revoked, blob_url), "the preview's object URL was not revoked"


def test_one_file_started_by_its_own_button(site: Site, page: Page) -> None:
    site.change_settings(auto_start=False)
    page.goto(site.origin)
    page.set_input_files("#file-input", [cat("first.png"), cat("second.png")])
    page.get_by_role("button", name="Start first.png").click()

    expect(page.locator("#uploads")).to_contain_text("first.png")
    expect(row(page, "second.png")).to_have_attribute("data-state", "ready")
    expect(page.locator("#overall-label")).to_have_text("1 of 2 uploaded, 1 ready to start")


def test_a_file_pasted_from_the_clipboard_is_uploaded(site: Site, page: Page) -> None:
    page.goto(site.origin)
    page.evaluate(
        """() => {
            const clipboard = new DataTransfer();
            clipboard.items.add(new File(["pasted"], "pasted.txt", { type: "text/plain" }));
            const paste = new ClipboardEvent("paste", { clipboardData: clipboard, bubbles: true });
            document.body.dispatchEvent(paste);
        }"""
    )

    expect(page.locator("#uploads")).to_contain_text("pasted.txt")
    assert site.read_object(site.uploads()[0]["key"]) == b"pasted"


# ---- axe-core: no violations at either width, before and after uploads ------------------------


@pytest.fixture
def axe_page(browser: Browser) -> Iterator[Page]:
    """A page that lets a test inject axe-core: the app's CSP allows only its own scripts."""
    with checked_page(browser, bypass_csp=True) as fresh:
        yield fresh


def axe_violations(page: Page) -> list[str]:
    page.add_script_tag(path=AXE)
    result = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    return [
        f"{violation['id']}: {[node['target'] for node in violation['nodes']]}"
        for violation in result["violations"]
    ]


@pytest.mark.parametrize("width", WIDTHS)
def test_axe_finds_no_violations_before_and_after_uploads(
    site: Site, axe_page: Page, width: int
) -> None:
    page = axe_page
    page.set_viewport_size({"width": width, "height": 800})
    page.goto(site.origin)
    assert axe_violations(page) == []

    page.route(site.s3_origin + "/**", fail_first(1, abort))
    page.set_input_files(
        "#file-input",
        [
            payload("broken.png", "image/png", png(24, 24, GRASS, SKY)),
            payload("archive.zip", "application/zip", b"PK"),
        ],
    )
    expect(row(page, "broken.png")).to_have_attribute("data-state", "error")
    page.set_input_files("#file-input", [cat("fine.png")])
    expect(page.locator("#uploads")).to_contain_text("fine.png")
    page.route(site.s3_origin + "/**", lambda route: None)  # one more, still on its way
    page.set_input_files("#file-input", [cat("sending.png")])
    expect(row(page, "sending.png").locator(".file-stats")).to_be_visible()
    page.click("#protocol summary")

    assert axe_violations(page) == []
    page.evaluate(
        """() => {
            document.getElementById("upload-form").hidden = true;
            document.getElementById("nojs-forms").hidden = false;
        }"""
    )
    assert axe_violations(page) == [], "the forms shown without JavaScript"
