"""Multipart uploads, as S3 runs them: CreateMultipartUpload hands out an upload id, UploadPart
stores numbered parts (each streamed and hashed like a PUT), ListParts and ListMultipartUploads
report them, CompleteMultipartUpload joins the listed parts into one object in one atomic step,
AbortMultipartUpload deletes them. The object exists only after Complete.
https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html
https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html

The rules (part numbers, sizes, order, ETags, pages) are pure functions of plain data;
MultipartStore keeps the uploads on disk. Where AWS documents no exact answer, the choices here:
an ETag in the completion list matches with or without its quotes (S3 takes both); a part number
listed twice is InvalidPartOrder (the list must be strictly ascending); a part number that is not
an integer in the completion XML is MalformedXML; ListMultipartUploads refuses `delimiter` with
NotImplemented rather than ignore it; the messages for a bad max-parts, part-number-marker or
max-uploads are ours.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import secrets
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

from local_s3.bucket import document
from local_s3.config import S3Config
from local_s3.cors import local_name
from local_s3.errors import S3Error, invalid_argument, xml_elements
from local_s3.storage import (
    MULTIPART_RECORD,
    PART_BLOB_SUFFIX,
    PART_RECORD_PREFIX,
    ObjectStore,
    StoredObject,
    Upload,
    private_folder,
    write_private_json,
)
from s3_rules import MAX_LIST_PARTS, MAX_LIST_UPLOADS, MAX_PART_BYTES, MAX_PARTS, MIN_PART_BYTES

# An upload id: the initiation time in microseconds (16 hex digits), so ids sort by initiation
# as S3 lists them, then 32 random bytes (urlsafe base64), so no one can guess another's id.
UPLOAD_ID = re.compile(r"[0-9a-f]{16}[A-Za-z0-9_-]{43}")
# The largest value S3 accepts in max-parts, part-number-marker and max-uploads.
MAX_INTEGER_ARGUMENT = 2**31 - 1
# Ours: room for 10,000 <Part> elements with their checksums; a bigger body is not a part list.
MAX_COMPLETE_XML_BYTES = MAX_PARTS * 512
# What S3 answers to a completion with a part under 5 MiB before the last, with the part's
# number and unquoted ETag, as seen from AWS in
# https://github.com/apache/arrow-rs-object-store/issues/211 (AWS documents no message).
PART_TOO_SMALL = "Your proposed upload is smaller than the minimum allowed size"


@dataclass(frozen=True)
class MultipartUpload:
    """An upload in progress, and what its object will keep (content type, ACL, metadata,
    headers), which S3 takes from CreateMultipartUpload, not from the parts."""

    upload_id: str
    bucket: str
    key: str
    initiated: datetime
    attributes: Mapping[str, object]


@dataclass(frozen=True)
class Part:
    number: int
    etag: str
    size: int
    last_modified: datetime
    path: Path


# --- the rules ---


def new_upload_id(now: datetime) -> str:
    return f"{int(now.timestamp() * 1_000_000):016x}{secrets.token_urlsafe(32)}"


def no_such_upload(upload_id: str) -> S3Error:
    return S3Error("NoSuchUpload", UploadId=upload_id)


def checked_part_number(value: str | None) -> int:
    """UploadPart's partNumber: 1 to 10,000, else S3's InvalidArgument."""
    if (
        value is None
        or not (value.isascii() and value.isdigit())
        or not 1 <= int(value) <= MAX_PARTS
    ):
        message = f"Part number must be an integer between 1 and {MAX_PARTS}, inclusive"
        raise invalid_argument("partNumber", value or "", message)
    return int(value)


def check_part_size(size: int) -> None:
    """A part is at most 5 GiB; the declared Content-Length says so before any byte is read."""
    if size > MAX_PART_BYTES:
        raise S3Error("EntityTooLarge", ProposedSize=size, MaxSizeAllowed=MAX_PART_BYTES)


def multipart_etag(part_etags: Sequence[str]) -> str:
    """S3's ETag of a multipart object: the MD5 of the parts' binary MD5s joined, then "-" and
    the number of parts, quoted. It is not the MD5 of the object's bytes."""
    joined = b"".join(bytes.fromhex(unquoted(etag)) for etag in part_etags)
    return f'"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(part_etags)}"'


def unquoted(etag: str) -> str:
    return etag.strip().strip('"')


