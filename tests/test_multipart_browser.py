"""Large files in parts, in headless Chromium against the app and the embedded local S3: parallel
parts, a reload resumed, a part retried, cancel, and a file over the limit."""

from __future__ import annotations

import hashlib
import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Page, Request, Route, expect
from test_browser import Site, page, row, site

import s3_client
import s3_rules

__all__ = ["page", "site"]  # fixtures from test_browser, used by name below
pytestmark = pytest.mark.browser

MiB = s3_rules.MiB
URLS_PER_REQUEST = 20  # multipart.js asks the app for this many part URLs at a time
PART = re.compile(r"[?&]partNumber=(\d+)&")


@pytest.fixture
def app_environ() -> dict[str, str]:
    """Files over 5 MiB go in parts of S3's 5 MiB minimum; at most 128 MiB, room for the
    page's second batch of part URLs (the page asks for 20 at a time)."""
    return {
        "UPLOAD_MULTIPART_THRESHOLD": str(5 * MiB),
        "UPLOAD_PART_SIZE": str(5 * MiB),
        "UPLOAD_MAX_BYTES": str(128 * MiB),
    }


def big_file(folder: Path, name: str, size: int) -> Path:
    """A file on disk, so its date stays the same when it is chosen again (resume knows it)."""
    path = folder / name
    block = os.urandom(MiB)
    with path.open("wb") as file:
        for offset in range(0, size, MiB):
            file.write(block[: min(MiB, size - offset)])
    return path


def part_number(request: Request) -> int | None:
    match = PART.search(request.url) if request.method == "PUT" else None
    return int(match[1]) if match else None


def parts_sent(page: Page) -> list[int]:
    """The part numbers the page PUTs to S3, in order, as they are sent."""
    sent: list[int] = []
    page.on("request", lambda r: sent.append(n) if (n := part_number(r)) else None)
    return sent


