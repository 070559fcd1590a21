"""A 200 MB upload through the page in headless Chromium, against `curl -F` of the same file.

The app (server.create_app) and the embedded local S3 listen on loopback, as in
tests/test_browser.py. Chromium loads the page and uploads the file the way a person would;
curl posts the same file, with a form the app signed, to the same local S3 endpoint. The
page's time runs from choosing the file to the row showing "done", so it includes asking the
app for a form, the upload itself and reporting it (S3 HEAD check); the upload alone is also
printed. Target: page <= 1.3x curl.

It also counts every byte the app's server read from its sockets while 100 MB went through
the page: the app must see only the small JSON requests, never the file.

    .venv/bin/python bench/bench_browser.py [--size-mb 200] [--runs 7] [--method post|put]

With `--method put` the app runs with UPLOAD_METHOD=put: the page, the bare fetch() and curl
(`curl -T`) all send a presigned PUT with the signed headers instead of a form.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402 (the suite's own browser settings)

import embedded  # noqa: E402
import server  # noqa: E402
import serving  # noqa: E402
from settings import Config  # noqa: E402

MB = 1024 * 1024
TOKEN = re.compile(r'"pageToken": ?"([0-9]+\.[0-9a-f]+)"')
STORED = {"post": 201, "put": 200}  # S3's success status: a PostResponse, or a PUT's empty 200


# ---- The app, with a count of what its server reads from the network --------------------------


class Traffic:
    """Bytes the app's server received, counted at the socket, and the requests it served."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bytes = 0
        self.requests: list[str] = []

    def reset(self) -> None:
        with self.lock:
            self.bytes, self.requests = 0, []


class CountingProxy(socketserver.ThreadingTCPServer):
    """A TCP proxy on loopback in front of the app: it counts every byte the browser sends the
    app, headers included, as the app's server reads them from its socket."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, target: tuple[str, int], traffic: Traffic) -> None:
        super().__init__(("127.0.0.1", 0), ProxiedConnection)
        self.target, self.traffic = target, traffic


class ProxiedConnection(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with socket.create_connection(self.server.target) as upstream:
            back = threading.Thread(target=copy, args=(upstream, self.request, None), daemon=True)
            back.start()
            copy(self.request, upstream, self.server.traffic)
            back.join()


def copy(source: socket.socket, target: socket.socket, traffic: Traffic | None) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(256 * 1024):
            if traffic is not None:
                with traffic.lock:
                    traffic.bytes += len(data)
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


class LateApp:
    """The app's port must be known before the local S3 (whose CORS rule names the app's origin)
    starts, and the app needs the local S3's URL: serve this, fill it in once both exist."""

    def __init__(self, traffic: Traffic) -> None:
        self.app: Callable[..., Any] | None = None
        self.traffic = traffic

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Any:
        line = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}"
        with self.traffic.lock:
            self.traffic.requests.append(f"{line} ({environ.get('CONTENT_LENGTH') or 0} B body)")
        return self.app(environ, start_response)


@contextlib.contextmanager
def counted_server(app: Callable[..., Any], traffic: Traffic) -> Iterator[str]:
    """The app under waitress as the tests serve it, reached through the counting proxy."""
    with serving.BackgroundServer(app) as http:
        address = urlsplit(http.url)
        proxy = CountingProxy((address.hostname, address.port), traffic)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{proxy.server_address[1]}"
        finally:
            proxy.shutdown()
            proxy.server_close()


@contextlib.contextmanager
def site(
    folder: Path, max_bytes: int, method: str, **settings: str
) -> Iterator[tuple[str, Config, Traffic]]:
    """The app and its embedded local S3, started as `make run` starts them (server.py's own
    start_embedded_s3), with the app's server counting what it reads; `settings` are more
    environment variables for the app."""
    traffic = Traffic()
    late = LateApp(traffic)
    with counted_server(late, traffic) as origin, contextlib.ExitStack() as stack:
        environ = {"PORT": str(urlsplit(origin).port), "S3_PORT": "0", "DATA_DIR": str(folder)}
        environ.update(UPLOAD_MAX_BYTES=str(max_bytes), UPLOAD_METHOD=method, **settings)
        config = embedded.start_embedded_s3(Config.from_env(environ), stack)
        late.app = server.create_app(config)
        LATE_APPS[origin] = late
        yield origin, config, traffic


