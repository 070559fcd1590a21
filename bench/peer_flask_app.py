"""The peer for bench_endpoint.py: GET /s3_credentials written the common way.

Flask, boto3's generate_presigned_post, jsonify, served by waitress with waitress's defaults
and the thread count it is given. It does the same work per request as server.py's endpoint:
check a page token (HMAC), validate filename, content_type and size, choose a uuid key, sign a
form pinning the key, Content-Type, metadata, success status and size range.

    .venv/bin/python bench/peer_flask_app.py --port 8081 --threads 8

Credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
S3_BUCKET), as boto3 reads them.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import quote

import boto3
import waitress
from botocore.config import Config
from flask import Flask, abort, jsonify, request

MAX_BYTES = 10 * 1024 * 1024
ALLOWED_FAMILIES = ("image/", "application/pdf", "text/plain")


def create_app() -> Flask:
    app = Flask(__name__)
    bucket = os.environ["S3_BUCKET"]
    secret = hashlib.sha256(os.environ["AWS_SECRET_ACCESS_KEY"].encode()).digest()
    s3 = boto3.client("s3", config=Config(signature_version="s3v4"))

    def mac(issued: str) -> str:
        return hmac.new(secret, issued.encode(), hashlib.sha256).hexdigest()

    @app.get("/")
    def index():
        issued = str(int(time.time()))
        config = json.dumps({"pageToken": f"{issued}.{mac(issued)}"})
        return f'<script type="application/json" id="upload-config">{config}</script>'

    @app.get("/s3_credentials")
    def s3_credentials():
        issued, _, token = request.headers.get("X-Upload-Token", "").partition(".")
        if not hmac.compare_digest(mac(issued), token):
            abort(403)
        filename = request.args.get("filename", "")
        content_type = request.args.get("content_type", "")
        size = int(request.args.get("size", "0"))
        if not filename or not 1 <= size <= MAX_BYTES:
            abort(400)
        if not content_type.startswith(ALLOWED_FAMILIES):
            abort(415)
        ext = os.path.splitext(filename)[1].lower()
        key = f"uploads/{datetime.now(UTC):%Y/%m/%d}/{uuid.uuid4()}{ext}"
        fields = {
            "Content-Type": content_type,
            "x-amz-meta-filename": quote(filename),
            "success_action_status": "201",
        }
        conditions = [{k: v} for k, v in fields.items()]
        conditions.append(["content-length-range", 1, MAX_BYTES])
        form = s3.generate_presigned_post(
            bucket, key, Fields=fields, Conditions=conditions, ExpiresIn=300
        )
        return jsonify({**form, "key": key})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    server = waitress.create_server(
        create_app(), host="127.0.0.1", port=args.port, threads=args.threads
    )
    print(f"Peer app: http://127.0.0.1:{args.port}/", flush=True)
    server.run()


if __name__ == "__main__":
    main()
