"""Large files in parts: S3 multipart uploads, started, checked and completed by the server.

The app chooses the part size and so the length of every part; each part's presigned URL signs
that exact `content-length`, so S3 itself refuses a part of another size, and parts of known
sizes cannot add up to more than the declared size. The server starts and completes the upload
with its own signed requests; the browser only sends parts.
https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import filenames
import s3_client
import s3_rules
import signer
import tokens
from app_errors import AppError
from settings import Config


@dataclass(frozen=True)
class PartPlan:
    """A file of `size` bytes in parts of `part_size`, the last one shorter."""

    size: int
    part_size: int

    @property
    def count(self) -> int:
        return -(-self.size // self.part_size)

    def length(self, number: int) -> int:
        """Bytes of part `number` (1-based)."""
        if not 1 <= number <= self.count:
            raise ValueError(f"part {number} is outside 1-{self.count}")
        return min(self.part_size, self.size - (number - 1) * self.part_size)


def plan_parts(size: int, preferred: int) -> PartPlan:
    """Parts of the preferred size, grown in whole MiB when the file would need more than
    S3's 10,000 parts (an 8 MiB part reaches 78 GiB; 5 TiB needs 525 MiB parts)."""
    needed = -(-size // s3_rules.MAX_PARTS)
    whole_mib = -(-needed // s3_rules.MiB) * s3_rules.MiB
    return PartPlan(size, max(preferred, whole_mib, s3_rules.MIN_PART_BYTES))


def parts_match(plan: PartPlan, listed: list[tuple[int, int]]) -> str | None:
    """Whether S3's parts (number, size) are exactly the plan; else what is wrong, in words."""
    numbers = [number for number, _ in listed]
    missing = sorted(set(range(1, plan.count + 1)) - set(numbers))
    if missing:
        return f"{len(missing)} of {plan.count} parts are missing in S3 (first: {missing[0]})."
    for number, size in listed:
        if number > plan.count or size != plan.length(number):
            return f"Part {number} in S3 is not the part this upload planned."
    return None


# ---- The flow: the server starts, signs parts, lists, completes and aborts --------------------

# A part's URL may wait behind others on a slow link before it is used.
PART_URL_LIFETIME = 3600
PART_URLS_PER_REQUEST = 100


@dataclass(frozen=True)
class MultipartUpload:
    """An upload this server started: its key, S3's UploadId and its plan."""

    key: str
    upload_id: str
    plan: PartPlan

    @property
    def proof(self) -> tuple[str, ...]:
        return (self.key, self.upload_id, str(self.plan.size), str(self.plan.part_size))


def start(config: Config, keys: tokens.Secrets, key: str, upload: Any, now: datetime) -> dict:
    """CreateMultipartUpload with the type, name and ACL a POST policy would pin; the answer
    gives the page its plan and a token covering key, UploadId, size and part size."""
    headers = {
        "Content-Type": upload.content_type,
        "x-amz-meta-filename": filenames.encode_metadata(upload.filename),
        **({"x-amz-acl": config.acl} if config.acl else {}),
    }
    upload_id = s3_client.create_multipart_upload(config, key, headers, now)
    started = MultipartUpload(key, upload_id, plan_parts(upload.size, config.part_size))
    return {
        "key": key,
        "upload_id": upload_id,
        "size": started.plan.size,
        "part_size": started.plan.part_size,
        "parts": started.plan.count,
        "parallel": config.parallel_parts,
        "token": tokens.multipart_token(keys, started.proof, now),
    }


def proven_upload(keys: tokens.Secrets, body: Mapping[str, Any], now: datetime) -> MultipartUpload:
    """The upload a request names, if its token proves this server started it; so no one can
    send parts to, complete or abort an upload that is not theirs."""
    names = ("key", "upload_id", "size", "part_size", "token")
    key, upload_id, size, part_size, token = (str(body.get(name, "")) for name in names)
    if not tokens.multipart_token_valid(keys, (key, upload_id, size, part_size), token, now):
        raise AppError(403, "This multipart upload was not started by this server.")
    return MultipartUpload(key, upload_id, PartPlan(int(size), int(part_size)))


def part_urls(config: Config, upload: MultipartUpload, numbers: Any, now: datetime) -> dict:
    """Presigned UploadPart URLs, each signing its part's exact content-length, so S3 refuses a
    part of any other size."""
    if not isinstance(numbers, list) or not 0 < len(numbers) <= PART_URLS_PER_REQUEST:
        raise AppError(400, f"parts must be a list of 1 to {PART_URLS_PER_REQUEST} numbers.")
    if not all(type(n) is int and 1 <= n <= upload.plan.count for n in numbers):
        raise AppError(400, f"This upload has parts 1 to {upload.plan.count} only.")
    base = signer.object_url(config.bucket, upload.key, config.region, config.endpoint)
    query = f"uploadId={quote(upload.upload_id, safe='')}"
    urls = {
        str(n): signer.presign_url(
            config.credentials,
            "PUT",
            f"{base}?partNumber={n}&{query}",
            config.region,
            headers={"content-length": str(upload.plan.length(n))},
            expires_in=PART_URL_LIFETIME,
            now=now,
        )
        for n in numbers
    }
    return {"urls": urls}


def stored_parts(config: Config, upload: MultipartUpload, now: datetime) -> dict:
    """The planned parts S3 already holds (ListParts): after a reload only the others are sent."""
    listed = s3_client.list_parts(config, upload.key, upload.upload_id, now)
    plan = upload.plan
    kept = [p for p in listed if p.number <= plan.count and p.size == plan.length(p.number)]
    return {"parts": [{"number": p.number, "size": p.size, "etag": p.etag} for p in kept]}


def complete(config: Config, upload: MultipartUpload, now: datetime) -> str:
    """CompleteMultipartUpload from S3's own list of parts, only when it is every planned part
    at its planned size; returns the object's ETag."""
    listed = s3_client.list_parts(config, upload.key, upload.upload_id, now)
    if problem := parts_match(upload.plan, [(p.number, p.size) for p in listed]):
        raise AppError(409, problem)
    return s3_client.complete_multipart_upload(config, upload.key, upload.upload_id, listed, now)


def abort(config: Config, upload: MultipartUpload, now: datetime) -> dict:
    """Cancel: S3 deletes the parts."""
    s3_client.abort_multipart_upload(config, upload.key, upload.upload_id, now)
    return {"aborted": upload.key}


def cleanup(config: Config, now: datetime, older_than: timedelta = timedelta(days=1)) -> int:
    """`python server.py cleanup`: abort this app's uploads started more than a day ago (their
    parts are billed until then). Returns how many."""
    pending = s3_client.list_multipart_uploads(config, config.key_prefix + "/", now)
    stale = [u for u in pending if started_before(u.initiated, now - older_than)]
    for upload in stale:
        s3_client.abort_multipart_upload(config, upload.key, upload.upload_id, now)
    return len(stale)


def started_before(initiated: str, moment: datetime) -> bool:
    try:
        started = datetime.fromisoformat(initiated.replace("Z", "+00:00"))
    except ValueError:
        return False
    return started.astimezone(UTC) < moment


def cleanup_command(config: Config) -> int:
    """`python server.py cleanup`: says how many it aborted, or why it stopped; the status."""
    try:
        count = cleanup(config, datetime.now(UTC))
    except s3_client.S3Failure as failure:
        print(f"Cleanup stopped: {failure.message}", file=sys.stderr)
        return 1
    print(f"Aborted {count} multipart uploads started over a day ago below {config.key_prefix}/.")
    return 0
