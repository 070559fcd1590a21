"""Large files through the page in headless Chromium: S3 multipart against one POST, on loopback
and on a slow link, and how much a resume sends again.

Each case runs the app and its embedded local S3 as `make run` does (bench_browser.site), once
with parts (UPLOAD_MULTIPART_THRESHOLD below the file) and once without, in the same run.

1. Loopback, 1 GB: page to local S3 in parts, against one POST. Target: parts >= 0.8x POST.
   Also in the same run, what Chromium itself allows: the page sending the file in one PUT
   (UPLOAD_METHOD=put: the same Blob-body path every part takes), and a bare fetch() of one
   POST and of one PUT, with no page around them (bench_browser.bare_upload).
2. A slow link, 200 MB: the browser reaches S3 through a small shaping proxy (below) that gives
   each TCP connection about 5 MB/s and 40 ms of added latency, as a real link gives each
   connection its own window. Target: 4 parallel parts >= 3x one POST.
3. Resume: the page is closed at half way and the file chosen again in a new page (same
   browser profile, so the same localStorage). Bytes sent again, counting each part the page
   had started as wholly sent, must be at most one part per parallel slot.

    .venv/bin/python bench/bench_multipart.py [--size-mb 1024] [--slow-mb 200] [--rate-mb 5]
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import contextlib
import dataclasses
import itertools
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import bench_browser
from bench_browser import CHROMIUM, CHROMIUM_FLAGS, MB, make_file
from playwright.sync_api import Page, Request, sync_playwright

import parts
import s3_client
import signer

ROOT = Path(__file__).resolve().parent.parent
PART = re.compile(r"[?&]partNumber=(\d+)&")
PART_SIZE = 8 * MB


def named_anew(path: Path) -> Path:
    """The same bytes under a new name (a hard link): the page refuses a file it already has,
    and its list already names the earlier one."""
    copy = path.with_name(f"{path.stem}-{next(COPIES)}{path.suffix}")
    os.link(path, copy)
    return copy


COPIES = itertools.count(1)


def page_upload(page: Page, origin: str, path: Path, timeout_s: float = 600) -> float:
    """Seconds from choosing the file to the file in the page's list of uploads."""
    path = named_anew(path)
    page.goto(origin)
    started = time.perf_counter()
    page.set_input_files("#file-input", str(path))
    page.locator("#uploads").filter(has_text=path.name).wait_for(timeout=timeout_s * 1000)
    return time.perf_counter() - started


@contextlib.contextmanager
def both_sites(folder: Path, max_bytes: int) -> Iterator[dict[str, tuple]]:
    """The app three times: files going in one POST, in one PUT, and in parts."""
    whole = {"UPLOAD_MULTIPART_THRESHOLD": str(5 * 1024 * MB)}
    settings = {
        "post": ("post", whole),
        "parts": (
            "post",
            {"UPLOAD_MULTIPART_THRESHOLD": str(5 * MB), "UPLOAD_PART_SIZE": str(PART_SIZE)},
        ),
        "put": ("put", whole),
    }
    with contextlib.ExitStack() as stack:
        sites = {}
        for name, (method, extra) in settings.items():
            data = folder / name
            data.mkdir()
            sites[name] = stack.enter_context(bench_browser.site(data, max_bytes, method, **extra))
        yield sites


# ---- The shaping proxy: each connection its own slow link ------------------------------------


