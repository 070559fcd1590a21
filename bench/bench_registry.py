"""Requests/s and p50/p99 of POST /uploads (registration) and GET /uploads (the list of 50):
this checkout against an earlier commit (the SQLite registry), in the same run.

Each version runs as `python server.py` with its embedded local S3, in its own process, from its
own checkout (the earlier one as a temporary `git worktree`). 50 small files are uploaded the
way the page does (a form from the app, the file straight to S3, then POST /uploads); then
`wrk` (Debian's package) drives GET /uploads and POST /uploads (registering those 50 again,
in turn: registration is idempotent) at 1 and 16 keep-alive connections.

    .venv/bin/python bench/bench_registry.py [--before 7058b8f] [--seconds 10]

Registration in S3 costs one more S3 request (a PUT of the record) than the SQLite insert;
listing costs one ListObjectsV2 (each instance keeps the records it has read) instead of a
SQL query. Target: the list of 50 answers within 50 ms p99 at 16 connections.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bench_endpoint
from bench_endpoint import free_port, page_token, start

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import send_form  # noqa: E402 (the project's folders are added just above)

FILES = 50
OWNER = ("bench", "bench-password")
LOGIN = {"Authorization": "Basic " + base64.b64encode(":".join(OWNER).encode()).decode()}

WRK_LOGIN = 'wrk.headers["Authorization"] = os.getenv("LOGIN")\n'
# wrk's Lua hooks: the page token as a header, the registration bodies in turn, one JSON line.
WRK_POST = """
wrk.method = "POST"
wrk.headers["X-Upload-Token"] = os.getenv("UPLOAD_TOKEN")
wrk.headers["Authorization"] = os.getenv("LOGIN")
wrk.headers["Content-Type"] = "application/json"
local bodies, next_body = {}, 0
for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
request = function()
  next_body = next_body % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[next_body])
end
"""


@contextlib.contextmanager
def checkout(ref: str, folder: Path) -> Iterator[Path]:
    """The repository at `ref`, as a temporary worktree."""
    path = folder / f"checkout-{ref}"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
            check=True,
            capture_output=True,
        )


def start_app(code: Path, data: Path) -> tuple[subprocess.Popen, str]:
    env = {
        **os.environ,
        "PORT": str(free_port()),
        "S3_PORT": str(free_port()),
        "UPLOAD_RATE_LIMIT": "off",
        "UPLOAD_AUTH": f"basic:{OWNER[0]}:{OWNER[1]}",  # the list of every upload needs a login
        "DATA_DIR": str(data),
        "HOST": "127.0.0.1",
    }
    return start([sys.executable, str(code / "server.py")], env, data.parent)


def call(url: str, token: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"X-Upload-Token": token, "Content-Type": "application/json", **LOGIN}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=10) as reply:
        return json.loads(reply.read())


def upload_files(origin: str, token: str) -> list[dict]:
    """FILES uploads as the page makes them; returns the registration bodies."""
    reports = []
    for number in range(FILES):
        content = secrets.token_bytes(100 + number)
        query = f"filename=f{number}.txt&content_type=text/plain&size={len(content)}"
        form = call(f"{origin}/s3_credentials?{query}", token)
        status, _, body = send_form(form["url"], form["fields"], content, f"f{number}.txt")
        if status != 201:
            raise SystemExit(f"S3 refused an upload: {body[:200]!r}")
        etag = body.decode().partition("<ETag>")[2].partition("</ETag>")[0]
        report = {"key": form["key"], "etag": etag.replace("&quot;", ""), "token": form["token"]}
        call(origin + "/uploads", token, report)
        reports.append(report)
    return reports


def wrk(url: str, env: dict[str, str], connections: int, seconds: int, script: Path) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
    result = subprocess.run(
        [*command, "-s", str(script), url],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    return {**stats, "rps": stats["requests"] / stats["seconds"]}


def measure(code: Path, folder: Path, seconds: int, connections: list[int]) -> dict:
    data = folder / f"data-{code.name}"
    data.mkdir()
    process, origin = start_app(code, data)
    try:
        token = page_token(origin, LOGIN)
        reports = upload_files(origin, token)
        if len(call(origin + "/uploads", token)["uploads"]) != FILES:
            raise SystemExit(f"{code} does not list the {FILES} uploads")
        bodies = folder / "bodies.jsonl"
        bodies.write_text("".join(json.dumps(report) + "\n" for report in reports))
        get_script, post_script = folder / "get.lua", folder / "post.lua"
        get_script.write_text(WRK_LOGIN + bench_endpoint.WRK_SCRIPT)
        post_script.write_text(WRK_POST + bench_endpoint.WRK_SCRIPT)
        env = {"UPLOAD_TOKEN": token, "BODIES": str(bodies), "LOGIN": LOGIN["Authorization"]}
        results = {}
        for count in connections:
            for name, script in (("GET /uploads", get_script), ("POST /uploads", post_script)):
                wrk(origin + "/uploads", env, count, 1, script)  # warm up
                results[name, count] = wrk(origin + "/uploads", env, count, seconds, script)
        return results
    finally:
        process.terminate()
        process.wait(timeout=10)


def report(before: dict, after: dict, ref: str) -> None:
    print(f"{'':15} {'conns':>5} {'version':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} errors")
    for name, count in after:
        for label, results in ((ref, before), ("now", after)):
            row = results[name, count]
            print(
                f"{name:15} {count:>5} {label:>8} {row['rps']:>8.0f} {row['p50_us'] / 1000:>8.2f}"
                f" {row['p99_us'] / 1000:>8.2f} {row['errors']:>6}"
            )
        ratio = after[name, count]["rps"] / before[name, count]["rps"]
        print(f"{'':15} {'':>5} {'ratio':>8} {ratio:>8.2f}x (now / {ref})")
    p99 = after["GET /uploads", max(c for _, c in after)]["p99_us"] / 1000
    print(f"target: the list of {FILES} within 50 ms p99 at 16 connections; now {p99:.1f} ms")


def run(ref: str, seconds: int, connections: list[int]) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench does it).")
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as name:
        folder = Path(name)
        with checkout(ref, folder) as old:
            before = measure(old, folder, seconds, connections)
        after = measure(ROOT, folder, seconds, connections)
    print(f"{FILES} uploads registered; wrk -t1, {seconds} s a run; embedded local S3")
    report(before, after, ref)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="7058b8f", help="commit with the SQLite registry")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", default="1,16")
    args = parser.parse_args(argv)
    run(args.before, args.seconds, [int(count) for count in args.connections.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
