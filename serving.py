"""Serving the app with waitress: its options, a fix for its busy loop, and a background server
for tests and benchmarks.

None of this is the upload protocol; it is how the WSGI app in server.py meets the network.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server

from request_checks import MAX_BODY_BYTES
from settings import Config

LOG = logging.getLogger("server")

FORWARDED_HEADERS = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})

# Slow and huge clients, with waitress's documented options
# (https://docs.pylonsproject.org/projects/waitress/en/stable/arguments.html). waitress reads
# requests in its one event loop and gives a worker thread only a complete request, so a slow
# client holds a connection, never a thread; what runs out is connections. With waitress's
# default of 100, 150 clients sending a byte every 0.2 s kept a normal request waiting for over
# 400 s (its 120 s idle timeout never fires for a client that keeps sending).
DEFENCES: dict[str, Any] = {
    # Connections held at once: far more than slow clients a test or a small attack opens; a
    # connection waiting for its request costs a socket and a few KB, not a thread.
    "connection_limit": 500,
    # poll() rather than select(), which cannot watch a descriptor numbered 1024 or more.
    "asyncore_use_poll": True,
    # A connection silent this long between two reads is closed (waitress: 120 s), checked
    # every cleanup_interval seconds. A client that sends a byte every few seconds is not
    # silent: that is what connection_limit, and in production a buffering proxy, are for.
    "channel_timeout": 30,
    "cleanup_interval": 5,
    # The app's requests have small heads and bodies of a few hundred bytes. waitress refuses a
    # Content-Length of max_request_body_size or more (413) before reading the body, and a
    # chunked body as soon as that much has arrived; the app refuses from 64 KB + 1 itself.
    "max_request_body_size": MAX_BODY_BYTES + 1,
    "max_request_header_size": 32 * 1024,
}


def waitress_options(threads: int, trusted_proxy: str | None) -> dict[str, Any]:
    """waitress's settings for this app, besides where it listens.

    Behind a reverse proxy every request comes from the proxy's address, so the rate limit would
    count all clients as one, and a TLS proxy's https Origin would not match the plain-http
    request. With TRUSTED_PROXY, waitress takes the client's address, scheme and host from the
    X-Forwarded-* headers of that peer only; from anyone else it drops them (its default), so a
    client cannot buy a fresh rate budget by writing its own X-Forwarded-For.
    """
    options: dict[str, Any] = {"threads": threads, **DEFENCES}
    if trusted_proxy:
        options |= {
            "trusted_proxy": trusted_proxy,
            "trusted_proxy_headers": FORWARDED_HEADERS,
        }
    return options


def serve(app: Callable[..., Any], config: Config, banner: str) -> int:
    """Serve `app` on HOST:PORT until Ctrl-C; 1 if the address cannot be used."""
    try:
        server = create_server(
            access_log(app) if config.access_log else app,
            host=config.host,
            port=config.port,
            **waitress_options(config.threads, config.trusted_proxy),
        )
    except OSError as error:
        print(f"Cannot listen on {config.host}:{config.port}: {error.strerror}.", file=sys.stderr)
        return 1
    server.channel_class = QuietChannel
    # "Task queue depth is N" is logged for every request queued behind busy threads: under a
    # burst that is every request, and the logging then costs more than the request.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    print(banner, flush=True)
    try:
        server.run()  # waitress returns on Ctrl-C, once its workers have finished
    finally:
        server.close()
    print("Stopped.")
    return 0


# The waitress QuietChannel was written and measured against (requirements.txt pins it).
WAITRESS_VERSION = "3.0.2"


class QuietChannel(HTTPChannel):
    """waitress's connection, without the busy loop that starves its worker threads.

    waitress's main loop select()s every connection that says it is writable. While a worker
    is still answering, a connection holding part of the answer says yes, but the loop may not
    send it (the worker holds the buffer's lock and sends it itself), so select() returns at
    once, again and again, and that loop keeps the GIL the worker needs to finish: the worker
    gets it back once per switch interval (5 ms). On 2 cores this made p99 latency at 64
    connections up to 30x p50, and with 1 to 4 threads the endpoint sometimes fell to tens of
    requests/s (see docs/BENCHMARKS.md). Here a connection is writable during its request only
    when the worker waits for the loop (its buffer is over the high watermark); the worker sends
    its own answer and wakes the loop when it is done, as waitress already does.

    It overrides HTTPChannel.writable and reads channel attributes (requests, will_close,
    total_outbufs_len, adj), which are waitress's internals, not its documented API: it is
    written for WAITRESS_VERSION, and a test fails on any other, so an upgrade re-checks it.
    """

    def writable(self) -> bool:
        answering = bool(self.requests) and not (self.will_close or self.close_when_flushed)
        if answering and self.total_outbufs_len <= self.adj.outbuf_high_watermark:
            return False
        return super().writable()


class BackgroundServer:
    """A WSGI app served by waitress in a thread on host:port (0 = a free port).

    Tests and benchmarks serve the app this way, so stopping is written once: every socket is
    closed from inside waitress's own loop (the only thread-safe place), then the thread is
    joined, then waitress's workers, and the loop's wake-up pipe is closed last, once nothing
    can pull it.
    """

    def __init__(
        self,
        app: Callable,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = 4,
        channel_class: type[HTTPChannel] | None = None,
        **options: object,
    ):
        self.app, self.host, self.port, self.threads = app, host, port, threads
        self.channel_class, self.options = channel_class, options
        self.url = ""

    def start(self) -> BackgroundServer:
        self._server = create_server(
            self.app, host=self.host, port=self.port, threads=self.threads, **self.options
        )
        if self.channel_class is not None:
            self._server.channel_class = self.channel_class
        self.port = self._server.effective_port
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.run, name="waitress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server = self._server
        server.trigger.pull_trigger(lambda: close_all(server))
        self._thread.join(timeout=10)
        server.task_dispatcher.shutdown(timeout=5)
        server.trigger.close()

    def wait(self) -> None:
        while self._thread.is_alive():
            self._thread.join(timeout=1)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def close_all(server) -> None:
    """Runs in waitress's loop: closes every connection and the listening socket, and only takes
    the wake-up pipe (the trigger) out of the loop. A worker finishing an answer also pulls the
    trigger, and may wake the loop, which runs this, before our own pull has written its byte:
    had this closed the pipe, that write would fail (EBADF), or land in whatever file reused
    the descriptor."""
    for dispatcher in list(server._map.values()):
        if isinstance(dispatcher, HTTPChannel):
            dispatcher.handle_close()
        elif dispatcher is server.trigger:
            dispatcher.del_channel()
        else:
            wasyncore.dispatcher.close(dispatcher)  # the server's own close() closes the trigger


def access_log(app: Callable[..., Any]) -> Callable[..., Any]:
    """One INFO line per request: method, path, status. Never the query string (signatures).

    Off unless ACCESS_LOG=on: the line cost 14 µs of the signing endpoint's 84 µs in the app
    (bench/bench_endpoint.py), and the proxy in front of a production app logs requests anyway.
    """

    def logged(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            LOG.info("%s %s %s", environ["REQUEST_METHOD"], environ.get("PATH_INFO"), status[:3])
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return logged
