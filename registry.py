"""The list of recorded uploads, in SQLite.

Its interface is three calls (add, get, recent) so that it can move into S3 itself without the
web app noticing.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

RECENT_UPLOADS = 50
COLUMNS = ("key", "filename", "size", "etag", "content_type", "created_at")
# A full disk or a locked database; the caller answers 503 and the object stays safe in S3.
RegistryError = sqlite3.Error


class UploadRegistry:
    """One short connection per call, WAL so that readers never wait for a writer."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path) -> UploadRegistry:
        path.parent.mkdir(parents=True, exist_ok=True)
        registry = cls(path)
        with registry.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS uploads (key TEXT PRIMARY KEY, filename TEXT NOT NULL,"
                " size INTEGER NOT NULL, etag TEXT NOT NULL, content_type TEXT NOT NULL,"
                " created_at TEXT NOT NULL)"
            )
        return registry

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=5)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def add(self, record: Mapping[str, Any]) -> None:
        """Insert, or update when the same key is reported again (the last upload wins)."""
        with self.connect() as db:
            db.execute(
                "INSERT INTO uploads VALUES (:key, :filename, :size, :etag, :content_type,"
                " :created_at) ON CONFLICT(key) DO UPDATE SET filename=excluded.filename,"
                " size=excluded.size, etag=excluded.etag, content_type=excluded.content_type,"
                " created_at=excluded.created_at",
                {column: record[column] for column in COLUMNS},
            )

    def get(self, key: str) -> dict[str, Any] | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM uploads WHERE key = ?", (key,)).fetchone()
            return dict(row) if row else None

    def recent(self, limit: int = RECENT_UPLOADS) -> list[dict[str, Any]]:
        with self.connect() as db:
            rows = db.execute(
                "SELECT * FROM uploads ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,)
            )
            return [dict(row) for row in rows]