LATE_APPS: dict[str, LateApp] = {}


def use_config(site: tuple[str, Config, Traffic], config: Config) -> None:
    """Serve the site's app with another configuration (the same origin and local S3)."""
    LATE_APPS[site[0]].app = server.create_app(config)


# ---- The two uploads ---------------------------------------------------------------------------


def make_file(folder: Path, size_mb: int) -> Path:
    path = folder / f"bench-{size_mb}MB.pdf"
    block = os.urandom(MB)
    with path.open("wb") as file:
        for _ in range(size_mb):
            file.write(block)
    return path


def page_upload(page: Page, origin: str, path: Path, s3_url: str) -> tuple[float, float]:
    """Seconds from choosing the file to S3's answer, and to the file in the list."""
    page.goto(origin)
    with page.expect_response(lambda r: r.url.startswith(s3_url), timeout=300_000) as answer:
        started = time.perf_counter()
        page.set_input_files("#file-input", path)
    uploaded = time.perf_counter() - started
    if answer.value.status not in STORED.values():
        raise SystemExit(f"S3 answered {answer.value.status} to the page's upload")
    page.locator("#uploads").filter(has_text=path.name).wait_for(timeout=60_000)
    return uploaded, time.perf_counter() - started


def signed_form(origin: str, path: Path) -> dict:
    """A form from the app's own endpoint, as the page would get it."""
    with urllib.request.urlopen(origin + "/", timeout=10) as reply:
        token = TOKEN.search(reply.read().decode())[1]
    query = f"filename={path.name}&content_type=application/pdf&size={path.stat().st_size}"
    request = urllib.request.Request(
        f"{origin}/s3_credentials?{query}", headers={"X-Upload-Token": token}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.load(reply)


BARE_POST = """async ([url, fields]) => {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    form.append("file", document.querySelector("#bare").files[0]);
    const started = performance.now();
    const answer = await fetch(url, {method: "POST", body: form});
    await answer.text();
    return [answer.status, (performance.now() - started) / 1000];
}"""

BARE_PUT = """async ([url, headers]) => {
    const {"Content-Length": _, ...sent} = headers;
    const started = performance.now();
    const file = document.querySelector("#bare").files[0];
    const answer = await fetch(url, {method: "PUT", body: file, headers: sent});
    await answer.text();
    return [answer.status, (performance.now() - started) / 1000];
}"""


def bare_page(page: Page, origin: str, path: Path) -> None:
    """A page of the app's origin (its /healthz) holding nothing but a file input, #bare, with
    `path` chosen: what a bare fetch() or XHR sends the file from."""
    page.goto(f"{origin}/healthz")
    page.evaluate("""() => {
        const input = Object.assign(document.createElement("input"), {type: "file", id: "bare"});
        document.body.append(input);
    }""")
    page.set_input_files("#bare", path)


def bare_upload(page: Page, origin: str, path: Path) -> float:
    """Chromium's own floor: a form from the app, posted by a bare fetch(), no page around it.

    The same FormData the page sends, from the app's origin (so CORS is the same), timed inside
    the browser from the request to S3's whole answer, like curl's time."""
    form = signed_form(origin, path)
    bare_page(page, origin, path)
    if form["method"] == "PUT":
        status, seconds = page.evaluate(BARE_PUT, [form["url"], form["headers"]])
    else:
        status, seconds = page.evaluate(BARE_POST, [form["url"], form["fields"]])
    if status not in STORED.values():
        raise SystemExit(f"S3 answered {status} to the bare fetch")
    return seconds


def curl_upload(origin: str, path: Path) -> float:
    """`curl -F` with the signed form, or `curl -T` with a PUT's signed headers."""
    form = signed_form(origin, path)
    command = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"]
    if form["method"] == "PUT":
        headers = {k: v for k, v in form["headers"].items() if k != "Content-Length"}
        command += [a for k, v in headers.items() for a in ("-H", f"{k}: {v}")]
        command += ["-T", str(path)]
    else:
        command += [a for k, v in form["fields"].items() for a in ("--form-string", f"{k}={v}")]
        command += ["-F", f"file=@{path};type=application/pdf"]
    started = time.perf_counter()
    result = subprocess.run([*command, form["url"]], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    if int(result.stdout) not in STORED.values():
        raise SystemExit(f"S3 answered {result.stdout} to curl")
    return seconds


# ---- Running ---------------------------------------------------------------------------------


def run(size_mb: int, runs: int, data_path_mb: int, method: str) -> None:
    logging.getLogger("waitress").setLevel(logging.ERROR)  # not "Task queue depth is 2"
    with tempfile.TemporaryDirectory(prefix="bench-browser-") as name, sync_playwright() as pw:
        folder = Path(name)
        warm, big = make_file(folder, 1), make_file(folder, size_mb)
        small = make_file(folder, data_path_mb)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            with site(folder, max(size_mb, data_path_mb) * MB, method) as (origin, config, traffic):
                page, bare = browser.new_page(), browser.new_page(bypass_csp=True)
                s3_url = config.endpoint
                page_upload(page, origin, warm, s3_url)  # warm up Chromium and both servers
                bare_upload(bare, origin, warm)
                curl_upload(origin, warm)
                times: dict[str, list[float]] = {"page": [], "s3 part": [], "bare": [], "curl": []}
                for _ in range(runs):
                    times["curl"].append(curl_upload(origin, big))
                    uploaded, done = page_upload(page, origin, big, s3_url)
                    times["s3 part"].append(uploaded)
                    times["page"].append(done)
                    times["bare"].append(bare_upload(bare, origin, big))
                page.goto(origin)
                traffic.reset()
                page_upload_only(page, small, s3_url)
                received, requests = traffic.bytes, list(traffic.requests)
        finally:
            browser.close()
    print(f"UPLOAD_METHOD={method}")
    report(size_mb, {k: statistics.median(v) for k, v in times.items()}, runs)
    print(f"\nwhile {data_path_mb} MB went through the page, the app's server received")
    print(f"{received} bytes in all (headers included), for {len(requests)} requests:")
    for line in requests:
        print(f"    {line}")
    verdict = "met" if received < 64 * 1024 else "NOT met"
    print(f"target: only the small JSON requests, far below 64 KB: {verdict}")


def page_upload_only(page: Page, path: Path, s3_url: str) -> None:
    page.set_input_files("#file-input", path)
    page.locator("#uploads").filter(has_text=path.name).wait_for(timeout=120_000)


def report(size_mb: int, median: dict[str, float], runs: int) -> None:
    print(f"{size_mb} MB upload, median of {runs} runs, Chromium and curl to the same local S3")
    for name, seconds in median.items():
        print(f"    {name:<10} {seconds:6.2f} s  {size_mb / seconds:6.0f} MB/s")
    ratio = median["page"] / median["curl"]
    print(f"ratio (page / curl) {ratio:.2f}x   target <= 1.3x")
    print(f"upload alone (S3's answer / curl) {median['s3 part'] / median['curl']:.2f}x")
    print(f"Chromium's floor (bare fetch / curl) {median['bare'] / median['curl']:.2f}x")
    print(f"what the page adds (page / bare fetch) {median['page'] / median['bare']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--data-path-mb", type=int, default=100)
    parser.add_argument("--method", choices=("post", "put"), default="post")
    args = parser.parse_args(argv)
    run(args.size_mb, args.runs, args.data_path_mb, args.method)
    return 0


if __name__ == "__main__":
    sys.exit(main())
