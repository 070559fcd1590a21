"""Ingest benchmark for the embedded local S3: is a browser POST streamed, fast and flat in memory?

Uploads 10 MB, 100 MB and 1 GB files with `curl -F` (a valid signed form, file last) to
LocalS3 running in its own process, and the same files with `curl -T` to a presigned PUT URL
with the signed headers (what UPLOAD_METHOD=put has the browser send), alternating POST and PUT
in the same run. The floor is MD5 over the same bytes, in this process: S3
must hash every byte for the ETag, so no ingest can be faster. Prints MB/s for each, the ratio
(target: ingest at least 0.6 of MD5's speed at 1 GB) and the local S3's peak RSS growth
(target: under 32 MB at 1 GB), read from /proc/PID/status (VmHWM minus the RSS after warm-up).

    .venv/bin/python bench/bench_local_s3.py [--sizes 10,100,1024] [--threads 4] [--runs 3]
    .venv/bin/python bench/bench_local_s3.py --sizes 100 --runs 5   # PUT vs POST at 100 MB

A script, not a test: it takes a few minutes and needs ~4 GB free in the temp folder. Each
stored object replaces the previous one (same key), so the disk use does not grow with runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import local_s3  # noqa: E402 (the project root is added to the path just above)
import signer  # noqa: E402

MB = 1024 * 1024
ACCESS_KEY = "BENCHLOCALS3ACCESS00"
BUCKET = "bench"
REGION = "us-east-1"


# --- the two servers, each in its own process ----------------------------------------------------


def serve(data_dir: Path, threads: int) -> None:
    """Child process: serve the local S3 (secret from stdin); print the URL."""
    secret = sys.stdin.readline().strip()
    config = local_s3.S3Config(
        data_dir=data_dir, buckets=(BUCKET,), credentials={ACCESS_KEY: secret}
    )
    server = local_s3.LocalS3(config, threads=threads).start()
    print(server.url, flush=True)
    server.wait()


def start(data_dir: Path, threads: int, secret: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, __file__, "--serve", "--data", str(data_dir)]
    process = subprocess.Popen(
        [*command, "--threads", str(threads)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    process.stdin.write(secret + "\n")
    process.stdin.flush()
    return process, process.stdout.readline().strip()


# --- measuring ---------------------------------------------------------------------------------


def proc_status_kb(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def make_file(folder: Path, size_mb: int) -> tuple[Path, bytes]:
    """A file of `size_mb` copies of one random megabyte, and that megabyte (for the floor)."""
    path = folder / f"upload-{size_mb}MB.bin"
    block = os.urandom(MB)
    with path.open("wb") as file:
        for _ in range(size_mb):
            file.write(block)
    return path, block


def md5_seconds(block: bytes, size_mb: int) -> float:
    """The floor: MD5 over the same bytes the upload sends, as the local S3 hashes them for
    the ETag (256 KB at a time)."""
    md5 = hashlib.md5(usedforsecurity=False)
    view = memoryview(block)
    started = time.perf_counter()
    for _ in range(size_mb):
        for offset in range(0, MB, 256 * 1024):
            md5.update(view[offset : offset + 256 * 1024])
    md5.hexdigest()
    return time.perf_counter() - started


def curl_post(url: str, fields: dict[str, str], path: Path) -> tuple[float, str]:
    """Seconds taken and HTTP status of one `curl -F` upload, fields first and the file last."""
    form = [arg for name, value in fields.items() for arg in ("--form-string", f"{name}={value}")]
    command = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *form]
    os.sync()  # start each run with no dirty pages left over from the previous one
    started = time.perf_counter()
    result = subprocess.run(
        [*command, "-F", f"file=@{path}", url], capture_output=True, text=True, check=True
    )
    return time.perf_counter() - started, result.stdout


def curl_put(url: str, headers: dict[str, str], path: Path) -> tuple[float, str]:
    """Seconds taken and HTTP status of one `curl -T` upload with the signed headers; curl sends
    the file's own Content-Length, which the signature pins."""
    sent = [
        arg
        for name, value in headers.items()
        if name != "Content-Length"
        for arg in ("-H", f"{name}: {value}")
    ]
    command = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *sent, "-T", str(path)]
    os.sync()
    started = time.perf_counter()
    result = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    return time.perf_counter() - started, result.stdout


