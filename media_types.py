"""What a browser does with an uploaded file's Content-Type: which types are safe to sign, and
which extension a type's key gets.

S3 serves an object with the Content-Type it was uploaded with, inline, from the bucket's own
origin. An image or a video is only shown; but an SVG, an HTML or XHTML page, XML (with its
stylesheets) or JavaScript opened from a download link runs its script in that origin: stored
cross-site scripting, with the bucket's name on it. So the app signs, by default, only the
types on `SAFE_TYPES`, even when a pattern such as `image/*` matches more (`image/svg+xml`);
every other type needs UPLOAD_ALLOW_ACTIVE_TYPES=on, and its policy then pins
`Content-Disposition: attachment`, which makes browsers download the object instead of
rendering it (RFC 6266; S3 stores the field and returns it on GET:
https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html).
"""

from __future__ import annotations

from collections.abc import Iterable

# Types a browser shows as an image, plays, shows as text or in its PDF viewer, or downloads:
# none of them runs script in the page's origin. Everything else counts as active.
SAFE_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/bmp",
    "image/heic",
    "image/heif",
    "image/tiff",
    "image/x-icon",
    "audio/mpeg",
    "audio/ogg",
    "audio/wav",
    "audio/webm",
    "audio/aac",
    "audio/flac",
    "audio/mp4",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "application/pdf",
    "text/plain",
    "text/csv",
    "application/json",
    "application/zip",
    "application/gzip",
    "application/octet-stream",
)

# The extension an object key gets for its declared type: from the type the policy pins, never
# from the file's name (a.HTML declared as image/png must not become a .html key).
EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/avif": ".avif",
    "image/bmp": ".bmp",
    "image/heic": ".heic",
    "image/heif": ".heif",
    "image/tiff": ".tiff",
    "image/x-icon": ".ico",
    "image/svg+xml": ".svg",
    "audio/mpeg": ".mp3",
    "audio/ogg": ".ogg",
    "audio/wav": ".wav",
    "audio/webm": ".weba",
    "audio/aac": ".aac",
    "audio/flac": ".flac",
    "audio/mp4": ".m4a",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/ogg": ".ogv",
    "video/quicktime": ".mov",
    "application/pdf": ".pdf",
    "text/plain": ".txt",
    "text/csv": ".csv",
    "application/json": ".json",
    "application/zip": ".zip",
    "application/gzip": ".gz",
    "application/octet-stream": ".bin",
    "text/html": ".html",
    "application/xhtml+xml": ".xhtml",
    "text/xml": ".xml",
    "application/xml": ".xml",
    "text/javascript": ".js",
    "application/javascript": ".js",
    "text/css": ".css",
}
ATTACHMENT = "attachment"


def extension(content_type: str) -> str:
    """ ".png" for image/png; none for a type the table does not name."""
    return EXTENSIONS.get(content_type, "")


def is_active(content_type: str) -> bool:
    """Whether a browser might run it, or render it as a document: anything not known safe."""
    return content_type not in SAFE_TYPES


def matches(content_type: str, patterns: Iterable[str]) -> bool:
    """Exact types, or a whole family with "image/*"."""
    family = content_type.split("/")[0] + "/*"
    return any(pattern in (content_type, family) for pattern in patterns)


def signable(content_type: str, patterns: Iterable[str], allow_active: bool) -> bool:
    """Whether the app signs a form for this type: allowed by UPLOAD_ALLOWED_TYPES, and safe
    unless UPLOAD_ALLOW_ACTIVE_TYPES is on."""
    return matches(content_type, patterns) and (allow_active or not is_active(content_type))


def signable_types(patterns: Iterable[str], allow_active: bool) -> tuple[str, ...]:
    """The types the page may offer: the patterns as set, or, with active types off, the safe
    types they match, so the page's file picker and messages say what the server will sign."""
    if allow_active:
        return tuple(patterns)
    types: list[str] = []
    for pattern in patterns:
        types += [t for t in SAFE_TYPES if matches(t, [pattern]) and t not in types]
    return tuple(types)


def content_disposition(content_type: str) -> str | None:
    """`attachment` for an active type (signed only with UPLOAD_ALLOW_ACTIVE_TYPES=on)."""
    return ATTACHMENT if is_active(content_type) else None
