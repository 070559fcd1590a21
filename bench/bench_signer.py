"""µs per browser-POST form: signer.presigned_post against boto3's generate_presigned_post.

Both sign the same conditions (exact key, Content-Type, success status, size range, 5 minutes),
warm, in the same process, so the ratio is what a signing endpoint saves per file.
Run: .venv/bin/python bench/bench_signer.py
"""

import platform
import sys
import timeit
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from boto3.session import Session
from botocore.config import Config

import signer

ACCESS_KEY, SECRET_KEY, REGION = "AKIDBENCH", "bench-secret-key", "eu-west-1"
BUCKET, KEY, TYPE, MAX_BYTES = "uploads", "uploads/2026/01/01/photo.jpg", "image/jpeg", 10 << 20
ROUNDS, NUMBER = 7, 2000


def ours() -> dict:
    return signer.presigned_post(
        signer.Credentials(ACCESS_KEY, SECRET_KEY),
        bucket=BUCKET,
        key=KEY,
        region=REGION,
        max_bytes=MAX_BYTES,
        content_type=TYPE,
        now=datetime.now(UTC),
    )


def botocore_peer():
    session = Session(ACCESS_KEY, SECRET_KEY, region_name=REGION)
    client = session.client("s3", config=Config(signature_version="s3v4"))
    fields = {"Content-Type": TYPE, "success_action_status": "201"}
    conditions = [*({k: v} for k, v in fields.items()), ["content-length-range", 1, MAX_BYTES]]

    def theirs() -> dict:
        return client.generate_presigned_post(
            BUCKET, KEY, Fields=fields, Conditions=conditions, ExpiresIn=300
        )

    return theirs


def microseconds_per_call(function) -> float:
    function()
    best = min(timeit.repeat(function, repeat=ROUNDS, number=NUMBER))
    return best / NUMBER * 1e6


def main() -> None:
    theirs = botocore_peer()
    ours_us = microseconds_per_call(ours)
    theirs_us = microseconds_per_call(theirs)
    print(f"{platform.machine()}, Python {platform.python_version()}, {NUMBER} forms x {ROUNDS}")
    print(f"signer.presigned_post              {ours_us:8.1f} µs/form")
    print(f"boto3 generate_presigned_post      {theirs_us:8.1f} µs/form")
    print(f"ratio (botocore / ours)            {theirs_us / ours_us:8.1f}x   target >= 15x")


if __name__ == "__main__":
    main()
