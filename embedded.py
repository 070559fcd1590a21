"""The embedded local S3, as `make run` starts it when no S3_BUCKET is set.

Fresh random credentials that only this process ever knows, one bucket, and a CORS rule naming
the app's own origins, so the browser talks to it exactly as it would to Amazon S3.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import signer
from settings import Config

EMBEDDED_BUCKET = "uploads"
EMBEDDED_REGION = "us-east-1"


def start_embedded_s3(
    config: Config, stack: contextlib.ExitStack, threads: int | None = None
) -> Config:
    """Start local_s3 with fresh random credentials that only this process ever knows; its
    workers are local_s3's default (enough for slow clients) unless `threads` says less."""
    import local_s3

    credentials = signer.Credentials(*local_s3.new_credentials())
    s3_config = local_s3.S3Config(
        data_dir=config.data_dir / "s3",
        buckets=(EMBEDDED_BUCKET,),
        credentials={credentials.access_key: credentials.secret_key},
        region=EMBEDDED_REGION,
        cors_origins=app_origins(config),
        abort_multipart_days=1,  # it keeps no multipart parts, as this rule would on S3
    )
    workers = {"threads": threads} if threads else {}
    s3 = stack.enter_context(
        local_s3.LocalS3(s3_config, host=config.host, port=config.s3_port, **workers)
    )
    return replace(
        config,
        credentials=credentials,
        bucket=EMBEDDED_BUCKET,
        region=EMBEDDED_REGION,
        endpoint=f"http://{config.browser_host}:{s3.port}",
        embedded=True,
    )


def app_origins(config: Config) -> tuple[str, ...]:
    """The origins the browser may load the page from: localhost is 127.0.0.1 to people."""
    origins = (config.app_origin,)
    if config.browser_host == "127.0.0.1":
        origins += (f"http://localhost:{config.port}",)
    return origins
