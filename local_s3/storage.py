"""Step 3: storing. Objects on disk, named by hash, each replaced in one atomic rename, so a
rejected, interrupted or killed upload never shows as an object ("Amazon S3 never stores
partial objects"). Also the buckets' CORS rules set with PUT ?cors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from local_s3.config import S3Config
from local_s3.cors import CorsRule

# The folder holds every object, private or not, and the secret key's file: only the user
# running the local S3 may enter it or read what is in it.
PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600


def private_folder(path: Path) -> Path:
    """Made (with its parents) and set to 0700 whatever the umask: mkdir's mode is masked by
    the umask, chmod's is not."""
    path.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    path.chmod(PRIVATE_FOLDER)
    return path


def create_private_file(path: Path) -> BinaryIO:
    """A new file, 0600 whatever the umask. O_EXCL: never an existing file, nor a symlink."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE)
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "wb")


def write_private_json(path: Path, document: object) -> None:
    with create_private_file(path) as file:
        file.write(json.dumps(document).encode())


@dataclass(frozen=True)
class StoredObject:
    """An object as S3 would describe it, plus where its bytes are on disk: one file for a PUT
    or a POST, the parts' own files, in order, for a completed multipart upload."""

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str
    metadata: Mapping[str, str]
    acl: str
    headers: Mapping[str, str]
    last_modified: datetime
    blobs: tuple[Path, ...]
    checksum: Mapping[str, str] = field(default_factory=dict)  # {"algorithm", "value"} or {}

    def read_bytes(self) -> bytes:
        """The whole object in memory: for small objects (records, tests), never a download."""
        return b"".join(blob.read_bytes() for blob in self.blobs)


class ObjectReader:
    """An object's bytes, its files read one after another. `release` runs once, at close:
    until then ObjectStore keeps every file of the object, even if the key is replaced."""

    def __init__(self, blobs: Sequence[Path], release: Callable[[], None]) -> None:
        self._waiting = list(blobs)
        self._file: BinaryIO | None = None
        self._release: Callable[[], None] | None = release

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            return b"".join(iter(lambda: self._read_some(-1), b""))
        return self._read_some(size)

    def _read_some(self, size: int) -> bytes:
        """Up to `size` bytes (all of a file for -1) from the file being read, or the next."""
        while self._file is not None or self._waiting:
            if self._file is None:
                self._file = self._waiting.pop(0).open("rb")
            if chunk := self._file.read(size):
                return chunk
            self._file.close()
            self._file = None
        return b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._release is not None:
            release, self._release = self._release, None
            release()


class BackgroundMD5:
    """MD5 computed in its own thread. hashlib releases the GIL on large buffers, so hashing
    overlaps writing the file instead of adding to it; the queue is bounded (a few MB), so a
    slow hash slows the upload down rather than filling memory."""

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, name="local-s3-md5", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._md5.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def finish(self) -> str:
        """Waits for the last chunk and returns the hex digest; safe to call more than once."""
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()
        return self._md5.hexdigest()


class Upload:
    """A file part arriving: written to a temporary file and hashed as it streams, never held."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO | None = None
        self.md5: BackgroundMD5 | None = None
        self.size = 0

    def begin(self) -> None:
        self.file = create_private_file(self.path)
        self.md5 = BackgroundMD5()

    def write(self, chunk: bytes) -> None:
        self.md5.update(chunk)
        self.file.write(chunk)
        self.size += len(chunk)

    @property
    def etag(self) -> str:
        """S3's ETag for a single-part upload: the quoted hex MD5 of the bytes."""
        return f'"{self.md5.finish()}"'

    def close(self) -> None:
        """On a full disk, closing flushes the buffer and fails again: the hashing thread
        must still end."""
        try:
            if self.file is not None:
                self.file.close()
        finally:
            if self.md5 is not None:
                self.md5.finish()

    def discard(self) -> None:
        try:
            self.close()
        finally:
            self.path.unlink(missing_ok=True)


# How multipart.py lays out an upload in progress (data_dir/multipart/<hash>/), named here so
# that leftover_files can tell its parts from what a killed request left.
MULTIPART_RECORD = "upload.json"
PART_RECORD_PREFIX = "part-"
PART_BLOB_SUFFIX = ".bin"