def parse_completion(body: bytes) -> list[tuple[int, str]]:
    """The CompleteMultipartUpload XML: (PartNumber, ETag) of each Part, in the order sent. Not
    XML, another root, an element other than Part, a Part without both, or no Part at all is
    MalformedXML."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise S3Error("MalformedXML") from None
    parts = [completed_part(element) for element in root if local_name(element) == "Part"]
    if local_name(root) != "CompleteMultipartUpload" or not parts or len(parts) != len(root):
        raise S3Error("MalformedXML")
    return parts


def completed_part(element: ElementTree.Element) -> tuple[int, str]:
    values = {local_name(child): (child.text or "").strip() for child in element}
    number, etag = values.get("PartNumber", ""), values.get("ETag", "")
    if not (number.isascii() and number.isdigit()) or not etag:
        raise S3Error("MalformedXML")
    return int(number), etag


def chosen_parts(
    requested: Sequence[tuple[int, str]], stored: Mapping[int, Part], upload_id: str
) -> list[Part]:
    """The parts a completion names, checked in S3's order: ascending part numbers
    (InvalidPartOrder), each one uploaded with that ETag (InvalidPart), and every part but the
    last at least 5 MiB (EntityTooSmall)."""
    numbers = [number for number, _ in requested]
    if any(later <= earlier for earlier, later in itertools.pairwise(numbers)):
        raise S3Error("InvalidPartOrder", UploadId=upload_id)
    chosen = []
    for number, etag in requested:
        part = stored.get(number)
        if part is None or unquoted(part.etag) != unquoted(etag):
            raise S3Error("InvalidPart", UploadId=upload_id, PartNumber=number, ETag=etag)
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < MIN_PART_BYTES:
            raise S3Error(
                "EntityTooSmall",
                PART_TOO_SMALL,
                ProposedSize=part.size,
                MinSizeAllowed=MIN_PART_BYTES,
                PartNumber=part.number,
                ETag=unquoted(part.etag),
            )
    return chosen


# --- listing parts and uploads ---


@dataclass(frozen=True)
class PartsRequest:
    max_parts: int = MAX_LIST_PARTS
    marker: int = 0


@dataclass(frozen=True)
class UploadsRequest:
    prefix: str = ""
    key_marker: str = ""
    upload_id_marker: str = ""
    max_uploads: int = MAX_LIST_UPLOADS
    encoding_type: str = ""


def integer_argument(query: Mapping[str, str], name: str, default: int) -> int:
    value = query.get(name, str(default))
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_INTEGER_ARGUMENT:
        message = f"Argument {name} must be an integer between 0 and {MAX_INTEGER_ARGUMENT}"
        raise invalid_argument(name, value, message)
    return int(value)


def parse_parts_request(query: Mapping[str, str]) -> PartsRequest:
    """ListParts' max-parts (at most 1000 are returned) and part-number-marker."""
    max_parts = integer_argument(query, "max-parts", MAX_LIST_PARTS)
    marker = integer_argument(query, "part-number-marker", 0)
    return PartsRequest(min(max_parts, MAX_LIST_PARTS), marker)


def parse_uploads_request(query: Mapping[str, str]) -> UploadsRequest:
    """ListMultipartUploads' prefix, key-marker, upload-id-marker, max-uploads, encoding-type."""
    if query.get("delimiter"):
        message = "This local S3 does not implement delimiter in ListMultipartUploads."
        raise S3Error("NotImplemented", message)
    encoding = query.get("encoding-type", "")
    if encoding not in ("", "url"):
        message = "Invalid Encoding Method specified in Request"
        raise invalid_argument("encoding-type", encoding, message)
    max_uploads = integer_argument(query, "max-uploads", MAX_LIST_UPLOADS)
    return UploadsRequest(
        prefix=query.get("prefix", ""),
        key_marker=query.get("key-marker", ""),
        upload_id_marker=query.get("upload-id-marker", ""),
        max_uploads=min(max_uploads, MAX_LIST_UPLOADS),
        encoding_type=encoding,
    )


def parts_page(parts: Sequence[Part], request: PartsRequest) -> tuple[list[Part], bool]:
    """The parts after the marker, in part-number order, and whether more follow."""
    after = [part for part in sorted(parts, key=lambda p: p.number) if part.number > request.marker]
    return after[: request.max_parts], len(after) > request.max_parts


def uploads_page(
    uploads: Sequence[MultipartUpload], request: UploadsRequest
) -> tuple[list[MultipartUpload], bool]:
    """Uploads by key, then by initiation (which is upload-id order here); with a key-marker,
    only later keys, or the same key's later upload ids when upload-id-marker is given too."""
    marker = (request.key_marker, request.upload_id_marker or "\U0010ffff")
    chosen = [
        upload
        for upload in sorted(uploads, key=lambda u: (u.key, u.upload_id))
        if upload.key.startswith(request.prefix)
        and (not request.key_marker or (upload.key, upload.upload_id) > marker)
    ]
    return chosen[: request.max_uploads], len(chosen) > request.max_uploads


# --- S3's XML answers ---