def signed_put(secret: str, s3_url: str, key: str, size: int) -> dict:
    return signer.presigned_put(
        signer.Credentials(ACCESS_KEY, secret),
        bucket=BUCKET,
        key=key,
        region=REGION,
        endpoint=s3_url,
        size=size,
        max_bytes=4 * 1024 * MB,
        content_type="application/octet-stream",
        metadata={"filename": f"{key.rpartition('/')[2]}"},
        expires_in=3600,
    )


def timed_put(put: dict, path: Path) -> float:
    seconds, status = curl_put(put["url"], put["headers"], path)
    if status != "200":
        raise SystemExit(f"PUT answered {status}, expected 200")
    return seconds


def signed_form(secret: str, s3_url: str, key: str) -> dict:
    credentials = signer.Credentials(ACCESS_KEY, secret)
    return signer.presigned_post(
        credentials,
        bucket=BUCKET,
        key=key,
        region=REGION,
        endpoint=s3_url,
        max_bytes=4 * 1024 * MB,
        expires_in=3600,
    )


def timed_upload(url: str, fields: dict[str, str], path: Path) -> float:
    seconds, status = curl_post(url, fields, path)
    if status != "201":
        raise SystemExit(f"{url} answered {status}, expected 201")
    return seconds


def measure(size_mb: int, work: Path, s3: tuple, secret: str, runs: int) -> dict:
    """Median of `runs` POST uploads, `runs` PUT uploads and `runs` MD5 passes over the same
    bytes, alternating, so CPU noise on a small machine hits all three alike."""
    process, s3_url = s3
    path, block = make_file(work, size_mb)
    form = signed_form(secret, s3_url, f"bench/{size_mb}MB.bin")
    put = signed_put(secret, s3_url, f"bench/{size_mb}MB-put.bin", size_mb * MB)
    s3_times, put_times, md5_times = [], [], []
    for _ in range(runs):
        s3_times.append(timed_upload(form["url"], form["fields"], path))
        put_times.append(timed_put(put, path))
        md5_times.append(md5_seconds(block, size_mb))
    path.unlink()
    return {
        "size_mb": size_mb,
        "s3_mbps": size_mb / statistics.median(s3_times),
        "put_mbps": size_mb / statistics.median(put_times),
        "md5_mbps": size_mb / statistics.median(md5_times),
        "hwm_kb": proc_status_kb(process.pid, "VmHWM"),
    }


def report(rows: list[dict], baseline_kb: int) -> None:
    print(
        f"{'size':>8} {'POST':>12} {'PUT':>12} {'PUT/POST':>9} {'MD5 floor':>12} "
        f"{'POST/MD5':>9} {'S3 peak RSS growth':>20}"
    )
    for row in rows:
        ratio = row["s3_mbps"] / row["md5_mbps"]
        growth = (row["hwm_kb"] - baseline_kb) / 1024
        print(
            f"{row['size_mb']:>5} MB {row['s3_mbps']:>7.0f} MB/s {row['put_mbps']:>7.0f} MB/s "
            f"{row['put_mbps'] / row['s3_mbps']:>9.2f} {row['md5_mbps']:>7.0f} MB/s "
            f"{ratio:>9.2f} {growth:>17.1f} MB"
        )
    print(f"targets: ratio >= 0.6 and RSS growth < 32 MB at {rows[-1]['size_mb']} MB")


def run(sizes: list[int], threads: int, runs: int) -> None:
    if shutil.which("curl") is None:
        raise SystemExit("curl is not installed: this benchmark uploads with `curl -F`.")
    secret = secrets.token_urlsafe(30)
    with tempfile.TemporaryDirectory(prefix="bench-local-s3-") as folder:
        work = Path(folder)
        s3 = start(work / "s3-data", threads, secret)
        try:
            measure(1, work, s3, secret, 1)  # warm up: steady state only
            baseline_kb = proc_status_kb(s3[0].pid, "VmRSS")
            rows = [measure(size, work, s3, secret, runs) for size in sizes]
        finally:
            s3[0].terminate()
            s3[0].wait(timeout=10)
        report(rows, baseline_kb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1024", help="file sizes in MB")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="uploads per size; the median counts")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.data, args.threads)
    else:
        run([int(size) for size in args.sizes.split(",")], args.threads, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
