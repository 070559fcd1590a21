"""Requests/s and p50/p99 latency of GET /s3_credentials: server.py against a Flask + boto3 peer.

Both run in their own processes on free loopback ports, under waitress with the same thread
count: ours is `python server.py` itself (configuration from the environment, as in
production, with UPLOAD_RATE_LIMIT=off so every request is signed rather than refused with 429);
the peer is bench/peer_flask_app.py. `wrk` (Debian's package) drives each at 1, 16 and 64
keep-alive connections, sending the X-Upload-Token header taken from the server's own page.

    .venv/bin/python bench/bench_endpoint.py [--seconds 10] [--connections 1,16,64]

A third server, "floor", is waitress alone as server.py configures it, answering a fixed JSON
body of the same size without any work: the most any app can get from waitress here.

Targets: at 64 connections at least 3x the peer's requests/s and p99 <= 3x p50; p99 under
10 ms at 1 connection; no errors and no answer other than 200.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import serving  # noqa: E402
from settings import DEFAULTS  # noqa: E402

QUERY = "/s3_credentials?filename=holiday%20photo.jpg&content_type=image%2Fjpeg&size=2345678"
TOKEN = re.compile(r'"pageToken": ?"([0-9]+\.[0-9a-f]+)"')

# wrk's Lua hooks: the page token as a header, then one JSON line of results when done.
WRK_SCRIPT = """
wrk.headers["X-Upload-Token"] = os.getenv("UPLOAD_TOKEN")
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_us": %d, "p99_us": %d, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen, str]:
    """Start a server and wait for the line announcing its URL."""
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:[0-9]+", line)
    if not match:
        process.kill()
        raise SystemExit(f"{command[1]} did not start: {line!r}")
    return process, match[0]


def start_servers(folder: Path, threads: str, servers: dict) -> None:
    """Start ours, the peer and the floor into `servers`, so the caller stops whatever started."""
    env = {
        **os.environ,
        "S3_BUCKET": "bench-bucket",
        "AWS_ACCESS_KEY_ID": "AKIDBENCHENDPOINT",
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "AWS_REGION": "eu-west-1",
        "UPLOAD_RATE_LIMIT": "off",
        "WAITRESS_THREADS": threads,
        "DATA_DIR": str(folder / "data"),
        "HOST": "127.0.0.1",
    }
    python = sys.executable
    ours = [python, str(ROOT / "server.py")]
    peer = [python, str(ROOT / "bench" / "peer_flask_app.py"), "--threads", threads]
    servers["ours"] = start(ours, {**env, "PORT": str(free_port())}, folder)
    servers["peer"] = start([*peer, "--port", str(free_port())], env, folder)
    floor = [python, __file__, "--serve-floor", str(free_port()), "--threads", threads]
    servers["floor"] = start(floor, env, folder)


def serve_floor(port: int, threads: int) -> None:
    """Child process: waitress with server.py's settings and an app that does nothing."""
    import waitress

    page = b'<script type="application/json">{"pageToken": "0.00"}</script>'
    answer = json.dumps({"url": "x" * 64, "fields": {"policy": "x" * 1200}}).encode()

    def nothing(environ: dict, start_response: Any) -> list[bytes]:
        body = answer if environ["PATH_INFO"] == "/s3_credentials" else page
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    floor = waitress.create_server(nothing, host="127.0.0.1", port=port, threads=threads)
    floor.channel_class = serving.QuietChannel
    print(f"Floor: http://127.0.0.1:{port}/", flush=True)
    floor.run()


def page_token(origin: str, headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(origin + "/", headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as reply:
        match = TOKEN.search(reply.read().decode())
    if not match:
        raise SystemExit(f"{origin}/ has no page token")
    return match[1]


def check_answer(origin: str, token: str) -> None:
    """One request by hand first: a 200 with a signed form, or the run means nothing."""
    request = urllib.request.Request(origin + QUERY, headers={"X-Upload-Token": token})
    with urllib.request.urlopen(request, timeout=5) as reply:
        form = json.load(reply)
    if "policy" not in form["fields"]:
        raise SystemExit(f"{origin} answered without a signed form: {form}")


def wrk(origin: str, token: str, connections: int, seconds: int, script: Path) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
    result = subprocess.run(
        [*command, "-s", str(script), origin + QUERY],
        env={**os.environ, "UPLOAD_TOKEN": token},
        capture_output=True,
        text=True,
        check=True,
    )
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    return {**stats, "rps": stats["requests"] / stats["seconds"]}


def report(results: dict[int, dict[str, dict]]) -> None:
    columns = ("req/s", "p50 ms", "p99 ms", "p99/p50")
    print(f"{'conns':>5}  {'':5} " + " ".join(f"{c:>8}" for c in columns) + "  errors")
    for connections, pair in results.items():
        for name, row in pair.items():
            p50, p99 = row["p50_us"] / 1000, row["p99_us"] / 1000
            print(
                f"{connections:>5}  {name:5} {row['rps']:>8.0f} {p50:>8.2f} {p99:>8.2f} "
                f"{p99 / p50:>7.1f}x {row['errors']:>6}"
            )
        print(f"{'':>5}  ratio (ours / peer) {pair['ours']['rps'] / pair['peer']['rps']:.1f}x")
    busiest = results[max(results)]
    cost = {name: 1e6 / row["rps"] for name, row in busiest.items()}
    print(
        f"at {max(results)} connections, µs of server time per request: ours {cost['ours']:.0f}, "
        f"peer {cost['peer']:.0f}, floor (waitress alone) {cost['floor']:.0f}; "
        f"3x the peer means {cost['peer'] / 3:.0f}"
    )
    print(
        "targets: >= 3x the peer's req/s at 64 connections; p99 < 10 ms at 1 connection; "
        "p99 <= 3x p50 at 64 connections; 0 errors"
    )


def run(connections: list[int], seconds: int, threads: str) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench does it).")
    with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as folder:
        script = Path(folder) / "token.lua"
        script.write_text(WRK_SCRIPT)
        servers: dict[str, tuple[subprocess.Popen, str]] = {}
        try:
            start_servers(Path(folder), threads, servers)
            tokens = {name: page_token(origin) for name, (_, origin) in servers.items()}
            for name, (_, origin) in servers.items():
                check_answer(origin, tokens[name])
                wrk(origin, tokens[name], max(connections), 2, script)  # warm up
            results = {
                count: {
                    name: wrk(origin, tokens[name], count, seconds, script)
                    for name, (_, origin) in servers.items()
                }
                for count in connections
            }
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=10)
    print(f"waitress threads: {threads} each; UPLOAD_RATE_LIMIT=off; wrk -t1, {seconds} s a run")
    report(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", default="1,16,64", help="concurrent connections")
    parser.add_argument("--serve-floor", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--threads",
        default=DEFAULTS["WAITRESS_THREADS"],
        help="waitress threads for both (default: server.py's WAITRESS_THREADS default)",
    )
    args = parser.parse_args(argv)
    if args.serve_floor:
        serve_floor(args.serve_floor, int(args.threads))
        return 0
    run([int(count) for count in args.connections.split(",")], args.seconds, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
