"""S3's additional checksums: the one a POST form's fields or a PUT's headers name, its value's
shape, the digest computed while the body streams, and the header GET and HEAD return.
https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html
https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html

The value is the base64 of the digest's bytes (a CRC big-endian), e.g. x-amz-checksum-crc32:
"y/Q5Jg==" for "123456789". Where AWS documents no wording, S3's answers as clients report them:
InvalidRequest "Value for x-amz-checksum-sha256 header is invalid." for a malformed value,
BadDigest "The SHA256 you specified did not match the calculated checksum." for a mismatch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import crc32c

from local_s3.errors import S3Error

PREFIX = "x-amz-checksum-"
# Fields and headers that start like a checksum but carry none.
NOT_VALUES = frozenset({"x-amz-checksum-algorithm", "x-amz-checksum-mode", "x-amz-checksum-type"})
# CRC64NVME is an S3 checksum too; the local S3 cannot compute it, and never stores unchecked.
UNSUPPORTED = frozenset({"crc64nvme"})
MODE_ENABLED = "ENABLED"  # x-amz-checksum-mode: GET and HEAD return the checksum only when asked
FULL_OBJECT = "FULL_OBJECT"  # x-amz-checksum-type of a single-part upload


class Crc32:
    """zlib's CRC-32 behind hashlib's update/digest, so every algorithm streams alike."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


class Crc32c(Crc32):
    def update(self, data: bytes) -> None:
        self.value = crc32c.crc32c(data, self.value)


# lowercase name -> (digest bytes, a fresh streaming hasher)
ALGORITHMS: Mapping[str, tuple[int, Callable[[], object]]] = {
    "crc32": (4, Crc32),
    "crc32c": (4, Crc32c),
    "sha1": (20, lambda: hashlib.sha1(usedforsecurity=False)),
    "sha256": (32, hashlib.sha256),
}


@dataclass(frozen=True)
class Checksum:
    """A checksum as S3 keeps it: the algorithm's name (lowercase) and the base64 value."""

    algorithm: str
    value: str

    def headers(self) -> dict[str, str]:
        return {f"{PREFIX}{self.algorithm}": self.value, "x-amz-checksum-type": FULL_OBJECT}


def requested_checksum(fields: Mapping[str, str], algorithm_field: str) -> Checksum | None:
    """The checksum a request asks S3 to verify, from lowercased form fields or headers: one
    x-amz-checksum-<algorithm> value at most, well-formed, agreeing with `algorithm_field`
    (x-amz-checksum-algorithm in a form, x-amz-sdk-checksum-algorithm on a PUT) if sent."""
    named = sorted(name for name in fields if name.startswith(PREFIX) and name not in NOT_VALUES)
    if len(named) > 1:
        raise S3Error(
            "InvalidRequest",
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
        )
    checksum = checked_value(named[0], fields[named[0]]) if named else None
    declared = fields.get(algorithm_field)
    if declared is not None:
        if declared.lower() not in ALGORITHMS:
            raise invalid_value(algorithm_field)
        if checksum is None:
            raise S3Error(
                "InvalidRequest",
                f"{algorithm_field} specified, but no corresponding x-amz-checksum-* or "
                "x-amz-trailer headers were found.",
            )
        if declared.lower() != checksum.algorithm:
            raise invalid_value(algorithm_field)
    return checksum


def checked_value(name: str, value: str) -> Checksum:
    algorithm = name.removeprefix(PREFIX)
    if algorithm in UNSUPPORTED:
        raise S3Error("NotImplemented", Header=name)
    if algorithm not in ALGORITHMS:
        raise invalid_value(name)
    try:
        if len(base64.b64decode(value, validate=True)) == ALGORITHMS[algorithm][0]:
            return Checksum(algorithm, value)
    except (binascii.Error, ValueError):
        pass
    raise invalid_value(name)


def invalid_value(name: str) -> S3Error:
    return S3Error("InvalidRequest", f"Value for {name} header is invalid.")


class RunningChecksum:
    """The digest of the bytes so far, updated chunk by chunk: the body is never held."""

    def __init__(self, expected: Checksum) -> None:
        self.expected = expected
        self.hasher = ALGORITHMS[expected.algorithm][1]()

    def update(self, chunk: bytes) -> None:
        self.hasher.update(chunk)

    def verify(self) -> Checksum:
        """The checksum to keep with the object, or BadDigest when the bytes differ."""
        received = base64.b64encode(self.hasher.digest()).decode()
        if received != self.expected.value:
            name = self.expected.algorithm.upper()
            raise S3Error(
                "BadDigest", f"The {name} you specified did not match the calculated checksum."
            )
        return self.expected


def running(expected: Checksum | None) -> RunningChecksum | None:
    return None if expected is None else RunningChecksum(expected)


def response_headers(stored: Mapping[str, str], environ: Mapping[str, object]) -> dict[str, str]:
    """GET and HEAD return the stored checksum only with x-amz-checksum-mode: ENABLED."""
    if not stored or environ.get("HTTP_X_AMZ_CHECKSUM_MODE") != MODE_ENABLED:
        return {}
    return Checksum(stored["algorithm"], stored["value"]).headers()
