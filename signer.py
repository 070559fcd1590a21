"""AWS Signature Version 4 for S3, by hand: browser POST policies, presigned URLs, signed requests.

Pure on purpose: standard library only, no I/O, and the clock is a parameter (`now`), so every
value below can be reproduced, printed and compared with AWS's published examples.

The steps, in the order AWS documents them
(https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html):

1. credential_scope    date/region/service/aws4_request
2. string_to_sign      for a browser POST, the base64 policy itself; for a request, the
                       algorithm, timestamp, scope and hash of the canonical request
3. signing_key         HMAC chain: "AWS4"+secret -> date -> region -> service -> aws4_request
4. signature           hex HMAC-SHA256 of the string to sign under the signing key

Run `python signer.py explain --help` to watch each step with AWS's example credentials.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from s3_rules import BUCKET_NAME, DEFAULT_CONTENT_TYPE, MAX_KEY_BYTES, MAX_PRESIGNED_EXPIRES

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
REGION_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
METADATA_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
SUCCESS_STATUSES = ("200", "201", "204")
FILENAME_VARIABLE = "${filename}"  # S3 replaces it, in any form field, with the file's name
# One encoder (json.dumps(...) builds one per call). A policy is built here from strings, numbers,
# lists and dicts and never contains itself, so the encoder need not look for cycles.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)


class SignerError(ValueError):
    """Input that cannot be signed. Raised instead of producing a signature S3 would reject."""


@dataclass(frozen=True)
class Credentials:
    """An access key pair, plus the session token that temporary (STS) credentials carry."""

    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


# --- 1. credential scope -------------------------------------------------------------------------


def amz_date(now: datetime) -> str:
    """The ISO 8601 basic timestamp SigV4 uses everywhere: 20151229T000000Z."""
    t = _utc(now)
    return f"{t.year:04}{t.month:02}{t.day:02}T{t.hour:02}{t.minute:02}{t.second:02}Z"


def date_stamp(now: datetime) -> str:
    """The date part of the scope: 20151229."""
    return amz_date(now)[:8]


def credential_scope(date: str, region: str, service: str = "s3") -> str:
    """Binds a signature to one day, region and service: 20151229/us-east-1/s3/aws4_request."""
    return f"{date}/{region}/{service}/{TERMINATOR}"


def credential(access_key: str, date: str, region: str, service: str = "s3") -> str:
    """The x-amz-credential value: the access key id followed by the scope."""
    return f"{access_key}/{credential_scope(date, region, service)}"


# --- 2. string to sign (for requests; a POST signs its base64 policy) ---------------------------


def string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    """What a header- or query-signed request signs: the canonical request is hashed, not sent."""
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


# --- 3. signing key ------------------------------------------------------------------------------


class DerivedKeys(NamedTuple):
    """The HMAC chain's intermediates, named as in AWS's documentation."""

    date_key: bytes
    date_region_key: bytes
    date_region_service_key: bytes
    signing_key: bytes


def derived_keys(secret_key: str, date: str, region: str, service: str = "s3") -> DerivedKeys:
    """AWS4+secret -> date -> region -> service -> aws4_request: binary keys between steps."""
    date_key = _hmac(f"AWS4{secret_key}".encode(), date)
    date_region_key = _hmac(date_key, region)
    date_region_service_key = _hmac(date_region_key, service)
    return DerivedKeys(
        date_key,
        date_region_key,
        date_region_service_key,
        _hmac(date_region_service_key, TERMINATOR),
    )


@lru_cache(maxsize=64)
def signing_key(secret_key: str, date: str, region: str, service: str = "s3") -> bytes:
    """The day's key. Cached because it changes once a day: signing costs one HMAC, not five."""
    return derived_keys(secret_key, date, region, service).signing_key


# --- 4. signature --------------------------------------------------------------------------------


def signature(signing_key: bytes, string_to_sign: str) -> str:
    """The hex HMAC-SHA256 that goes into x-amz-signature, X-Amz-Signature or Authorization."""
    return _hmac(signing_key, string_to_sign).hex()


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