def initiate_result(upload: MultipartUpload) -> bytes:
    elements = {"Bucket": upload.bucket, "Key": upload.key, "UploadId": upload.upload_id}
    return document("InitiateMultipartUploadResult", xml_elements(elements))


def complete_result(location: str, stored: StoredObject) -> bytes:
    elements = {
        "Location": location,
        "Bucket": stored.bucket,
        "Key": stored.key,
        "ETag": stored.etag,
    }
    return document("CompleteMultipartUploadResult", xml_elements(elements))


def list_parts_result(
    upload: MultipartUpload, request: PartsRequest, parts: Sequence[Part]
) -> bytes:
    """ListPartsResult, elements in the order of AWS's example."""
    page, truncated = parts_page(parts, request)
    head = {
        "Bucket": upload.bucket,
        "Key": upload.key,
        "UploadId": upload.upload_id,
        "StorageClass": "STANDARD",
        "PartNumberMarker": request.marker,
        "NextPartNumberMarker": page[-1].number if page else request.marker,
        "MaxParts": request.max_parts,
        "IsTruncated": str(truncated).lower(),
    }
    body = xml_elements(head) + "".join(part_xml(part) for part in page)
    return document("ListPartsResult", body)


def part_xml(part: Part) -> str:
    elements = {
        "PartNumber": part.number,
        "LastModified": s3_timestamp(part.last_modified),
        "ETag": part.etag,
        "Size": part.size,
    }
    return f"<Part>{xml_elements(elements)}</Part>"


def list_uploads_result(
    bucket: str, request: UploadsRequest, uploads: Sequence[MultipartUpload]
) -> bytes:
    """ListMultipartUploadsResult; with encoding-type=url, keys are URL-encoded as in
    ListObjectsV2."""
    page, truncated = uploads_page(uploads, request)
    encode = (lambda key: quote(key, safe="/")) if request.encoding_type else str
    head = [
        ("Bucket", bucket),
        ("KeyMarker", encode(request.key_marker)),
        ("UploadIdMarker", request.upload_id_marker),
        ("NextKeyMarker", encode(page[-1].key) if truncated else ""),
        ("Prefix", encode(request.prefix)),
        ("NextUploadIdMarker", page[-1].upload_id if truncated else ""),
        ("MaxUploads", request.max_uploads),
        ("IsTruncated", str(truncated).lower()),
    ]
    body = xml_elements(head) + "".join(upload_xml(upload, encode) for upload in page)
    if request.encoding_type:
        body += xml_elements({"EncodingType": request.encoding_type})
    return document("ListMultipartUploadsResult", body)


def upload_xml(upload: MultipartUpload, encode: Callable[[str], str]) -> str:
    elements = {
        "Key": encode(upload.key),
        "UploadId": upload.upload_id,
        "StorageClass": "STANDARD",
        "Initiated": s3_timestamp(upload.initiated),
    }
    return f"<Upload>{xml_elements(elements)}</Upload>"


def s3_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as S3 writes times in XML."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03}Z"


# --- on disk ---


