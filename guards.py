"""What stands before every route: the checks of the request itself, then the site's login.

Two Bottle plugins, installed by server.create_app inside its JSON errors: `refuse_bad_requests`
answers a request for another host, or with a body the app never wants, from its headers alone;
`require_login` keeps the page, the forms and the list behind UPLOAD_AUTH.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import bottle

import request_checks
from app_errors import AppError
from settings import BasicAuth
from web import json_response

LOG = logging.getLogger("server")


# UPLOAD_AUTH guards everything that shows, signs or records uploads: every path but these.
OPEN_PATHS = ("/static/", "/vendor/", "/healthz")
BASIC_CHALLENGE = 'Basic realm="uploads", charset="UTF-8"'


def require_login(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Bottle plugin: with UPLOAD_AUTH set, no one gets the page or a form before logging in.

    Basic auth answers 401 with a challenge, so the browser asks for the password (RFC 7617);
    a site's own function answers 403, since its login is not HTTP's. A function that raises is
    logged and counts as a refusal: the check fails closed.
    """

    def handler(*args: Any, **kwargs: Any) -> Any:
        auth = bottle.request.app.state.config.auth
        if auth is None or bottle.request.path.startswith(OPEN_PATHS):
            return callback(*args, **kwargs)
        if isinstance(auth, BasicAuth):
            if not auth(bottle.request):
                challenge = {"WWW-Authenticate": BASIC_CHALLENGE}
                return json_response(401, "Log in to upload files.", challenge)
        elif not login_allowed(auth):
            return json_response(403, "Log in to this site before uploading files.")
        return callback(*args, **kwargs)

    return handler


def refuse_bad_requests(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Bottle plugin: a Host not ours, or a body the app never wants, refused from the headers."""

    def handler(*args: Any, **kwargs: Any) -> Any:
        if refusal := request_checks.refusal(
            bottle.request.environ, bottle.request.app.state.hosts
        ):
            raise AppError(*refusal)
        return callback(*args, **kwargs)

    return handler


def login_allowed(auth: Callable[[bottle.BaseRequest], Any]) -> bool:
    try:
        return bool(auth(bottle.request))
    except Exception:
        LOG.exception("UPLOAD_AUTH function %r failed; refusing the request", auth)
        return False