# --- browser POST policy -------------------------------------------------------------------------
# https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html


def presigned_post(
    credentials: Credentials,
    *,
    bucket: str,
    key: str,
    region: str,
    max_bytes: int,
    min_bytes: int = 1,
    endpoint: str | None = None,
    content_type: str | None = None,
    content_disposition: str | None = None,
    acl: str | None = None,
    success_action_status: str = "201",
    success_action_redirect: str | None = None,
    metadata: Mapping[str, str] | None = None,
    expires_in: int = 300,
    now: datetime | None = None,
) -> dict:
    """One browser upload's signed form, shaped like boto3's generate_presigned_post: POST
    `fields` in order, then the file, to `url`. The key is exact and every field is covered by a
    condition (S3 rejects uncovered fields), so the form writes one object and nothing else."""
    now = _utc(now or datetime.now(UTC))
    _check_object(bucket, key, region)
    _check_limits(min_bytes, max_bytes, expires_in)
    timestamp = amz_date(now)
    fields = {
        "key": key,
        **_content_type_field(content_type),
        **({"Content-Disposition": content_disposition} if content_disposition else {}),
        **({"acl": acl} if acl else {}),
        **_success_field(success_action_status, success_action_redirect),
        **_metadata_fields(metadata or {}),
        **_credential_fields(credentials, region, timestamp),
    }
    expiration = now + timedelta(seconds=expires_in)
    prefix = _content_type_prefix(content_type)
    encoded = policy_base64(
        policy_document(fields, bucket, expiration, (min_bytes, max_bytes), prefix)
    )
    key_for_day = signing_key(credentials.secret_key, timestamp[:8], region)
    signed = {**fields, "policy": encoded, "x-amz-signature": signature(key_for_day, encoded)}
    return {"url": bucket_url(bucket, region, endpoint), "fields": signed}


def policy_document(
    fields: Mapping[str, str],
    bucket: str,
    expiration: datetime,
    content_length_range: tuple[int, int],
    content_type_prefix: str | None = None,
) -> dict:
    """The policy: the bucket, the size range, then one condition per form field.

    Deriving the conditions from the fields is what guarantees S3 never sees an uncovered field.
    Each is exact, with two exceptions that use S3's `starts-with`: a Content-Type prefix, and a
    field holding S3's `${filename}` variable, which S3 replaces with the uploaded file's name, so
    only the text before it is known when signing.
    """
    conditions: list = [
        {"bucket": bucket},
        ["content-length-range", *content_length_range],
        *[field_condition(name, value) for name, value in fields.items()],
    ]
    if content_type_prefix is not None:
        conditions.append(["starts-with", "$Content-Type", content_type_prefix])
    return {"expiration": policy_expiration(expiration), "conditions": conditions}


def field_condition(name: str, value: str) -> dict | list:
    """{"name": value}, or ["starts-with", "$name", prefix] for a value with ${filename}."""
    prefix, variable, _ = value.partition(FILENAME_VARIABLE)
    return ["starts-with", f"${name}", prefix] if variable else {name: value}


def policy_expiration(moment: datetime) -> str:
    """ISO 8601 in UTC, written with milliseconds as in AWS's examples: 2015-12-30T12:00:00.000Z."""
    t = _utc(moment)
    return f"{t.year:04}-{t.month:02}-{t.day:02}T{t.hour:02}:{t.minute:02}:{t.second:02}.000Z"


def policy_base64(policy: Mapping) -> str:
    """For a browser POST the string to sign is the base64 of the policy's UTF-8 JSON, as sent."""
    return base64.b64encode(_COMPACT_JSON.encode(policy).encode()).decode()


def _content_type_prefix(content_type: str | None) -> str | None:
    """`image/` (a type ending in a slash) means "any image": S3's starts-with condition."""
    return content_type if content_type and content_type.endswith("/") else None


def _content_type_field(content_type: str | None) -> dict[str, str]:
    """An exact type is a field; a prefix is left to the browser and checked by starts-with."""
    if content_type and not _content_type_prefix(content_type):
        return {"Content-Type": content_type}
    return {}