def url_batches(page: Page) -> list[list[int]]:
    """The part numbers of each POST /multipart/urls the page sends, in order."""
    batches: list[list[int]] = []

    def note(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/multipart/urls"):
            batches.append(request.post_data_json["parts"])

    page.on("request", note)
    return batches


def until(page: Page, condition, what: str, timeout_ms: int = 30_000) -> None:
    """Waits on the page's own clock, so Playwright keeps delivering the page's events."""
    for _ in range(timeout_ms // 50):
        if condition():
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"never happened: {what}")


def speed(stats: str | None) -> float:
    """The MB/s figure of a row's line "10 MB of 15 MB · 12.5 MB/s · 1 s left"."""
    return float(re.search(r"([\d.]+) MB/s", stats or "")[1])


def in_progress(site: Site) -> list[str]:
    return [u.key for u in s3_client.list_multipart_uploads(site.config, "", datetime.now(UTC))]


def stored_md5(site: Site, filename: str) -> str:
    (record,) = [upload for upload in site.uploads() if upload["filename"] == filename]
    return hashlib.md5(site.read_object(record["key"])).hexdigest()


def test_three_files_go_at_once_in_parallel_parts(site: Site, page: Page, tmp_path) -> None:
    files = [big_file(tmp_path, f"video-{n}.pdf", 20 * MiB) for n in range(3)]
    sent = parts_sent(page)
    page.goto(site.origin)
    page.set_input_files("#file-input", [str(path) for path in files])

    expect(page.locator("#overall-label")).to_have_text("3 of 3 uploaded", timeout=60_000)
    for path in files:
        expect(page.locator("#uploads")).to_contain_text(path.name)
        assert stored_md5(site, path.name) == hashlib.md5(path.read_bytes()).hexdigest()
    assert sorted(sent) == sorted([1, 2, 3, 4] * 3)
    assert {u["etag"].rpartition("-")[2] for u in site.uploads()} == {"4"}
    assert in_progress(site) == []


def parts_numbered(digits: str) -> re.Pattern:
    return re.compile(rf".*[?&]partNumber=[{digits}]&.*")


def hold_parts(page: Page, digits: str) -> list[Route]:
    """The PUTs of parts numbered with one of `digits` are held, never answered: the parts a
    page has in flight when it is closed."""
    held: list[Route] = []
    page.route(parts_numbered(digits), lambda route: held.append(route))
    return held


def test_a_reload_in_the_middle_resumes_and_sends_only_the_missing_parts(
    site: Site, page: Page, tmp_path
) -> None:
    path = big_file(tmp_path, "film.pdf", 20 * MiB)
    held = hold_parts(page, "34")
    stored: list[int] = []
    page.on("requestfinished", lambda r: stored.append(n) if (n := part_number(r)) else None)
    page.goto(site.origin)
    page.set_input_files("#file-input", str(path))
    until(page, lambda: sorted(stored) == [1, 2] and len(held) == 2, "parts 1 and 2 stored")

    page.reload()  # the held parts die with the page, as in a closed laptop
    page.unroute(parts_numbered("34"))
    sent = parts_sent(page)
    asked = url_batches(page)
    page.set_input_files("#file-input", str(path))

    expect(page.locator("#uploads")).to_contain_text("film.pdf", timeout=30_000)
    assert sorted(sent) == [3, 4]
    assert asked == [[3, 4]]
    assert stored_md5(site, "film.pdf") == hashlib.md5(path.read_bytes()).hexdigest()


def test_the_row_shows_speed_and_time_left_and_a_resume_counts_stored_parts_only_as_progress(
    site: Site, page: Page, tmp_path
) -> None:
    path = big_file(tmp_path, "talk.pdf", 15 * MiB)
    hold_parts(page, "3")
    page.goto(site.origin)
    page.set_input_files("#file-input", str(path))
    stats = row(page, "talk.pdf").locator(".file-stats")
    expect(stats).to_have_text(re.compile(r"^10 MB of 15 MB · \d+\.\d MB/s · \d+ s left$"))
    assert speed(stats.text_content()) > 0

    page.reload()  # parts 1 and 2 are in S3; part 3 stays held
    page.set_input_files("#file-input", str(path))

    expect(row(page, "talk.pdf").locator("progress")).to_have_attribute("value", "66")
    expect(stats).to_have_text("10 MB of 15 MB · 0.0 MB/s · time left: calculating")
    row(page, "talk.pdf").get_by_role("button", name="Cancel").click()
    expect(stats).to_be_hidden()


def test_part_urls_come_in_shared_batches_asked_for_before_they_run_out(
    site: Site, page: Page, tmp_path
) -> None:
    """Four parts at a time need one request per batch of URLs, not one per part waiting; the
    next batch is asked for while the last URLs of this one are still unused."""
    path = big_file(tmp_path, "long.pdf", URLS_PER_REQUEST * 5 * MiB + 1)  # one more part
    parts = URLS_PER_REQUEST + 1
    sent = parts_sent(page)
    asked = url_batches(page)
    sent_when_asked: list[int] = []  # parts sent when each batch was asked for
    page.on("request", lambda r: r.url.endswith("/urls") and sent_when_asked.append(len(sent)))
    page.goto(site.origin)
    page.set_input_files("#file-input", str(path))

    expect(page.locator("#uploads")).to_contain_text("long.pdf", timeout=60_000)
    assert len(asked) == math.ceil(parts / URLS_PER_REQUEST)
    numbers = [number for batch in asked for number in batch]
    assert sorted(numbers) == list(range(1, parts + 1))  # none asked for twice
    assert sent_when_asked[1] < URLS_PER_REQUEST, "the parts waited for the second batch"
    assert stored_md5(site, "long.pdf") == hashlib.md5(path.read_bytes()).hexdigest()


def test_a_part_that_fails_twice_is_sent_again_and_the_file_completes(
    site: Site, page: Page, tmp_path
) -> None:
    path = big_file(tmp_path, "flaky.pdf", 11 * MiB)
    tries: list[int] = []

    def fail_twice(route: Route) -> None:
        tries.append(1)
        route.abort() if len(tries) <= 2 else route.continue_()

    page.route(re.compile(r".*[?&]partNumber=2&.*"), fail_twice)
    page.goto(site.origin)
    page.set_input_files("#file-input", str(path))

    expect(page.locator("#uploads")).to_contain_text("flaky.pdf", timeout=30_000)
    assert len(tries) == 3
    assert stored_md5(site, "flaky.pdf") == hashlib.md5(path.read_bytes()).hexdigest()


def test_cancel_aborts_the_upload_and_s3_keeps_no_part(site: Site, page: Page, tmp_path) -> None:
    path = big_file(tmp_path, "cancelled.pdf", 11 * MiB)
    held: list[Route] = []
    page.route(re.compile(r".*[?&]partNumber=.*"), lambda route: held.append(route))
    page.goto(site.origin)
    page.set_input_files("#file-input", str(path))
    until(page, lambda: len(held) == 3, "every part on its way")
    assert len(in_progress(site)) == 1

    row(page, "cancelled.pdf").get_by_role("button", name="Cancel").press("Enter")

    expect(row(page, "cancelled.pdf")).to_have_attribute("data-state", "cancelled")
    until(page, lambda: in_progress(site) == [], "the upload aborted in S3")
    assert site.uploads() == []


def test_a_file_over_the_limit_is_refused_before_any_part_is_sent(
    site: Site, page: Page, tmp_path
) -> None:
    path = tmp_path / "huge.pdf"
    with path.open("wb") as file:
        file.truncate(128 * MiB + 1)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.method in ("POST", "PUT") else None)
    page.goto(site.origin)
    page.set_input_files("#file-input", str(path))

    expect(row(page, "huge.pdf")).to_have_attribute("data-state", "refused")
    expect(row(page, "huge.pdf")).to_contain_text("larger than the 128 MB limit")
    assert asked == []
    assert in_progress(site) == []
