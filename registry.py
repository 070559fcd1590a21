"""The list of recorded uploads, kept in the bucket itself, so the app has no state to lose.

Each verified upload is one small JSON object under UPLOAD_REGISTRY_PREFIX. Any number of app
instances with the same secret see the same list, and a host whose disk is wiped on every
deploy (a Heroku-style dyno) loses nothing. Listing is one ListObjectsV2 request, then the
records themselves; a record never changes once written, so each instance keeps the ones it
has read and fetches only new ones.

Record keys sort newest first: ListObjectsV2 returns keys in ascending order of their UTF-8
bytes, so a key starts with the upload's time subtracted from a constant.
https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import filenames
import s3_client
import signer
from app_errors import AppError
from settings import Config

RECENT_UPLOADS = 50
# Inverted times keep ten digits until the year 2286, so they sort as numbers do.
LATEST_SECOND = 9_999_999_999
FIELDS = {"key": str, "filename": str, "size": int, "etag": str, "content_type": str}
FIELDS_WITH_TIME = {**FIELDS, "created_at": str}
# Records are immutable: an instance keeps this many it has read; a link check holds a minute.
CACHED_RECORDS = 10_000
OBJECT_SEEN_SECONDS = 60
LISTING_SECONDS = 1.0
CACHED_LISTINGS = 1_000
# Reading 50 records one after another costs 50 round trips to S3; 8 at a time, about 7.
FETCHERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="registry")
LEGACY_DATABASE = "uploads.sqlite3"


@dataclass(frozen=True)
class Listing:
    """One page of the list, newest first; `next` continues it (S3's continuation token)."""

    uploads: list[dict[str, Any]]
    next: str | None


def record_key(prefix: str, upload_key: str, created: datetime) -> str:
    """PREFIX/<inverted seconds>-<hash of the upload key>.json: newest first, and the same
    upload (same key, same time in S3) always gives the same record, so recording is idempotent.
    """
    inverted = LATEST_SECOND - int(created.timestamp())
    digest = hashlib.sha256(upload_key.encode()).hexdigest()[:16]
    return f"{prefix}/{inverted:010d}-{digest}.json"


def upload_time(last_modified: str, fallback: datetime) -> datetime:
    """S3's Last-Modified (an HTTP date) of the upload; the request's time if S3 sends none."""
    try:
        return parsedate_to_datetime(last_modified).astimezone(UTC)
    except (TypeError, ValueError):
        return fallback


def parse_record(body: bytes, record: str, prefix: str) -> dict[str, Any]:
    """A record as written by `add`, or ValueError: a registry object that is not one of ours
    (hand-edited, truncated, foreign) is an error for that entry, never for the whole list."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("not valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    for name, kind in FIELDS_WITH_TIME.items():
        if type(value.get(name)) is not kind:
            raise ValueError(f"its {name} is missing or not a {kind.__name__}")
    if not value["key"].startswith(prefix + "/") or not record.endswith(record_suffix(value)):
        raise ValueError("it names an object this registry did not record")
    return {name: value[name] for name in FIELDS_WITH_TIME}


def record_suffix(record: Mapping[str, Any]) -> str:
    return "-" + hashlib.sha256(record["key"].encode()).hexdigest()[:16] + ".json"


def listed_keys(body: bytes) -> tuple[list[str], str | None]:
    """Keys and the continuation token of a ListBucketResult (when it is truncated)."""
    root = s3_client.xml_root(body)
    if root is None:
        raise AppError(502, "S3 sent a listing that is not valid XML.")
    truncated = s3_client.xml_texts(root, "IsTruncated") == ["true"]
    token = s3_client.xml_texts(root, "NextContinuationToken")
    return s3_client.xml_texts(root, "Key"), token[0] if truncated and token else None


class UploadRegistry:
    """The registry of one bucket: `add` writes a record, `recent` reads a page of them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.prefix = config.registry_prefix
        self._records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._seen: dict[str, float] = {}
        self._listed: dict[str | None, tuple[float, list[str], str | None]] = {}
        self._lock = threading.Lock()

    def add(self, record: Mapping[str, Any], created: datetime, now: datetime) -> str:
        """PUT the record (a few hundred bytes of JSON); returns its key."""
        name = record_key(self.prefix, record["key"], created)
        body = json.dumps(record, ensure_ascii=False, sort_keys=True).encode()
        headers = {"Content-Type": "application/json"}
        reply = self._send("PUT", name, headers=headers, body=body, now=now)
        if reply.status != 200:
            raise AppError(503, "The file is in S3 but could not be recorded; try again.")
        self._remember(name, dict(record))
        self._listed.clear()  # this instance lists its own registration at once
        return name

    def recent(self, now: datetime, continuation: str | None = None) -> Listing:
        """One ListObjectsV2 on the prefix, then the records not read before, in parallel.
        A record whose upload has gone from S3 is dropped: the list never shows a dead link."""
        names, token = self._list(now, continuation)
        with self._lock:
            unread = [name for name in names if name not in self._records]
        fetched = dict(
            zip(unread, FETCHERS.map(lambda n: self._entry(n, now), unread), strict=True)
        )
        entries = [fetched[name] if name in fetched else self._entry(name, now) for name in names]
        return Listing([entry for entry in entries if entry is not None], token)

    def _list(self, now: datetime, continuation: str | None) -> tuple[list[str], str | None]:
        """The record keys of one page. A listing is kept for LISTING_SECONDS: under load every
        list request would otherwise be a LIST request to S3 (which S3 bills); another
        instance's registration shows that much later, this instance's own at once."""
        cached = self._listed.get(continuation)
        if cached and time.monotonic() - cached[0] < LISTING_SECONDS:
            return cached[1], cached[2]
        query = {"list-type": "2", "prefix": self.prefix + "/", "max-keys": str(RECENT_UPLOADS)}
        if continuation:
            query["continuation-token"] = continuation
        reply = self._send("GET", "", query=query, now=now)
        if reply.status != 200:
            raise AppError(502, f"S3 answered {reply.status} when listing the uploads.")
        names, token = listed_keys(reply.body)
        if len(self._listed) > CACHED_LISTINGS:
            self._listed.clear()
        self._listed[continuation] = (time.monotonic(), names, token)
        return names, token

    def _entry(self, name: str, now: datetime) -> dict[str, Any] | None:
        try:
            record = self._record(name, now)
        except ValueError as error:
            return {"record": name, "error": f"This entry of the upload list is broken: {error}."}
        except AppError as failure:
            return {"record": name, "error": failure.message}
        if record is None or not self._still_there(record["key"], now):
            return None
        return record

    def _record(self, name: str, now: datetime) -> dict[str, Any] | None:
        with self._lock:
            if name in self._records:
                self._records.move_to_end(name)
                return self._records[name]
        reply = self._send("GET", name, now=now)
        if reply.status == 404:  # removed between the listing and now
            return None
        if reply.status != 200:
            raise s3_client.S3Failure(502, f"S3 answered {reply.status} for this entry.")
        record = parse_record(reply.body, name, self.config.key_prefix)
        self._remember(name, record)
        return record

    def _still_there(self, key: str, now: datetime) -> bool:
        """HEAD the upload at most once a minute: 404, or 403 (S3's answer for a missing key
        without s3:ListBucket on it), means gone; a failure to ask keeps the entry."""
        if time.monotonic() - self._seen.get(key, -OBJECT_SEEN_SECONDS) < OBJECT_SEEN_SECONDS:
            return True
        try:
            s3_client.head_object(self.config, key, now)
        except s3_client.S3Failure as failure:
            return failure.status != 404
        self._seen[key] = time.monotonic()
        return True

    def _remember(self, name: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._records[name] = record
            while len(self._records) > CACHED_RECORDS:
                self._records.popitem(last=False)
            self._seen[record["key"]] = time.monotonic()
            if len(self._seen) > CACHED_RECORDS:
                self._seen.clear()

    def _send(self, method: str, key: str, **request: Any) -> s3_client.Reply:
        return s3_client.send(self.config, method, key, **request)


# ---- What the list shows: a record from S3's answer, and its download link -------------------

DOWNLOAD_URL_LIFETIME = 3600


def upload_record(key: str, info: s3_client.ObjectInfo, created: datetime) -> dict[str, Any]:
    """What the list shows, from S3's answer: the name as S3 stored it, else the key's last part;
    the time is S3's, so recording the same upload again writes the same record."""
    filename = filenames.clean_filename(
        filenames.decode_metadata(info.metadata.get("filename", ""))
    )
    return {
        "key": key,
        "filename": filename or key.rpartition("/")[2],
        "size": info.size,
        "etag": normalise_etag(info.etag),
        "content_type": info.content_type,
        "created_at": iso_utc(created),
    }


def normalise_etag(etag: str) -> str:
    """S3 sends ETags quoted ("..."), browsers sometimes strip the quotes: compare the inside."""
    return etag.strip().removeprefix("W/").strip('"').lower()


def with_download_url(config: Config, record: Mapping[str, Any], moment: datetime) -> dict:
    """Add a presigned GET URL, so uploads in private buckets can be opened; an entry of the
    list that is broken has no link."""
    if "error" in record:
        return dict(record)
    return {**record, "url": download_url(config, record["key"], moment)}


def download_url(config: Config, key: str, moment: datetime) -> str:
    """A link valid for an hour from the start of the minute: every list asked for within that
    minute reuses it, instead of presigning 50 links per request."""
    return presigned_link(config, key, moment.replace(second=0, microsecond=0))


@functools.lru_cache(maxsize=4096)
def presigned_link(config: Config, key: str, signed_at: datetime) -> str:
    url = signer.object_url(config.bucket, key, config.region, config.endpoint)
    return signer.presign_url(
        config.credentials,
        "GET",
        url,
        config.region,
        expires_in=DOWNLOAD_URL_LIFETIME,
        now=signed_at,
    )


def iso_utc(moment: datetime) -> str:
    """2026-12-02T01:02:03Z."""
    t = moment.astimezone(UTC)
    return f"{t.year:04}-{t.month:02}-{t.day:02}T{t.hour:02}:{t.minute:02}:{t.second:02}Z"


# ---- From the SQLite registry of earlier versions: `python server.py migrate` ----------------


def legacy_rows(path: Path) -> Iterable[dict[str, Any]]:
    """The rows of an uploads.sqlite3 written by an earlier version, read-only."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        yield from (dict(row) for row in db.execute("SELECT * FROM uploads"))
    finally:
        db.close()


def migrate(path: Path, registry: UploadRegistry, now: datetime) -> int:
    """Copy every row into the registry (idempotent: the same row gives the same record), then
    rename the file so a restart does not offer the migration again. Returns the row count."""
    count = 0
    for row in legacy_rows(path):
        record = {name: row[name] for name in FIELDS_WITH_TIME}
        created = datetime.fromisoformat(record["created_at"].replace("Z", "+00:00"))
        registry.add(record, created, now)
        count += 1
    path.rename(path.with_name(path.name + ".migrated"))
    return count


def migrate_command(config: Config, legacy: Path) -> int:
    """`python server.py migrate`: says what it copied, or why it stopped; the exit status."""
    if not legacy.is_file():
        print(f"Nothing to migrate: there is no {legacy}.")
        return 0
    try:
        count = migrate(legacy, UploadRegistry(config), datetime.now(UTC))
    except AppError as error:
        print(f"Migration stopped: {error.message}", file=sys.stderr)
        return 1
    print(
        f"Copied {count} uploads from {legacy} into s3://{config.bucket}/"
        f"{config.registry_prefix}/; the file is now {legacy.name}.migrated."
    )
    return 0
