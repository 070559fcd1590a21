"""Deploying: the Procfile's command as a platform runs it, and several app processes sharing
one bucket, each a real process talking HTTP to a real local S3."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import leak_scan
from conftest import (
    OWNER,
    S3_TEST_ACCESS_KEY,
    S3_TEST_SECRET_KEY,
    free_port,
    page_config,
    send_form,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
LOGIN = {"Authorization": "Basic " + base64.b64encode(":".join(OWNER).encode()).decode()}


def platform_environment(s3_url: str, port: int) -> dict[str, str]:
    """What a Heroku-style platform sets (PORT) and what its operator sets (the bucket). HOST
    is kept on loopback: a test never listens on every interface."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "S3_BUCKET": "uploads",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": s3_url,
        "AWS_ACCESS_KEY_ID": S3_TEST_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_TEST_SECRET_KEY,
        "UPLOAD_AUTH": "basic:{}:{}".format(*OWNER),  # the list of every upload needs a login
    }


@contextlib.contextmanager
def app_process(command: list[str], environ: dict[str, str]) -> Iterator[str]:
    """One app process, from the repository's folder as a platform starts it; its URL."""
    process = subprocess.Popen(
        command, env=environ, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{environ['PORT']}"
    try:
        wait_for(lambda: answers(url + "/healthz") or process.poll() is not None, "app start")
        assert process.poll() is None, process.stdout.read().decode()
        yield url
    finally:
        process.terminate()
        leak_scan.scan_text(f"output of {command}", process.communicate(timeout=20)[0].decode())


def answers(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
        return True
    return False


def call(url: str, token: str | None = None, body: dict | None = None) -> dict:
    """A JSON request as the owner's browser sends it (logged in, with the page's token)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"X-Upload-Token": token or "", "Content-Type": "application/json", **LOGIN}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=10) as reply:
        return json.loads(reply.read())


def page_token(app_url: str) -> str:
    request = urllib.request.Request(app_url + "/", headers=LOGIN)
    with urllib.request.urlopen(request, timeout=10) as page:
        return page_config(page.read().decode())["pageToken"]


def sign_and_send(app_url: str, content: bytes, name: str) -> dict:
    """What the page does up to S3's answer: a form from the app, the file straight to S3."""
    token = page_token(app_url)
    query = f"filename={name}&content_type=text/plain&size={len(content)}"
    form = call(f"{app_url}/s3_credentials?{query}", token)
    status, _, body = send_form(form["url"], form["fields"], content, name)
    assert status == 201, body
    etag = body.decode().partition("<ETag>")[2].partition("</ETag>")[0].replace("&quot;", '"')
    return {"key": form["key"], "etag": etag, "token": form["token"]}


def register(app_url: str, sent: dict) -> dict:
    return call(app_url + "/uploads", page_token(app_url), sent)["upload"]


def listed(app_url: str) -> list[str]:
    return [upload["key"] for upload in call(app_url + "/uploads")["uploads"]]


def procfile_command() -> str:
    (line,) = [line for line in (ROOT / "Procfile").read_text().splitlines() if line]
    process_type, _, command = line.partition(":")
    assert process_type == "web"
    return command.strip()


def test_the_procfile_command_serves_uploads_on_the_platforms_port(running_s3) -> None:
    environ = platform_environment(running_s3.url, free_port())
    with app_process(["bash", "-c", procfile_command()], environ) as app_url:
        sent = sign_and_send(app_url, b"from the platform\n", "deployed.txt")
        assert register(app_url, sent)["filename"] == "deployed.txt"
        assert listed(app_url) == [sent["key"]]


def test_public_url_is_the_origin_the_app_accepts_behind_a_platform_router(running_s3) -> None:
    """Behind an HTTPS router the request says http://; PUBLIC_URL names the real origin, which
    the browser sends as Origin."""
    environ = platform_environment(running_s3.url, free_port())
    environ["PUBLIC_URL"] = "https://uploads.example.test"
    with app_process(["bash", "-c", procfile_command()], environ) as app_url:
        token = page_token(app_url)
        request = urllib.request.Request(
            f"{app_url}/s3_credentials?filename=a.txt&content_type=text/plain&size=1",
            headers={"X-Upload-Token": token, "Origin": "https://uploads.example.test", **LOGIN},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200


def test_any_instance_registers_what_another_signed_and_both_list_it(running_s3) -> None:
    """Two instances share the secret and the bucket, nothing else: no sticky sessions."""
    command = [sys.executable, str(ROOT / "server.py")]
    with contextlib.ExitStack() as stack:
        first, second = (
            stack.enter_context(
                app_process(command, platform_environment(running_s3.url, free_port()))
            )
            for _ in range(2)
        )
        sent = sign_and_send(first, b"signed by one\n", "shared.txt")
        register(second, sent)
        assert listed(second) == [sent["key"]]
        # The first keeps a listing for registry.LISTING_SECONDS: it lists the upload after.
        wait_for(lambda: listed(first) == [sent["key"]], "the other instance lists it", 5)


def test_the_readme_shows_the_procfile_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```\nweb: {procfile_command()}\n```" in readme