def _credential_fields(credentials: Credentials, region: str, amz_date: str) -> dict[str, str]:
    """Who signed, how and when; temporary credentials add their session token first."""
    token = {"x-amz-security-token": credentials.session_token} if credentials.session_token else {}
    return {
        **token,
        "x-amz-algorithm": ALGORITHM,
        "x-amz-credential": credential(credentials.access_key, amz_date[:8], region),
        "x-amz-date": amz_date,
    }


def _success_field(status: str, redirect: str | None) -> dict[str, str]:
    """S3 uses success_action_redirect when present and ignores the status, so send only one."""
    if redirect:
        return {"success_action_redirect": redirect}
    if str(status) not in SUCCESS_STATUSES:
        raise SignerError(f"success_action_status must be one of {', '.join(SUCCESS_STATUSES)}.")
    return {"success_action_status": str(status)}


def _metadata_fields(metadata: Mapping[str, str]) -> dict[str, str]:
    """User metadata travels as x-amz-meta-* fields; names are case-insensitive, so lowercased."""
    fields = {}
    for name, value in metadata.items():
        name = name.lower().removeprefix("x-amz-meta-")
        if not METADATA_NAME.fullmatch(name):
            raise SignerError(f"Metadata name {name!r} must use only a-z, 0-9, '-' and '_'.")
        fields[f"x-amz-meta-{name}"] = str(value)
    return fields


# --- endpoints -----------------------------------------------------------------------------------


def bucket_url(bucket: str, region: str, endpoint: str | None = None) -> str:
    """Where the form posts. A custom endpoint (MinIO, Ceph, R2, the local S3) is path-style.

    AWS is virtual-hosted, with the legacy global name in us-east-1; a bucket with dots would
    break the TLS certificate as a host name, so it goes path-style, as botocore does.
    """
    if endpoint:
        return f"{endpoint.rstrip('/')}/{bucket}/"
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    host = "s3" if region == "us-east-1" else f"s3.{region}"
    if "." in bucket:
        return f"https://{host}.{domain}/{bucket}/"
    return f"https://{bucket}.{host}.{domain}/"


def object_url(bucket: str, key: str, region: str, endpoint: str | None = None) -> str:
    """The object's URL, its key URI-encoded once with slashes kept, as S3 canonicalises it."""
    return bucket_url(bucket, region, endpoint) + uri_encode(key, keep_slash=True)


# --- canonical requests --------------------------------------------------------------------------
# https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html


def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """AWS's UriEncode: every byte but A-Z a-z 0-9 - _ . ~ as %XX of its UTF-8, uppercase hex."""
    return quote(value, safe="/" if keep_slash else "")


def canonical_uri(path: str) -> str:
    """S3 encodes each path segment exactly once, so an already-encoded path is normalised."""
    return uri_encode(unquote(path or "/"), keep_slash=True)


def canonical_query_string(params: Iterable[tuple[str, str]]) -> str:
    """Parameters encoded, then sorted by name and value, joined with '&'."""
    encoded = sorted((uri_encode(name), uri_encode(value)) for name, value in params)
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_headers(headers: Mapping[str, str], signed_headers: Sequence[str]) -> str:
    """One `name:value` line per signed header, names lowercased, runs of spaces folded."""
    values = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()}
    return "".join(f"{name}:{values[name]}\n" for name in signed_headers)