class ShapingProxy:
    """A TCP proxy on loopback to `target`: each connection gets `rate` bytes/s each way and
    `latency` seconds before each chunk goes on, as a distant link would give it."""

    def __init__(self, target: tuple[str, int], rate: float, latency: float) -> None:
        self.target, self.rate, self.latency = target, rate, latency
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ShapingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Reads at the link's rate (so TCP holds the sender back), and hands each chunk on
        `latency` later, pipelined, as bytes in flight on a long link are."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        delivery = asyncio.create_task(self._deliver(queue, writer))
        free_at = loop.time()
        try:
            while chunk := await reader.read(64 * 1024):
                free_at = max(free_at, loop.time()) + len(chunk) / self.rate
                await asyncio.sleep(free_at - loop.time())
                queue.put_nowait((free_at + self.latency, chunk))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)
            await delivery

    @staticmethod
    async def _deliver(queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (item := await queue.get()) is not None:
                due, chunk = item
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


@contextlib.contextmanager
def behind_slow_link(site: tuple, rate: float, latency: float) -> Iterator[str]:
    """The site's app, now signing for S3 at the proxy's address: the page's uploads cross the
    slow link, the app's own checks still reach S3 directly."""
    origin, config, _traffic = site
    s3 = urlsplit(config.endpoint)
    with ShapingProxy((s3.hostname, s3.port), rate, latency) as proxy:
        shaped = dataclasses.replace(config, endpoint=f"http://{s3.hostname}:{proxy.port}")
        bench_browser.use_config(site, shaped)
        try:
            yield origin
        finally:
            bench_browser.use_config(site, config)


# ---- The floor for parts: what any page must send ---------------------------------------------

BARE_PARTS = """async ([urls, partSize, parallel]) => {
    const file = document.querySelector("#bare").files[0];
    const put = (url, body) => new Promise((resolve, reject) => {
        const request = new XMLHttpRequest();
        request.open("PUT", url);
        request.onload = () => request.status === 200 ? resolve() : reject(request.status);
        request.onerror = () => reject("network");
        request.send(body);
    });
    let next = 0;
    const worker = async () => {
        while (next < urls.length) {
            const index = next++;
            await put(urls[index], file.slice(index * partSize, (index + 1) * partSize));
        }
    };
    const started = performance.now();
    await Promise.all(Array.from({length: parallel}, worker));
    return (performance.now() - started) / 1000;
}"""


def bare_parts(page: Page, site: tuple, path: Path) -> float:
    """Seconds for the parts alone, as bare as a page can send them: the app's own part URLs
    (each a new URL, so each PUT has its CORS preflight), 4 XHRs at a time, nothing else."""
    origin, config, _traffic = site
    bench_browser.bare_page(page, origin, path)
    now = datetime.now(UTC)
    headers = {"Content-Type": "application/pdf"}
    upload_id = s3_client.create_multipart_upload(config, "bench/bare.pdf", headers, now)
    upload = parts.MultipartUpload(
        "bench/bare.pdf", upload_id, parts.plan_parts(path.stat().st_size, PART_SIZE)
    )
    numbers = list(range(1, upload.plan.count + 1))
    urls: dict[str, str] = {}
    for first in range(0, len(numbers), parts.PART_URLS_PER_REQUEST):
        batch = numbers[first : first + parts.PART_URLS_PER_REQUEST]
        urls |= parts.part_urls(config, upload, batch, now)["urls"]
    ordered = [urls[str(number)] for number in numbers]
    try:
        return page.evaluate(BARE_PARTS, [ordered, upload.plan.part_size, 4])
    finally:
        parts.abort(config, upload, now)


# ---- The local S3's memory, in a process of its own -------------------------------------------


@contextlib.contextmanager
def separate_local_s3(site: tuple, folder: Path) -> Iterator[int]:
    """`python -m local_s3` in its own process, the site's app signing for it as for any S3:
    its peak RSS is then the local S3's alone, not the bench's, the apps' and the browser
    driver's together. Yields the process id."""
    origin, config, _traffic = site
    command = [sys.executable, "-m", "local_s3", "--port", "0", "--data", str(folder)]
    process = subprocess.Popen(
        [*command, "--allow-origin", origin], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        url = re.search(r"Local S3 at (\S+),", process.stdout.readline())[1]
        access_key = process.stdout.readline().split(": ", 1)[1].strip()
        process.stdout.readline()
        saved = configparser.ConfigParser()
        saved.read(folder / "credentials")
        secret_key = saved["local-s3"]["aws_secret_access_key"]
        credentials = signer.Credentials(access_key, secret_key)
        bench_browser.use_config(
            site, dataclasses.replace(config, endpoint=url, credentials=credentials)
        )
        yield process.pid
    finally:
        bench_browser.use_config(site, config)
        process.terminate()
        process.wait(10)


def peak_rss_kb(pid: int) -> int:
    """VmHWM, the process's peak resident set, from /proc (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1])


def memory_growth_mb(page: Page, site: tuple, folder: Path, path: Path) -> tuple[float, float]:
    """How much the local S3's peak RSS grows while the page sends `path` in parts, and the
    most Chromium's processes together held above what they held before it began."""
    with separate_local_s3(site, folder) as pid:
        page_upload(page, site[0], path, timeout_s=600)
        before = peak_rss_kb(pid)  # after a first upload: imports and caches are in
        with ChromiumMemory() as chromium:
            page_upload(page, site[0], path, timeout_s=600)
        return (peak_rss_kb(pid) - before) / 1024, chromium.growth_mb


class ChromiumMemory:
    """Samples the resident memory of every Chromium process, every 50 ms, in a thread: a page
    that read the whole file (not Blob slices) would show its size here."""

    def __enter__(self) -> ChromiumMemory:
        self.baseline = self.peak = chromium_rss_kb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, chromium_rss_kb())

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 1024


def chromium_rss_kb() -> int:
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            text = status.read_text()
            if re.search(r"^Name:\s+chromium", text, re.MULTILINE):
                total += int(re.search(r"VmRSS:\s+(\d+) kB", text)[1])
    return total


# ---- Resume ------------------------------------------------------------------------------------


def resumed_bytes(browser, origin: str, path: Path) -> tuple[int, int]:
    """(bytes of the parts started before the page closed and after it came back, the file's
    size): the difference is what a resume sent again."""
    context = browser.new_context()
    started: list[int] = []

    def note(request: Request) -> None:
        if request.method == "PUT" and PART.search(request.url):
            started.append(int(request.headers.get("content-length") or PART_SIZE))

    parts = -(-path.stat().st_size // PART_SIZE)
    page = context.new_page()
    page.on("request", note)
    finished: list[int] = []
    page.on("requestfinished", lambda r: finished.append(1) if PART.search(r.url) else None)
    path = named_anew(path)
    page.goto(origin)
    page.set_input_files("#file-input", str(path))
    while len(finished) < parts // 2:
        page.wait_for_timeout(20)
    page.close()
    again = context.new_page()
    again.on("request", note)
    again.goto(origin)
    again.set_input_files("#file-input", str(path))  # the same file: it resumes
    again.locator("#uploads").filter(has_text=path.name).wait_for(timeout=600_000)
    context.close()
    return sum(started), path.stat().st_size


# ---- The run -----------------------------------------------------------------------------------


def run(size_mb: int, slow_mb: int, rate_mb: float) -> None:
    logging.getLogger("waitress").setLevel(logging.ERROR)  # not "Task queue depth is 2"
    with tempfile.TemporaryDirectory(prefix="bench-multipart-") as name, sync_playwright() as pw:
        folder = Path(name)
        big, slow = make_file(folder, size_mb), make_file(folder, slow_mb)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            with both_sites(folder, max(size_mb, slow_mb) * MB) as sites:
                page, bare = browser.new_page(), browser.new_page(bypass_csp=True)
                loopback = {n: page_upload(page, s[0], big) for n, s in sites.items()}
                loopback |= {f"{n} 2": page_upload(page, s[0], big) for n, s in sites.items()}
                grown, chromium = memory_growth_mb(page, sites["parts"], folder / "alone", big)
                for name in ("post", "put"):
                    for run_name in (f"bare {name}", f"bare {name} 2"):
                        loopback[run_name] = bench_browser.bare_upload(bare, sites[name][0], big)
                for run_name in ("bare parts", "bare parts 2"):
                    loopback[run_name] = bare_parts(bare, sites["parts"], big)
                shaped = {}
                for name in ("post", "parts"):
                    site = sites[name]
                    with behind_slow_link(site, rate_mb * MB, 0.040) as origin:
                        shaped[name] = page_upload(page, origin, slow)
                sent, size = resumed_bytes(browser, sites["parts"][0], big)
        finally:
            browser.close()
    report(size_mb, slow_mb, rate_mb, loopback, shaped, sent, size)
    print(f"the local S3 in its own process, {size_mb} MB in parts from the page:")
    print(f"    peak RSS grew {grown:.1f} MB (target < 32 MB)")
    print(f"    Chromium's processes held at most {chromium:.1f} MB more than before the upload")


def report(size_mb, slow_mb, rate_mb, loopback, shaped, sent, size) -> None:
    best = {
        name: min(loopback[name], loopback[f"{name} 2"]) for name in loopback if name[-2:] != " 2"
    }
    print(f"loopback, {size_mb} MB through the page (best of 2):")
    for name, label in [("post", "one POST"), ("put", "one PUT"), ("parts", "parts")]:
        print(f"    {label:9s}{best[name]:.2f} s ({size_mb / best[name]:.0f} MB/s)")
    print(f"    parts / POST throughput: {best['post'] / best['parts']:.2f}x (target >= 0.8x)")
    print(f"    parts / one PUT throughput: {best['put'] / best['parts']:.2f}x")
    print("  Chromium alone (a bare fetch(), no page, timed in the browser, best of 2):")
    print(f"    one POST {best['bare post']:.2f} s, one PUT {best['bare put']:.2f} s:", end=" ")
    print(f"PUT / POST throughput {best['bare post'] / best['bare put']:.2f}x")
    print(f"    the parts alone: 4 XHR PUTs at a time of {PART_SIZE // MB} MiB slices to presigned")
    print(f"    part URLs {best['bare parts']:.2f} s; the page's parts / these:", end=" ")
    print(f"{best['bare parts'] / best['parts']:.2f}x; these / bare POST:", end=" ")
    print(f"{best['bare post'] / best['bare parts']:.2f}x")
    print(f"slow link ({rate_mb:g} MB/s and 40 ms per connection), {slow_mb} MB:")
    print(f"    one POST {shaped['post']:.1f} s, 4 parallel parts {shaped['parts']:.1f} s")
    print(f"    speed-up: {shaped['post'] / shaped['parts']:.2f}x (target >= 3x)")
    resent = sent - size
    print(f"resume at half way, {size_mb} MB in {PART_SIZE // MB} MiB parts, 4 at a time:")
    print(f"    sent again at most {resent / MB:.1f} MB (target <= {4 * PART_SIZE / MB:.0f} MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--slow-mb", type=int, default=200)
    parser.add_argument("--rate-mb", type=float, default=5.0)
    args = parser.parse_args(argv)
    run(args.size_mb, args.slow_mb, args.rate_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
