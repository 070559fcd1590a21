"""One kind of error for the whole app: the HTTP status to answer and one sentence for the user.

Route handlers, the S3 client, the upload registry and the multipart flow all raise it, and
server.py's json_errors turns it into `{"error": "..."}` with that status: a refusal anywhere
reaches the browser the same way, and nothing needs translating on the way up.
"""

from __future__ import annotations


class AppError(Exception):
    """A refusal or a failure, with its HTTP status and one clear sentence; `wait` is the
    seconds for Retry-After when the client should try again later."""

    def __init__(self, status: int, message: str, *, wait: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.wait = wait
