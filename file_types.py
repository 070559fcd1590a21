"""File types for people: what each type is called, and how a file's first bytes show its type.

The page speaks of "PNG images, PDFs and text files", never of image/png: `TYPE_NAMES` is the
one table of those names, and server.py hands the page the table and the sentence once, with
the limits.
`sniff` reads a file's magic number, for the no-JavaScript form, whose signed policy is made
before the user picks a file and so cannot pin its type: /uploads/done reads the first bytes
of what S3 stored and refuses (and deletes) a file that is not what it was declared to be.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import media_types
import s3_client
from settings import Config

# Families first ("image/*"), then the exact types people pick from in the no-JavaScript form.
# Each name is singular, and its plural takes an "s".
TYPE_NAMES = {
    "image/*": "image",
    "text/*": "text file",
    "image/png": "PNG image",
    "image/jpeg": "JPEG image",
    "image/gif": "GIF image",
    "image/webp": "WebP image",
    "application/pdf": "PDF",
    "text/plain": "text file",
}

# Magic numbers: the bytes each format's specification puts first (PNG: RFC 2083 section 3.1;
# JPEG: the SOI marker and the first marker's FF; GIF89a spec section 17; PDF 1.7 section 7.5.2).
SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)
SNIFF_BYTES = 512  # enough for every signature, and for a fair look at whether text is text
TEXT_CONTROLS = frozenset(range(32)) - {9, 10, 12, 13}  # tab, line feed, form feed, return


def type_name(pattern: str) -> str:
    """ "PNG image" for image/png, "image" for another image; else the type itself."""
    family = pattern.split("/")[0] + "/*"
    return TYPE_NAMES.get(pattern) or TYPE_NAMES.get(family) or pattern


def plural_name(pattern: str) -> str:
    """ "PNG images" for image/png; a type with no name here is shown as itself."""
    return TYPE_NAMES[pattern] + "s" if pattern in TYPE_NAMES else pattern


def describe(patterns: Iterable[str]) -> str:
    """ "images, PDFs and text files": the allowed types as a sentence's list."""
    names = list(dict.fromkeys(plural_name(pattern) for pattern in patterns))
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


@dataclass(frozen=True)
class FormKind:
    """One no-JavaScript form: the files it takes (`accept`, which also filters the browser's
    file picker) and the Content-Type its policy pins: an exact type, or a family's prefix
    ("image/") under S3's starts-with condition, with the `choices` a person picks from."""

    name: str
    accept: str
    content_type: str
    choices: dict[str, str]


def form_kinds(patterns: Iterable[str]) -> list[FormKind]:
    """A form per allowed pattern. A family with no named types here ("video/*") gets none:
    nobody could say which type the file is, so it is offered with JavaScript only."""
    kinds = []
    for pattern in patterns:
        prefix = pattern.removesuffix("*")
        named = {t: n for t, n in TYPE_NAMES.items() if t.startswith(prefix) and t != pattern}
        if pattern == prefix:
            kinds.append(FormKind(plural_name(pattern), pattern, pattern, {}))
        elif named:
            kinds.append(FormKind(plural_name(pattern), pattern, prefix, named))
    return kinds


def sniff(head: bytes) -> str | None:
    """The type the first bytes show: a signature above, WebP's RIFF....WEBP, or text/plain
    for UTF-8 without control characters; None when the bytes say nothing we know."""
    for magic, content_type in SIGNATURES:
        if head.startswith(magic):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return "text/plain" if looks_like_text(head) else None


def looks_like_text(head: bytes) -> bool:
    """UTF-8 with no control characters but whitespace; a character cut at the end is fine."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3 or error.reason != "unexpected end of data":
            return False
    return bool(head) and not TEXT_CONTROLS.intersection(head)


def acceptable(declared: str, head: bytes, patterns: Iterable[str]) -> bool:
    """An allowed type whose first bytes agree with it. A type whose bytes we cannot recognise
    (one configured beyond the table) is taken at its word."""
    known = {content_type for _, content_type in SIGNATURES} | {"image/webp", "text/plain"}
    fits = declared not in known or sniff(head) == declared
    return media_types.matches(declared, patterns) and fits


def keep_only_allowed(config: Config, key: str, declared: str, moment: datetime) -> None:
    """A no-JavaScript upload's type is the person's word: the object's first bytes (a ranged
    GET, RFC 9110 section 14.2) must agree with it and be allowed, or the object is deleted.
    Raises S3Failure, which the app answers like any other refusal about the object."""
    end = SNIFF_BYTES - 1
    reply = s3_client.send(config, "GET", key, headers={"Range": f"bytes=0-{end}"}, now=moment)
    if reply.status not in (200, 206):
        raise s3_client.S3Failure(502, f"S3 answered HTTP {reply.status} to reading the file.")
    if acceptable(declared, reply.body[:SNIFF_BYTES], config.allowed_types):
        return
    deleted = s3_client.send(config, "DELETE", key, now=moment)
    wrong = f"the file's first bytes are not those of {plural_name(declared)}, the kind chosen"
    if deleted.status not in (200, 204):
        raise s3_client.S3Failure(502, f"{wrong}, and S3 would not delete it.")
    raise s3_client.S3Failure(415, f"{wrong}, so it was deleted.")
