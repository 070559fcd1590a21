"""The page when S3 or the app never answers: a clear message on the row, not a hang.

Requests are held by a Playwright route that never replies (a black-holed network), and the
page's clock is fast-forwarded past its timeouts, so no test waits 30 real seconds.
"""

import pytest
from playwright.sync_api import Page, Route, expect
from test_browser import SEA, SUN, Site, page, payload, png, row, site

__all__ = ["page", "site"]  # fixtures from test_browser, used by name below
pytestmark = pytest.mark.browser


def hold(route: Route) -> None:
    """Never answer: the request stays pending, as behind a dead proxy."""


def test_s3_that_never_answers_is_reported_after_thirty_seconds(site: Site, page: Page) -> None:
    page.clock.install()
    page.route(site.s3_origin + "/**", hold)
    page.goto(site.origin)
    page.set_input_files("#file-input", [payload("cat.png", "image/png", png(16, 16, SUN, SEA))])
    expect(row(page, "cat.png").locator(".file-status")).to_have_text("Uploading…")

    page.clock.run_for("00:29")
    expect(row(page, "cat.png")).to_have_attribute("data-state", "working")
    page.clock.run_for("00:02")

    expect(row(page, "cat.png")).to_have_attribute("data-state", "error")
    expect(row(page, "cat.png").locator(".file-status")).to_have_text(
        f"S3 at {site.s3_origin} stopped answering (nothing for 30 s); try again."
    )
    assert site.uploads() == []


def test_app_that_never_answers_is_reported_after_thirty_seconds(site: Site, page: Page) -> None:
    page.clock.install()
    page.route("**/s3_credentials?*", hold)
    page.goto(site.origin)
    page.set_input_files("#file-input", [payload("cat.png", "image/png", png(16, 16, SUN, SEA))])
    expect(row(page, "cat.png").locator(".file-status")).to_have_text("Signing…")

    page.clock.run_for("00:31")

    expect(row(page, "cat.png")).to_have_attribute("data-state", "error")
    expect(row(page, "cat.png").locator(".file-status")).to_have_text(
        "The app did not answer within 30 s; try again."
    )