class ObjectStore:
    """Objects on disk: data_dir/blobs/ holds bytes, data_dir/objects/<hash>.json the rest.

    A record's file name is the SHA-256 of bucket and key, never a path built from the key, so no
    key (``..``, ``/etc/passwd``, NUL, 1024 bytes of emoji) can name a file outside the folder.
    A new object is one os.replace of its record, which names fresh blobs: readers see the old
    object or the new one, whole, never a mix ("Amazon S3 never stores partial objects"). The
    blobs a record no longer names are deleted once no reader has them open, so a download that
    began before the key was replaced or deleted still ends with the bytes it began with.
    """

    def __init__(self, data_dir: Path) -> None:
        self.tmp_dir = data_dir / ".tmp"
        self.blob_dir = data_dir / "blobs"
        self.record_dir = data_dir / "objects"
        self.cors_dir = data_dir / "cors"
        for folder in (data_dir, self.tmp_dir, self.blob_dir, self.record_dir, self.cors_dir):
            private_folder(folder)
        self._locks = tuple(threading.Lock() for _ in range(64))
        self._versions: dict[tuple, StoredObject] = {}
        self._readers: Counter[str] = Counter()  # blob name: downloads that have it open
        self._retired: set[str] = set()  # blobs no record names, waiting for their readers
        self._readers_lock = threading.Lock()
        self.multipart_dir = data_dir / "multipart"  # made by multipart.MultipartStore

    def record_path(self, bucket: str, key: str) -> Path:
        digest = hashlib.sha256(f"{bucket}\0{key}".encode()).hexdigest()
        return self.record_dir / f"{digest}.json"

    @contextlib.contextmanager
    def upload(self) -> Iterator[Upload]:
        """A temporary file that is removed unless commit() moved it into place."""
        upload = Upload(self.tmp_dir / f"{uuid.uuid4().hex}.part")
        try:
            yield upload
        finally:
            upload.discard()

    def commit(self, upload: Upload, record: Mapping[str, object]) -> StoredObject:
        """A PUT's or a POST's file becomes the object's one blob (a rename, no copy)."""
        upload.close()
        blob = self.blob_dir / uuid.uuid4().hex
        os.replace(upload.path, blob)
        return self._install({**record, "size": upload.size, "etag": upload.etag}, [blob])

    def commit_parts(
        self, parts: Sequence[Path], size: int, etag: str, record: Mapping[str, object]
    ) -> StoredObject:
        """A completed multipart upload becomes an object made of its parts' files, each given
        a second name among the blobs (a hard link): no byte is copied, so completing 5 TiB
        takes as long as completing 5 MiB, and the upload's folder can then go whole."""
        blobs: list[Path] = []
        try:
            for part in parts:
                blobs.append(self.blob_dir / uuid.uuid4().hex)
                os.link(part, blobs[-1])
        except BaseException:
            for blob in blobs:
                blob.unlink(missing_ok=True)
            raise
        return self._install({**record, "size": size, "etag": etag}, blobs)

    def _install(self, record: Mapping[str, object], blobs: list[Path]) -> StoredObject:
        """Blobs first, then the record in one os.replace; the replaced object's blobs go last.
        Concurrent commits of one key take turns (a lock per key hash) to swap the record, so
        each retires exactly the blobs it replaced: last complete write wins, nothing leaks."""
        record = {**record, "blobs": [blob.name for blob in blobs]}
        staged = self.tmp_dir / f"{blobs[0].name}.json"
        target = self.record_path(str(record["bucket"]), str(record["key"]))
        try:
            write_private_json(staged, record)
            with self._lock_for(target):
                previous = self._blob_names(target)
                os.replace(staged, target)
        except BaseException:
            for blob in blobs:
                blob.unlink(missing_ok=True)
            staged.unlink(missing_ok=True)
            raise
        self._retire(previous)
        return self._stored(record)

    def delete(self, bucket: str, key: str) -> None:
        """The record goes first, in the key's turn, so no reader finds a record without its
        blobs; deleting a missing key does nothing, as S3's DeleteObject does."""
        target = self.record_path(bucket, key)
        with self._lock_for(target):
            blobs = self._blob_names(target)
            target.unlink(missing_ok=True)
        self._retire(blobs)

    def get(self, bucket: str, key: str) -> StoredObject | None:
        try:
            text = self.record_path(bucket, key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return self._stored(json.loads(text))

    def open(self, bucket: str, key: str) -> tuple[StoredObject, ObjectReader] | None:
        """The object and a reader of its bytes. The record is read and its blobs counted as
        being read in one step that _retire also takes, so no blob is deleted under a reader."""
        with self._readers_lock:
            stored = self.get(bucket, key)
            if stored is None or not all(blob.exists() for blob in stored.blobs):
                return None  # a file removed by hand: the object is not whole, so not there
            names = [blob.name for blob in stored.blobs]
            self._readers.update(names)
        return stored, ObjectReader(stored.blobs, lambda: self._release(names))

    def _release(self, names: list[str]) -> None:
        with self._readers_lock:
            self._readers.subtract(names)
            finished = [name for name in names if self._readers[name] <= 0]
            for name in finished:
                del self._readers[name]
            self._delete_blobs(name for name in finished if name in self._retired)

    def _retire(self, names: Iterable[str]) -> None:
        """Blobs no record names any more: deleted now, or by the last reader's close."""
        with self._readers_lock:
            names = list(names)
            self._retired.update(name for name in names if name in self._readers)
            self._delete_blobs(name for name in names if name not in self._readers)

    def _delete_blobs(self, names: Iterable[str]) -> None:
        for name in list(names):
            self._retired.discard(name)
            (self.blob_dir / name).unlink(missing_ok=True)

    def cors_rules(self, bucket: str) -> tuple[CorsRule, ...] | None:
        try:
            rules = json.loads(self.cors_path(bucket).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return tuple(CorsRule(*(tuple(v) if isinstance(v, list) else v for v in r)) for r in rules)

    def set_cors_rules(self, bucket: str, rules: tuple[CorsRule, ...] | None) -> None:
        """Replaces (or, with None, deletes) a bucket's CORS configuration atomically."""
        if rules is None:
            self.cors_path(bucket).unlink(missing_ok=True)
            return
        staged = self.tmp_dir / f"{uuid.uuid4().hex}.cors.json"
        write_private_json(staged, [astuple(rule) for rule in rules])
        os.replace(staged, self.cors_path(bucket))

    def cors_path(self, bucket: str) -> Path:
        return self.cors_dir / f"{hashlib.sha256(bucket.encode()).hexdigest()}.json"

    def records(self) -> list[StoredObject]:
        """Every object. A record is parsed once per version: a new version is a new file (an
        os.replace), so its inode, time and size name it, and a listing is one directory read."""
        known, seen = self._versions, {}
        for entry in os.scandir(self.record_dir):
            try:
                info = entry.stat()
                version = (entry.name, entry.inode(), info.st_mtime_ns, info.st_size)
                seen[version] = known.get(version) or self._stored(
                    json.loads(Path(entry.path).read_text("utf-8"))
                )
            except FileNotFoundError:  # deleted while the folder was read
                continue
        self._versions = seen
        return list(seen.values())

    def leftover_files(self) -> list[Path]:
        """Temporary files, and blobs no record points at. Between requests: none."""
        referenced = {blob for stored in self.records() for blob in stored.blobs}
        blobs = [path for path in self.blob_dir.iterdir() if path not in referenced]
        return sorted([*self.tmp_dir.iterdir(), *blobs, *self.unreferenced_part_files()])

    def unreferenced_part_files(self) -> list[Path]:
        """The parts of uploads in progress are kept (S3 keeps them until the upload is completed
        or aborted); what is not one is a leftover: a part's bytes no part record names (killed
        between its two renames), and the files of an upload whose record is gone (killed while
        completing or aborting it)."""
        leftovers: list[Path] = []
        folders = self.multipart_dir.iterdir() if self.multipart_dir.exists() else ()
        for folder in folders:
            if not (folder / MULTIPART_RECORD).exists():
                leftovers += folder.iterdir()
                continue
            records = folder.glob(f"{PART_RECORD_PREFIX}*.json")
            named = {json.loads(path.read_text("utf-8"))["blob"] for path in records}
            leftovers += [p for p in folder.glob(f"*{PART_BLOB_SUFFIX}") if p.name not in named]
        return leftovers

    def remove_leftovers(self) -> int:
        """A process killed mid-upload (SIGKILL, power loss) leaves its temporary file, or a blob
        no record points at yet; they were never objects. Only safe with no upload in flight,
        so LocalS3 calls it before it serves, and one folder belongs to one server."""
        leftovers = self.leftover_files()
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    def _lock_for(self, target: Path) -> threading.Lock:
        return self._locks[int(target.stem[:8], 16) % len(self._locks)]

    def _blob_names(self, target: Path) -> list[str]:
        try:
            return blob_names(json.loads(target.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return []

    def _stored(self, record: Mapping) -> StoredObject:
        return StoredObject(
            bucket=record["bucket"],
            key=record["key"],
            size=record["size"],
            etag=record["etag"],
            content_type=record["content_type"],
            metadata=record["metadata"],
            acl=record["acl"],
            headers=record["headers"],
            last_modified=datetime.fromisoformat(record["last_modified"]),
            blobs=tuple(self.blob_dir / Path(name).name for name in blob_names(record)),
            checksum=record.get("checksum", {}),
        )


def blob_names(record: Mapping) -> list[str]:
    """The files a record names, in order; records written before objects could be made of
    parts name their one file under "blob"."""
    return list(record["blobs"]) if "blobs" in record else [record["blob"]]


def stored_object(config: S3Config, bucket: str, key: str) -> StoredObject | None:
    """The object stored under bucket/key, or None: what tests check after an upload."""
    return ObjectStore(config.data_dir).get(bucket, key)


def list_objects(config: S3Config) -> list[StoredObject]:
    """Every stored object, in no particular order."""
    return ObjectStore(config.data_dir).records()


def leftover_files(config: S3Config) -> list[Path]:
    """Temporary files and unreferenced blobs. After any finished request there must be none:
    a rejected or interrupted upload leaves nothing behind."""
    return ObjectStore(config.data_dir).leftover_files()
