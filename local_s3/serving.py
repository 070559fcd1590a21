"""Serving the local S3 over HTTP: cheroot, CherryPy's WSGI server, in a background thread.

cheroot hands the app a wsgi.input that reads the socket as the body arrives, one worker thread
per request from a bounded pool, so an upload is parsed, hashed and written while it comes and
memory stays flat, with nothing but cheroot's documented API.
https://cheroot.cherrypy.dev/en/latest/pkg/cheroot.wsgi.html
"""

from __future__ import annotations

import logging
import threading

from cheroot import wsgi

import local_s3
from local_s3.config import S3Config
from local_s3.storage import ObjectStore

LOG = logging.getLogger("local_s3")
# "The PUT request header is limited to 8 KB in size."
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingMetadata.html
MAX_REQUEST_HEADER_BYTES = 8 * 1024
MAX_FORM_OVERHEAD = 64 * 1024  # room for the fields and boundaries around a maximum-size file
CLIENT_TIMEOUT_SECONDS = 10  # a client silent this long mid-request is RequestTimeout
# A cheroot worker is held by one connection from the request's first byte to its answer, and
# a client that trickles its headers or its body, a byte within each CLIENT_TIMEOUT_SECONDS,
# holds it that long (slowloris). cheroot starts its pool once, never a thread per connection,
# so the defence is a pool larger than the slow clients one host can line up: 200 of them
# still leave workers free for everyone else. A small stack keeps the pool cheap; 512 KB is
# twice what json's C parser needs to reach RecursionError on a policy nested 100 000 deep.
# https://cheroot.cherrypy.dev/en/latest/pkg/cheroot.wsgi.html
THREADS = 256
WORKER_STACK_BYTES = 512 * 1024
LISTEN_BACKLOG = 256  # connections the kernel holds until accepted (cheroot's default: 5)
SHUTDOWN_SECONDS = 1  # how long stop() lets requests in flight finish before cutting them
# No connection is kept alive after its answer. cheroot reads what is left of a request body
# before answering on a connection it keeps, which would hold an EntityTooLarge answer until
# the whole body is in; closed instead, the answer goes out at the policy's maximum while the
# client is still sending, and S3 itself closes the connection after EntityTooLarge.
KEEP_ALIVE_CONNECTIONS = 0
# How often cheroot's accept loop wakes to expire idle connections, and so how long stop()
# waits for it to notice (cheroot's default, 0.5 s, is half a second per stop).
# https://cheroot.cherrypy.dev/en/latest/pkg/cheroot.server.html
POLL_SECONDS = 0.02


class LocalS3:
    """Serves create_app(config) on host:port (0 = a free port) in a thread; `threads` bounds
    how many requests are served at once (more wait their turn). Bodies declaring more than
    max_body_bytes, plus room for the form around the file, are refused with 413 unread."""

    def __init__(
        self, config: S3Config, host: str = "127.0.0.1", port: int = 0, threads: int = THREADS
    ) -> None:
        self.config, self.host, self.port, self.threads = config, host, port, threads
        self.url = ""
        self._server: wsgi.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LocalS3:
        """Removes what killed uploads left (safe: nothing is in flight yet), then listens."""
        removed = ObjectStore(self.config.data_dir).remove_leftovers()
        if removed:
            LOG.info("removed %d leftover files of interrupted uploads", removed)
        self._server = self._make_server()
        previous_stack_size = threading.stack_size(WORKER_STACK_BYTES)
        try:
            self._server.prepare()  # binds, listens and starts every worker thread
        finally:
            threading.stack_size(previous_stack_size)
        self.port = self._server.bind_addr[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve, name="local-s3", daemon=True)
        self._thread.start()
        return self

    def _make_server(self) -> wsgi.Server:
        # The app is looked up on the package, so a wrapper installed there serves too.
        server = wsgi.Server(
            (self.host, self.port),
            local_s3.create_app(self.config),
            numthreads=self.threads,
            max=self.threads,
            timeout=CLIENT_TIMEOUT_SECONDS,
            shutdown_timeout=SHUTDOWN_SECONDS,
            request_queue_size=LISTEN_BACKLOG,
        )
        server.max_request_body_size = self.config.max_body_bytes + MAX_FORM_OVERHEAD
        server.max_request_header_size = MAX_REQUEST_HEADER_BYTES
        server.keep_alive_conn_limit = KEEP_ALIVE_CONNECTIONS
        server.expiration_interval = POLL_SECONDS
        return server

    def stop(self) -> None:
        """Closes the listening socket, waits for the requests in flight (cheroot cuts those
        still running after its shutdown timeout), and joins every thread it started."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
            self._thread.join()

    def wait(self) -> None:
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=1)

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
