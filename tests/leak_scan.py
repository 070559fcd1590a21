"""A pytest plugin: no secret key the suite uses ever leaves the app or the local S3.

It wraps the two WSGI apps (`server.create_app`, `local_s3.create_app`) in a middleware that
scans every response's status line, headers and body, whether WebTest or waitress serves it,
and adds a root logging handler that scans every log record (the root logger is set to DEBUG, a
superset of what a real deployment logs). Each app's secret keys are registered when the app is
built, from its configuration; a test that starts a process registers that process's secret
with `add_secret` and passes its output to `scan_text`. A secret found anywhere fails the
session at its end, and the summary says how much was scanned.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

import local_s3
import server
import tokens
from settings import Config

MIN_SECRET_CHARS = 8  # shorter test values ("pw") would match by chance
KEEP_BYTES = 16 * 1024  # small texts are kept and scanned again for secrets registered later
MAX_KEPT = 200_000


class LeakScanner:
    """Looks for every registered secret, as sent and percent-encoded, in whatever it is given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.needles: set[bytes] = set()
        self.kept: list[tuple[str, bytes]] = []
        self.leaks: list[str] = []
        self.counts = {"responses": 0, "log records": 0, "process outputs": 0}

    def add_secret(self, secret: str | bytes) -> None:
        text = secret.hex() if isinstance(secret, bytes) else secret
        if len(text) < MIN_SECRET_CHARS:
            return
        forms = {text.encode(), quote(text, safe="").encode(), quote(text, safe="/").encode()}
        with self.lock:
            new = forms - self.needles
            self.needles |= new
            kept = list(self.kept)
        for where, data in kept:
            self._search(where, data, new)

    def scan(self, where: str, data: bytes) -> None:
        with self.lock:
            needles = set(self.needles)
            if len(data) <= KEEP_BYTES and len(self.kept) < MAX_KEPT:
                self.kept.append((where, data))
        self._search(where, data, needles)

    def scan_text(self, where: str, text: str) -> None:
        self.count("process outputs")
        self.scan(where, text.encode("utf-8", "replace"))

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def longest(self) -> int:
        return max((len(needle) for needle in self.needles), default=1)

    def _search(self, where: str, data: bytes, needles: Iterable[bytes]) -> None:
        for needle in needles:
            if needle in data:
                with self.lock:
                    self.leaks.append(f"{where}: contains a secret ({needle[:4].decode()}...)")


class ScannedApp:
    """WSGI middleware: status and headers when they are sent, the body chunk by chunk (with an
    overlap, so a secret split across two chunks is still found). Attributes pass through."""

    def __init__(self, app: Callable[..., Any], scanner: LeakScanner, name: str) -> None:
        self.app, self.scanner, self.name = app, scanner, name

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        where = f"{self.name} {environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            head = "\n".join([status, *(f"{name}: {value}" for name, value in headers)])
            self.scanner.scan(f"{where} (headers)", head.encode("latin-1", "replace"))
            return start_response(status, headers, exc_info)

        self.scanner.count("responses")
        return ScannedBody(self.app(environ, start), self.scanner, f"{where} (body)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


class ScannedBody:
    def __init__(self, body: Iterable[bytes], scanner: LeakScanner, where: str) -> None:
        self.body, self.scanner, self.where = body, scanner, where

    def __iter__(self) -> Iterator[bytes]:
        tail = b""
        for chunk in self.body:
            self.scanner.scan(self.where, tail + chunk)
            tail = (tail + chunk)[-self.scanner.longest() :]
            yield chunk

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


class ScanningHandler(logging.Handler):
    def __init__(self, scanner: LeakScanner) -> None:
        super().__init__(logging.DEBUG)
        self.scanner = scanner

    def emit(self, record: logging.LogRecord) -> None:
        self.scanner.count("log records")
        text = self.format(record)
        self.scanner.scan(f"log record of {record.name}", text.encode("utf-8", "replace"))


SCANNER = LeakScanner()


def add_secret(secret: str | bytes) -> None:
    SCANNER.add_secret(secret)


def scan_text(where: str, text: str) -> None:
    SCANNER.scan_text(where, text)


def scanned_server_app(create_app: Callable[..., Any]) -> Callable[..., Any]:
    def create(config: Config | None = None, *args: Any, **kwargs: Any) -> ScannedApp:
        app = create_app(config, *args, **kwargs)
        secret_key = app.state.config.credentials.secret_key  # read from the environment, maybe
        add_secret(secret_key)
        keys = tokens.Secrets.derive(secret_key)
        add_secret(keys.key_token)
        add_secret(keys.page_token)
        add_secret(keys.multipart_token)
        return ScannedApp(app, SCANNER, "app")

    return create


def scanned_s3_app(create_app: Callable[..., Any]) -> Callable[..., Any]:
    def create(config: local_s3.S3Config, *args: Any, **kwargs: Any) -> ScannedApp:
        for secret in config.credentials.values():
            add_secret(secret)
        return ScannedApp(create_app(config, *args, **kwargs), SCANNER, "local S3")

    return create


HANDLER = ScanningHandler(SCANNER)


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    logging.getLogger().addHandler(HANDLER)
    server.create_app = scanned_server_app(server.create_app)
    local_s3.create_app = scanned_s3_app(local_s3.create_app)


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger().removeHandler(HANDLER)


@pytest.fixture(autouse=True)
def secrets_stay_on_the_server() -> Iterator[None]:
    """Fails the test during which a secret was found (under pytest-xdist, too, where each
    worker process scans what its own tests serve and log)."""
    before = len(SCANNER.leaks)
    yield
    if len(SCANNER.leaks) > before:
        pytest.fail("secret leaked: " + "; ".join(SCANNER.leaks[before:]), pytrace=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if SCANNER.leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if hasattr(session.config, "workeroutput"):  # an xdist worker: report to the controller
        session.config.workeroutput["leak_scan"] = {
            "counts": SCANNER.counts,
            "secrets": len(SCANNER.needles),
            "leaks": SCANNER.leaks,
        }


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist's controller: add up what each worker scanned, for the summary line."""
    report = getattr(node, "workeroutput", {}).get("leak_scan")
    if report:
        for what, number in report["counts"].items():
            SCANNER.counts[what] += number
        SCANNER.leaks.extend(report["leaks"])
        WORKER_SECRETS.append(report["secrets"])


WORKER_SECRETS: list[int] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    counts = ", ".join(f"{number} {what}" for what, number in SCANNER.counts.items())
    secrets = len(SCANNER.needles) + sum(WORKER_SECRETS)
    if SCANNER.leaks:
        terminalreporter.section("SECRET LEAKED", red=True)
        for leak in sorted(set(SCANNER.leaks)):
            terminalreporter.write_line(leak)
    verdict = f"{len(SCANNER.leaks)} leaks" if SCANNER.leaks else "no secret found"
    terminalreporter.write_line(
        f"leak scan: {counts} scanned for {secrets} secret forms: {verdict}"
    )