class MultipartStore:
    """Uploads in progress: data_dir/multipart/<SHA-256 of the upload id>/ holds upload.json
    (bucket, key, time, what the object will keep), a part-NNNNN.json record per part number
    and each part's bytes in a file named at random. The id names a folder only after it is
    checked, and then through its hash, so no id can reach outside the data folder. Sending a
    part number again replaces its record in one rename; the bytes it replaced go after.

    Parts stay across restarts, as S3 keeps an incomplete upload until it is completed or
    aborted; both remove the upload's record first, so it is gone at once, then its files.
    """

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.root = objects.multipart_dir
        private_folder(self.root)
        self._locks = tuple(threading.Lock() for _ in range(64))

    def folder(self, upload_id: str | None) -> Path:
        if upload_id is None or not UPLOAD_ID.fullmatch(upload_id):
            raise no_such_upload(upload_id or "")
        return self.root / hashlib.sha256(upload_id.encode()).hexdigest()

    def create(
        self, bucket: str, key: str, attributes: Mapping[str, object], now: datetime
    ) -> MultipartUpload:
        upload = MultipartUpload(new_upload_id(now), bucket, key, now, dict(attributes))
        folder = private_folder(self.folder(upload.upload_id))
        record = {
            "upload_id": upload.upload_id,
            "bucket": bucket,
            "key": key,
            "initiated": now.isoformat(),
            "attributes": upload.attributes,
        }
        self.write_record(folder / MULTIPART_RECORD, record)
        return upload

    def get(self, bucket: str, key: str, upload_id: str | None) -> MultipartUpload:
        """The upload, or NoSuchUpload for an id never given, completed, aborted, or given for
        another bucket or key."""
        try:
            text = (self.folder(upload_id) / MULTIPART_RECORD).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise no_such_upload(upload_id or "") from None
        upload = upload_from_record(json.loads(text))
        if (upload.bucket, upload.key) != (bucket, key):
            raise no_such_upload(upload_id or "")
        return upload

    def save_part(
        self, upload: MultipartUpload, number: int, received: Upload, now: datetime
    ) -> Part:
        """The received part becomes part `number`, if the upload still exists (a Complete or
        Abort may have ended it while the part arrived)."""
        received.close()
        folder = self.folder(upload.upload_id)
        part = Part(number, received.etag, received.size, now, folder / new_blob_name())
        with self.lock(upload.upload_id):
            self.get(upload.bucket, upload.key, upload.upload_id)
            previous = self.part(folder, number)
            try:
                os.replace(received.path, part.path)
                self.write_record(folder / part_record_name(number), part_record(part))
            except BaseException:
                part.path.unlink(missing_ok=True)
                raise
        if previous is not None:
            previous.path.unlink(missing_ok=True)
        return part

    def parts(self, upload: MultipartUpload) -> dict[int, Part]:
        folder = self.folder(upload.upload_id)
        names = sorted(folder.glob(f"{PART_RECORD_PREFIX}*.json"))
        found = (
            self.part(folder, int(name.stem.removeprefix(PART_RECORD_PREFIX))) for name in names
        )
        return {part.number: part for part in found if part is not None}

    def part(self, folder: Path, number: int) -> Part | None:
        try:
            record = json.loads((folder / part_record_name(number)).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        modified = datetime.fromisoformat(record["last_modified"])
        return Part(number, record["etag"], record["size"], modified, folder / record["blob"])

    def complete(
        self, upload: MultipartUpload, requested: Sequence[tuple[int, str]], now: datetime
    ) -> StoredObject:
        """The chosen parts become the object in ObjectStore's one atomic rename, made of the
        parts' own files (no byte copied); then the upload and every part's name in it go."""
        with self.lock(upload.upload_id):
            upload = self.get(upload.bucket, upload.key, upload.upload_id)
            chosen = chosen_parts(requested, self.parts(upload), upload.upload_id)
            record = {
                "bucket": upload.bucket,
                "key": upload.key,
                "last_modified": now.isoformat(),
                **upload.attributes,
            }
            size = sum(part.size for part in chosen)
            etag = multipart_etag([part.etag for part in chosen])
            stored = self.objects.commit_parts([p.path for p in chosen], size, etag, record)
            self.remove(upload.upload_id)
        return stored

    def abort(self, upload: MultipartUpload) -> None:
        with self.lock(upload.upload_id):
            self.remove(upload.upload_id)

    def uploads(self, bucket: str) -> list[MultipartUpload]:
        """Every upload in progress in the bucket, in no particular order."""
        found = []
        for folder in self.root.iterdir():
            with contextlib.suppress(FileNotFoundError):
                record = json.loads((folder / MULTIPART_RECORD).read_text(encoding="utf-8"))
                found.append(upload_from_record(record))
        return [upload for upload in found if upload.bucket == bucket]

    def remove(self, upload_id: str) -> None:
        folder = self.folder(upload_id)
        (folder / MULTIPART_RECORD).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)

    def write_record(self, target: Path, record: Mapping[str, object]) -> None:
        """Written beside the objects' temporary files, then renamed: whole or absent."""
        staged = self.objects.tmp_dir / f"{uuid.uuid4().hex}.json"
        try:
            write_private_json(staged, record)
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)

    def lock(self, upload_id: str) -> threading.Lock:
        """Saving a part, completing and aborting one upload take turns."""
        digest = hashlib.sha256(upload_id.encode()).digest()
        return self._locks[digest[0] % len(self._locks)]


def new_blob_name() -> str:
    return f"{uuid.uuid4().hex}{PART_BLOB_SUFFIX}"


def part_record_name(number: int) -> str:
    return f"{PART_RECORD_PREFIX}{number:05d}.json"


def part_record(part: Part) -> dict[str, object]:
    return {
        "etag": part.etag,
        "size": part.size,
        "last_modified": part.last_modified.isoformat(),
        "blob": part.path.name,
    }


def upload_from_record(record: Mapping) -> MultipartUpload:
    return MultipartUpload(
        upload_id=record["upload_id"],
        bucket=record["bucket"],
        key=record["key"],
        initiated=datetime.fromisoformat(record["initiated"]),
        attributes=record["attributes"],
    )


def multipart_uploads(config: S3Config, bucket: str) -> list[MultipartUpload]:
    """The uploads in progress in a bucket: what tests check after a Complete or an Abort."""
    return MultipartStore(ObjectStore(config.data_dir)).uploads(bucket)
