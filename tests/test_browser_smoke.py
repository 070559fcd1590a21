"""Proves the browser toolchain: Debian's Chromium, driven by Playwright, against a local server."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Browser

PAGE = b"""<!doctype html>
<title>smoke</title>
<button id="go" onclick="this.textContent = 'clicked'">click me</button>
"""


class PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean; failures are reported by the assertions."""


@pytest.fixture
def page_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.browser
def test_button_click_runs_inline_script(browser: Browser, page_url: str) -> None:
    page = browser.new_page()
    try:
        page.goto(page_url)
        assert page.text_content("#go") == "click me"
        page.click("#go")
        assert page.text_content("#go") == "clicked"
    finally:
        page.close()
