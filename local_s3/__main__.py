"""`python -m local_s3`: the local S3 alone, with fresh credentials, for trying S3 clients."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from local_s3.config import S3Config, new_credentials
from local_s3.serving import LocalS3
from local_s3.storage import create_private_file, private_folder
from s3_rules import BUCKET_NAME


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    access_key, secret_key = new_credentials()
    credentials_path = write_credentials_file(args.data, access_key, secret_key)
    config = S3Config(
        data_dir=args.data,
        buckets=tuple(args.bucket or ["uploads"]),
        credentials={access_key: secret_key},
        region=args.region,
        cors_origins=tuple(args.allow_origin),
    )
    server = LocalS3(config, port=args.port).start()
    print(f"Local S3 at {server.url}, bucket(s) {', '.join(config.buckets)}, {config.region}")
    print(f"Access key id: {access_key}")
    print(f"Secret access key: in {credentials_path} (readable by you only)", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local_s3",
        description="A strict local S3 for browser uploads (POST Object, GET/HEAD/PUT, CORS).",
        epilog="Fresh credentials are made at each start: the access key id is printed, the "
        "secret key written to DATA/credentials, readable by you only. server.py starts its own "
        "local S3 when S3_BUCKET is unset; run this one to try other S3 clients against it.",
    )
    parser.add_argument(
        "--port", type=int, default=9000, help="port on 127.0.0.1, 0 for any free one [9000]"
    )
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder for objects [data]")
    parser.add_argument(
        "--bucket", action="append", type=bucket_name, help="bucket name, repeatable [uploads]"
    )
    parser.add_argument(
        "--region", default="us-east-1", help="region the signatures must name [us-east-1]"
    )
    parser.add_argument(
        "--allow-origin", action="append", default=[], help="CORS origin or '*', repeatable"
    )
    return parser.parse_args(argv)


def bucket_name(value: str) -> str:
    """A bucket S3 could not create is refused here too, so a script that works here works there."""
    if not BUCKET_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid S3 bucket name")
    return value


def write_credentials_file(data_dir: Path, access_key: str, secret_key: str) -> Path:
    """AWS's shared-credentials format, readable by its owner only (0600, in a 0700 folder)."""
    path = private_folder(data_dir) / "credentials"
    path.unlink(missing_ok=True)
    with create_private_file(path) as file:
        file.write(
            f"[local-s3]\naws_access_key_id = {access_key}\n"
            f"aws_secret_access_key = {secret_key}\n".encode()
        )
    return path


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