def canonical_request(
    method: str,
    canonical_uri: str,
    canonical_query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """The request reduced to the text both sides hash; any difference changes the signature."""
    return "\n".join(
        [
            method.upper(),
            canonical_uri,
            canonical_query,
            canonical_headers(headers, signed_headers),
            ";".join(signed_headers),
            payload_hash,
        ]
    )


# --- presigned URLs (query-string authentication) ------------------------------------------------
# https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html


class PresignedUrl(NamedTuple):
    """A presigned URL and the intermediates that made it, for explain mode and for tests."""

    canonical_request: str
    string_to_sign: str
    signature: str
    url: str


def presign_url(
    credentials: Credentials,
    method: str,
    url: str,
    region: str,
    *,
    headers: Mapping[str, str] | None = None,
    expires_in: int = 3600,
    now: datetime | None = None,
    service: str = "s3",
) -> str:
    """A URL that carries its own signature in X-Amz-* parameters, valid for `expires_in` s.

    `host` is always signed. Any `headers` given are signed too, and the client must then send
    exactly those values: signing `content-length` and `content-type` on a PUT makes S3 itself
    refuse another size or type, the limits a POST policy gives. The payload is UNSIGNED-PAYLOAD,
    so a browser can send a file without hashing it first.
    """
    moment = now or datetime.now(UTC)
    return presigned_url(
        credentials, method, url, region, headers or {}, expires_in, moment, service
    ).url


def presigned_url(
    credentials: Credentials,
    method: str,
    url: str,
    region: str,
    headers: Mapping[str, str],
    expires_in: int,
    now: datetime,
    service: str = "s3",
) -> PresignedUrl:
    """presign_url with its canonical request, string to sign and signature kept."""
    if not 1 <= expires_in <= MAX_PRESIGNED_EXPIRES:
        raise SignerError(f"expires_in must be between 1 and {MAX_PRESIGNED_EXPIRES} seconds.")
    parts, timestamp = urlsplit(url), amz_date(now)
    path = canonical_uri(parts.path)
    scope = credential_scope(timestamp[:8], _checked_region(region), service)
    signed_headers = {name.lower(): str(value) for name, value in headers.items()}
    signed_headers["host"] = host_header(parts.scheme, parts.netloc)
    names = sorted(signed_headers)
    auth_params = _query_auth_params(credentials, scope, timestamp, expires_in, names)
    params = [*parse_qsl(parts.query, keep_blank_values=True), *auth_params.items()]
    request = canonical_request(
        method, path, canonical_query_string(params), signed_headers, names, UNSIGNED_PAYLOAD
    )
    to_sign = string_to_sign(timestamp, scope, request)
    signed = signature(signing_key(credentials.secret_key, *scope.split("/")[:3]), to_sign)
    query = "&".join(f"{uri_encode(k)}={uri_encode(v)}" for k, v in params)
    full_url = f"{parts.scheme}://{parts.netloc}{path}?{query}&X-Amz-Signature={signed}"
    return PresignedUrl(request, to_sign, signed, full_url)


def presigned_put(
    credentials: Credentials,
    *,
    bucket: str,
    key: str,
    region: str,
    size: int,
    max_bytes: int,
    min_bytes: int = 1,
    endpoint: str | None = None,
    content_type: str = DEFAULT_CONTENT_TYPE,
    acl: str | None = None,
    metadata: Mapping[str, str] | None = None,
    content_disposition: str | None = None,
    expires_in: int = 300,
    now: datetime | None = None,
) -> dict:
    """One browser upload as a presigned PUT, for providers without browser POST (R2, B2).

    The URL pins the key; its signed headers pin the exact size (`Content-Length`), the type,
    the metadata and the ACL, so S3 itself answers SignatureDoesNotMatch to any other size or
    type, and refuses an x-amz-* header that was not signed: the limits a POST policy gives,
    with a range of one size. `headers` are what the client must send (a browser sets
    Content-Length itself). The canonical request and string to sign are returned too: they
    hold no secret, and a client compares them with the ones S3 returns in
    SignatureDoesNotMatch.
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/PresignedUrlUploadObject.html
    """
    now = _utc(now or datetime.now(UTC))
    _check_object(bucket, key, region)
    _check_limits(min_bytes, max_bytes, expires_in)
    if not min_bytes <= size <= max_bytes:
        raise SignerError(f"size ({size}) is outside the allowed [{min_bytes}, {max_bytes}].")
    headers = put_headers(size, content_type, acl, metadata or {})
    if content_disposition:
        headers["Content-Disposition"] = content_disposition
    url = object_url(bucket, key, region, endpoint)
    signed = presigned_url(credentials, "PUT", url, region, headers, expires_in, now)
    return {
        "url": signed.url,
        "headers": headers,
        "canonical_request": signed.canonical_request,
        "string_to_sign": signed.string_to_sign,
    }


def put_headers(
    size: int, content_type: str, acl: str | None, metadata: Mapping[str, str]
) -> dict[str, str]:
    """The headers a presigned PUT signs besides host, named as the client sends them."""
    return {
        "Content-Length": str(size),
        "Content-Type": content_type,
        **({"x-amz-acl": acl} if acl else {}),
        **_metadata_fields(metadata),
    }


def _query_auth_params(
    credentials: Credentials, scope: str, amz_date: str, expires_in: int, signed_headers: list[str]
) -> dict[str, str]:
    """The X-Amz-* parameters, in botocore's order; all but X-Amz-Signature are signed."""
    params = {
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": f"{credentials.access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires_in),
        "X-Amz-SignedHeaders": ";".join(signed_headers),
    }
    if credentials.session_token:
        params["X-Amz-Security-Token"] = credentials.session_token
    return params


# --- header-signed requests (the server's own calls to S3) ---------------------------------------
# https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html


def sign_request(
    credentials: Credentials,
    method: str,
    url: str,
    region: str,
    *,
    headers: Mapping[str, str] | None = None,
    payload: bytes = b"",
    now: datetime | None = None,
    service: str = "s3",
) -> dict[str, str]:
    """The headers to send with a request signed in its Authorization header.

    S3 requires x-amz-content-sha256; we always hash the payload rather than send it unsigned.
    """
    timestamp = amz_date(now or datetime.now(UTC))
    parts = urlsplit(url)
    scope = credential_scope(timestamp[:8], _checked_region(region), service)
    signed_headers_map = {
        **{name.lower(): value for name, value in (headers or {}).items()},
        "host": host_header(parts.scheme, parts.netloc),
        "x-amz-content-sha256": hashlib.sha256(payload).hexdigest(),
        "x-amz-date": timestamp,
    }
    if credentials.session_token:
        signed_headers_map["x-amz-security-token"] = credentials.session_token
    names = sorted(signed_headers_map)
    request = canonical_request(
        method,
        canonical_uri(parts.path),
        canonical_query_string(parse_qsl(parts.query, keep_blank_values=True)),
        signed_headers_map,
        names,
        signed_headers_map["x-amz-content-sha256"],
    )
    signed = _request_signature(credentials.secret_key, timestamp, scope, request)
    authorization = authorization_header(credentials.access_key, scope, names, signed)
    return {**signed_headers_map, "authorization": authorization}


def _request_signature(secret_key: str, amz_date: str, scope: str, canonical_request: str) -> str:
    """Steps 2-4 for a request, shared by presigned URLs and Authorization headers. The key is
    derived for the scope the request names (date/region/service/aws4_request)."""
    date, region, service, _ = scope.split("/")
    key_for_day = signing_key(secret_key, date, region, service)
    return signature(key_for_day, string_to_sign(amz_date, scope, canonical_request))


def authorization_header(
    access_key: str, scope: str, signed_headers: Sequence[str], signature: str
) -> str:
    """`AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`, as S3 parses it."""
    return (
        f"{ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(signed_headers)}, Signature={signature}"
    )


def host_header(scheme: str, netloc: str) -> str:
    """The Host value as clients send it: the default port for the scheme is left out."""
    default = {"http": ":80", "https": ":443"}.get(scheme)
    return netloc.removesuffix(default) if default else netloc


# --- input checks --------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is UTC:
        return moment  # the usual case, datetime.now(UTC): nothing to convert
    if moment.tzinfo is None:
        raise SignerError("`now` must be timezone-aware, e.g. datetime.now(UTC).")
    return moment.astimezone(UTC)


def _check_object(bucket: str, key: str, region: str) -> None:
    if not BUCKET_NAME.fullmatch(bucket or ""):
        raise SignerError(
            f"Bucket name {bucket!r} is not valid: S3 bucket names are 3-63 characters of "
            "a-z, 0-9, '.' and '-', starting and ending with a letter or digit."
        )
    if not key:
        raise SignerError("The object key must not be empty.")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise SignerError(f"The object key is longer than S3's limit of {MAX_KEY_BYTES} bytes.")
    _checked_region(region)


def _checked_region(region: str) -> str:
    if not (region and len(region) <= 32 and REGION_NAME.fullmatch(region)):
        raise SignerError(
            f"Region {region!r} is not a region name such as 'us-east-1' (lowercase letters, "
            "digits and single hyphens)."
        )
    return region


def _check_limits(min_bytes: int, max_bytes: int, expires_in: int) -> None:
    if min_bytes < 0 or max_bytes < 0:
        raise SignerError("Size limits must not be negative.")
    if min_bytes > max_bytes:
        raise SignerError(f"min_bytes ({min_bytes}) is larger than max_bytes ({max_bytes}).")
    if expires_in <= 0:
        raise SignerError("expires_in must be a positive number of seconds.")


# --- explain mode --------------------------------------------------------------------------------

AWS_EXAMPLE = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
# "Example: Browser-Based Upload using HTTP POST (Using AWS Signature Version 4)", S3 API Reference.
AWS_EXAMPLE_POLICY = (
    "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7"
    "ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91"
    "c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3Qi"
    "OiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwi"
    "fSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRh"
    "LXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVT"
    "MjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNy"
    "ZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9"
    "LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAi"
    "MjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9"
)
AWS_EXAMPLE_SIGNATURE = "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"
AWS_EXAMPLE_DATE = datetime(2015, 12, 29, tzinfo=UTC)
# "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)", S3 API Reference:
# GET examplebucket/test.txt, valid 86400 s from 20130524T000000Z.
AWS_URL_EXAMPLE_SIGNATURE = "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
AWS_URL_DATE = datetime(2013, 5, 24, tzinfo=UTC)


class Step(NamedTuple):
    """One line of explain mode: AWS's name for a value, and the value."""

    name: str
    value: str


def explain_post(
    encoded_policy: str, credentials: Credentials, region: str, now: datetime
) -> list[Step]:
    """Every intermediate of a POST signature, in order, named as AWS's documentation names them."""
    date = date_stamp(now)
    keys = derived_keys(credentials.secret_key, date, region)
    return [
        Step("Policy (JSON)", base64.b64decode(encoded_policy).decode()),
        Step("StringToSign (base64 of the policy)", encoded_policy),
        Step("Credential scope", credential_scope(date, region)),
        Step("x-amz-credential", credential(credentials.access_key, date, region)),
        *_key_chain(keys),
        Step(
            "Signature = hex(HMAC(SigningKey, StringToSign))",
            signature(keys.signing_key, encoded_policy),
        ),
    ]


def explain_presigned_url(presigned: PresignedUrl, secret_key: str, region: str) -> list[Step]:
    """Every intermediate of a presigned URL: the request is reduced to a canonical text, whose
    hash (not the text) goes into the string to sign."""
    _, timestamp, scope, request_hash = presigned.string_to_sign.split("\n")
    keys = derived_keys(secret_key, timestamp[:8], region)
    return [
        Step("CanonicalRequest", presigned.canonical_request),
        Step("Hash of the CanonicalRequest (SHA-256, hex)", request_hash),
        Step("StringToSign", presigned.string_to_sign),
        Step("Credential scope", scope),
        *_key_chain(keys),
        Step("Signature = hex(HMAC(SigningKey, StringToSign))", presigned.signature),
        Step("url", presigned.url),
    ]


def _key_chain(keys: DerivedKeys) -> list[Step]:
    return [
        Step("DateKey = HMAC('AWS4' + secret, date)", keys.date_key.hex()),
        Step("DateRegionKey = HMAC(DateKey, region)", keys.date_region_key.hex()),
        Step(
            "DateRegionServiceKey = HMAC(DateRegionKey, 's3')", keys.date_region_service_key.hex()
        ),
        Step("SigningKey = HMAC(DateRegionServiceKey, 'aws4_request')", keys.signing_key.hex()),
    ]


def pretty_policy(encoded_policy: str) -> str:
    """The decoded policy with one condition per line, so it reads like AWS's examples."""
    policy = json.loads(base64.b64decode(encoded_policy))
    conditions = ",\n".join(f"    {json.dumps(c)}" for c in policy["conditions"])
    return f'{{"expiration": "{policy["expiration"]}",\n "conditions": [\n{conditions}\n ]}}'


def explain(argv: Sequence[str] | None = None) -> list[Step]:
    """The steps explain mode prints, from its command-line arguments."""
    args = _explain_parser().parse_args(argv)
    if args.put:
        return _explain_put(args)
    if args.aws_example:
        steps = explain_post(AWS_EXAMPLE_POLICY, AWS_EXAMPLE, "us-east-1", AWS_EXAMPLE_DATE)
        return _with_verdict(steps, AWS_EXAMPLE_SIGNATURE)
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    form = presigned_post(
        AWS_EXAMPLE,
        bucket=args.bucket,
        key=args.key,
        region=args.region,
        max_bytes=args.max_bytes,
        content_type=args.content_type,
        expires_in=args.expires_in,
        now=now,
    )
    encoded = form["fields"]["policy"]
    steps = explain_post(encoded, AWS_EXAMPLE, args.region, now)
    return [Step("Policy (JSON)", pretty_policy(encoded)), *steps[1:], Step("url", form["url"])]


def _explain_put(args: argparse.Namespace) -> list[Step]:
    """A presigned PUT that pins the key, the exact size and the type; or, with --aws-example,
    AWS's published presigned GET, whose signature AWS prints."""
    if args.aws_example:
        url = "https://examplebucket.s3.amazonaws.com/test.txt"
        presigned = presigned_url(AWS_EXAMPLE, "GET", url, "us-east-1", {}, 86400, AWS_URL_DATE)
        steps = explain_presigned_url(presigned, AWS_EXAMPLE.secret_key, "us-east-1")
        return _with_verdict(steps, AWS_URL_EXAMPLE_SIGNATURE)
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    url = object_url(args.bucket, args.key, args.region)
    headers = put_headers(args.size, args.content_type, None, {})
    presigned = presigned_url(AWS_EXAMPLE, "PUT", url, args.region, headers, args.expires_in, now)
    return explain_presigned_url(presigned, AWS_EXAMPLE.secret_key, args.region)


def _with_verdict(steps: list[Step], published_signature: str) -> list[Step]:
    signed = next(step.value for step in steps if step.name.startswith("Signature"))
    verdict = "yes" if signed == published_signature else "NO"
    return [*steps, Step("Matches AWS's published signature", verdict)]


def _explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python signer.py explain",
        description="Print every step of a SigV4 POST policy signature, or with --put of a "
        "presigned PUT URL. Uses AWS's published example credentials, never yours, so the keys "
        "it prints are safe to share.",
    )
    parser.add_argument("--aws-example", action="store_true", help="replay AWS's example")
    parser.add_argument("--put", action="store_true", help="a presigned PUT URL, not a POST")
    parser.add_argument("--size", type=int, default=1024, help="the PUT's exact Content-Length")
    parser.add_argument("--bucket", default="examplebucket")
    parser.add_argument("--key", default="uploads/example.jpg")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--max-bytes", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--content-type", default="image/jpeg")
    parser.add_argument("--expires-in", type=int, default=300)
    parser.add_argument("--now", help="ISO 8601 time with offset, e.g. 2026-01-01T00:00:00+00:00")
    return parser


def format_steps(steps: Iterable[Step]) -> str:
    """Explain mode's text: each name, then its value indented beneath it."""
    return "\n".join(name + "\n" + _indented(value) for name, value in steps)


def _indented(text: str) -> str:
    """Each line indented; an empty line (a canonical request has one) stays empty."""
    return "".join(f"    {line}".rstrip(" ") + "\n" for line in text.splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "explain":
        print("usage: python signer.py explain [--put] [--aws-example] [--help]", file=sys.stderr)
        return 2
    try:
        print(format_steps(explain(argv[1:])), end="")
    except SignerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
