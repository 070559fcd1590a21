"""Who signed a request: SigV4 credentials shared by POST forms and signed requests, and the
signature of a GET, HEAD or PUT, in the query (a presigned URL) or the Authorization header.
https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-auth-using-authorization-header.html
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import signer
from local_s3.config import S3Config
from local_s3.errors import S3Error, invalid_argument
from s3_rules import MAX_CLOCK_SKEW, MAX_PRESIGNED_EXPIRES

SERVICE = "s3"
TERMINATOR = "aws4_request"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
ONLY_SIGV4 = f'X-Amz-Algorithm only supports "{signer.ALGORITHM}"'
# SignedHeaders is "a semicolon-separated list of lowercase request header names"; the local S3
# refuses any other list as malformed (AWS documents no message: ours).
SIGNED_HEADER_NAME = re.compile(r"[a-z0-9-]+")
BAD_SIGNED_HEADERS = "SignedHeaders must be lowercase header names separated by ';'."
NOT_SIGNED = "There were headers present in the request which were not signed"
# S3 requires host and every x-amz-* header the request carries to be signed, but lets the
# payload hash travel unsigned (it is checked against the body anyway).
# https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html
AMZ_HEADERS_UNSIGNED_OK = frozenset({"x-amz-content-sha256"})


# --- credentials, for forms and requests alike ---


@dataclass(frozen=True)
class CredentialScope:
    """The parsed x-amz-credential: access key id / date / region / service / aws4_request."""

    access_key: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return signer.credential_scope(self.date, self.region, self.service)


def parse_credential(value: str, region: str) -> CredentialScope:
    """Checks the credential's shape, region and service. Raises ValueError with S3's wording;
    each caller wraps it in the error code S3 uses for that kind of request."""
    parts = value.split("/")
    if len(parts) != 5 or not all(parts) or not re.fullmatch(r"\d{8}", parts[1]):
        raise ValueError(
            "the Credential is mal-formed; expecting "
            '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    access_key, date, scope_region, service, terminal = parts
    if scope_region != region:
        raise ValueError(f"the region '{scope_region}' is wrong; expecting '{region}'")
    if service != SERVICE:
        raise ValueError(f'incorrect service "{service}". This endpoint belongs to "{SERVICE}".')
    if terminal != TERMINATOR:
        raise ValueError(f'incorrect terminal "{terminal}". This endpoint uses "aws4_request".')
    return CredentialScope(access_key, date, scope_region, service)


def parse_amz_date(value: str) -> datetime:
    try:
        if AMZ_DATE.fullmatch(value):
            return datetime.strptime(value, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        pass  # e.g. month 13
    raise ValueError("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")


def check_credential_date(credential: CredentialScope, amz_date: str) -> None:
    if not amz_date.startswith(credential.date):
        raise ValueError(
            f'Invalid credential date "{credential.date}". '
            f'This date is not the same as X-Amz-Date: "{amz_date[:8]}".'
        )


def secret_for(config: S3Config, access_key: str) -> str:
    secret = config.credentials.get(access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key)
    return secret


def signatures_match(expected: str, provided: str) -> bool:
    """Constant time, and on bytes: a non-ASCII signature must fail, not raise."""
    return hmac.compare_digest(expected.encode(), provided.encode("utf-8", "replace"))


# --- signed requests ---


@dataclass(frozen=True)
class SignedRequest:
    """What a signed request claims: who signed, when, which headers, over which payload."""

    credential: CredentialScope
    amz_date: str
    signed_headers: tuple[str, ...]
    payload_hash: str
    signature: str
    query: tuple[tuple[str, str], ...]


def authenticate(
    environ: Mapping[str, str], config: S3Config, now: datetime
) -> SignedRequest | None:
    """The verified claim of a signed request, None for an anonymous one; S3's error otherwise.

    The payload hash a header-signed request declares is checked by the caller, against the
    body it actually received."""
    query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    presigned = any(name == "X-Amz-Algorithm" for name, _ in query)
    if presigned:
        claim = query_claim(query, config.region)
    elif environ.get("HTTP_AUTHORIZATION"):
        claim = header_claim(environ, query, config.region, now)
    else:
        return None
    token = dict(query).get("X-Amz-Security-Token") or environ.get("HTTP_X_AMZ_SECURITY_TOKEN")
    if token:
        raise S3Error("InvalidToken", Token=token)
    check_headers_signed(environ, claim.signed_headers)
    verify_request_signature(environ, claim, config)
    if presigned:
        check_not_expired(dict(query), claim, now)
    return claim


def query_claim(query: list[tuple[str, str]], region: str) -> SignedRequest:
    params = dict(query)
    required = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders")
    if not all(name in params for name in (*required, "X-Amz-Signature")):
        raise S3Error("AuthorizationQueryParametersError")
    if params["X-Amz-Algorithm"] != signer.ALGORITHM:
        raise S3Error("AuthorizationQueryParametersError", ONLY_SIGV4)
    try:
        credential = parse_credential(params["X-Amz-Credential"], region)
        parse_amz_date(params["X-Amz-Date"])
        check_credential_date(credential, params["X-Amz-Date"])
    except ValueError as problem:
        raise S3Error(
            "AuthorizationQueryParametersError",
            f"Error parsing the X-Amz-Credential parameter; {problem}",
            Region=region,
        ) from None
    signed_headers = parse_signed_headers(params["X-Amz-SignedHeaders"])
    if signed_headers is None:
        raise S3Error("AuthorizationQueryParametersError", f"X-Amz-{BAD_SIGNED_HEADERS}")
    return SignedRequest(
        credential,
        params["X-Amz-Date"],
        signed_headers,
        signer.UNSIGNED_PAYLOAD,
        params["X-Amz-Signature"],
        tuple((k, v) for k, v in query if k != "X-Amz-Signature"),
    )


def check_not_expired(params: Mapping[str, str], claim: SignedRequest, now: datetime) -> None:
    """X-Amz-Expires counts from X-Amz-Date and is at most a week."""
    expires = params["X-Amz-Expires"]
    if not expires.isdigit() or not 1 <= int(expires) <= MAX_PRESIGNED_EXPIRES:
        raise S3Error(
            "AuthorizationQueryParametersError",
            f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGNED_EXPIRES}",
        )
    signed_at = parse_amz_date(claim.amz_date)
    expiry = signed_at + timedelta(seconds=int(expires))
    if now > expiry:
        raise S3Error(
            "AccessDenied",
            "Request has expired",
            **{"X-Amz-Expires": expires},
            Expires=iso_z(expiry),
            ServerTime=iso_z(now),
        )
    if signed_at > now + MAX_CLOCK_SKEW:
        raise S3Error("AccessDenied", "Request is not valid yet")


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def header_claim(
    environ: Mapping[str, str], query: list[tuple[str, str]], region: str, now: datetime
) -> SignedRequest:
    """Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..."""
    parts = parse_authorization(environ["HTTP_AUTHORIZATION"])
    amz_date = environ.get("HTTP_X_AMZ_DATE", "")
    try:
        credential = parse_credential(parts["Credential"], region)
        signed_at = parse_amz_date(amz_date)
        check_credential_date(credential, amz_date)
    except ValueError as problem:
        raise S3Error(
            "AuthorizationHeaderMalformed",
            f"The authorization header is malformed; {problem}",
            Region=region,
        ) from None
    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        raise S3Error(
            "RequestTimeTooSkewed",
            RequestTime=amz_date,
            ServerTime=iso_z(now),
            MaxAllowedSkewMilliseconds=int(MAX_CLOCK_SKEW.total_seconds() * 1000),
        )
    signed = parse_signed_headers(parts["SignedHeaders"])
    if signed is None:
        raise S3Error(
            "AuthorizationHeaderMalformed",
            f"The authorization header is malformed; {BAD_SIGNED_HEADERS}",
            Region=region,
        )
    payload_hash = checked_payload_hash(environ.get("HTTP_X_AMZ_CONTENT_SHA256"))
    return SignedRequest(
        credential, amz_date, signed, payload_hash, parts["Signature"], tuple(query)
    )


def parse_authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.partition(" ")
    if algorithm != signer.ALGORITHM:
        raise invalid_argument("Authorization", value, "Unsupported Authorization Type")
    parts = dict(item.strip().partition("=")[::2] for item in rest.split(","))
    if not all(parts.get(name) for name in ("Credential", "SignedHeaders", "Signature")):
        raise S3Error(
            "AuthorizationHeaderMalformed",
            "The authorization header is malformed; the authorization header requires three "
            "components: Credential, SignedHeaders, and Signature.",
        )
    return parts


def parse_signed_headers(value: str) -> tuple[str, ...] | None:
    names = tuple(value.split(";"))
    return names if all(SIGNED_HEADER_NAME.fullmatch(name) for name in names) else None


def check_headers_signed(environ: Mapping[str, str], signed_headers: tuple[str, ...]) -> None:
    """A header added after signing must not change what a request does (x-amz-acl:
    public-read on a presigned PUT): S3 refuses a request whose host, or any x-amz-* header
    present, is not signed, naming them in HeadersNotSigned."""
    present = {"host", *(name for name in header_names(environ) if name.startswith("x-amz-"))}
    unsigned = sorted(present - set(signed_headers) - AMZ_HEADERS_UNSIGNED_OK)
    if unsigned:
        raise S3Error("AccessDenied", NOT_SIGNED, HeadersNotSigned=", ".join(unsigned))


def header_names(environ: Mapping[str, str]) -> list[str]:
    """The request's header names, lowercased, as WSGI keeps them (HTTP_X_AMZ_ACL)."""
    return [key[5:].lower().replace("_", "-") for key in environ if key.startswith("HTTP_")]


def checked_payload_hash(value: str | None) -> str:
    """x-amz-content-sha256 is required with header signing: the body's hex SHA-256, or
    UNSIGNED-PAYLOAD. (aws-chunked STREAMING-* payloads are not supported here.)"""
    if value is None:
        raise S3Error(
            "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    if value.startswith("STREAMING-"):
        raise S3Error("NotImplemented", Header="x-amz-content-sha256", AdditionalMessage=value)
    if value != signer.UNSIGNED_PAYLOAD and not HEX_SHA256.fullmatch(value):
        raise invalid_argument(
            "x-amz-content-sha256",
            value,
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, or a valid sha256 value.",
        )
    return value


def check_payload_hash(claim: SignedRequest | None, received_sha256: str) -> None:
    """The signed x-amz-content-sha256 must be the hash of the body that actually arrived."""
    if claim is None or claim.payload_hash in (signer.UNSIGNED_PAYLOAD, received_sha256):
        return
    raise S3Error(
        "XAmzContentSHA256Mismatch",
        ClientComputedContentSHA256=claim.payload_hash,
        S3ComputedContentSHA256=received_sha256,
    )


def verify_request_signature(
    environ: Mapping[str, str], claim: SignedRequest, config: S3Config
) -> None:
    """Rebuild the canonical request from what arrived and sign it with the stored secret."""
    secret = secret_for(config, claim.credential.access_key)
    request = signer.canonical_request(
        environ["REQUEST_METHOD"],
        signer.uri_encode(request_path(environ), keep_slash=True),
        signer.canonical_query_string(claim.query),
        {name: header_value(environ, name) for name in claim.signed_headers},
        claim.signed_headers,
        claim.payload_hash,
    )
    to_sign = signer.string_to_sign(claim.amz_date, claim.credential.scope, request)
    key = signer.signing_key(secret, claim.credential.date, claim.credential.region, SERVICE)
    if not signatures_match(signer.signature(key, to_sign), claim.signature):
        raise S3Error(
            "SignatureDoesNotMatch",
            AWSAccessKeyId=claim.credential.access_key,
            StringToSign=to_sign,
            SignatureProvided=claim.signature,
            CanonicalRequest=request,
        )


def header_value(environ: Mapping[str, str], name: str) -> str:
    if name in ("content-type", "content-length"):
        return environ.get(name.upper().replace("-", "_"), "")
    return environ.get("HTTP_" + name.upper().replace("-", "_"), "")


def request_path(environ: Mapping[str, str]) -> str:
    """The decoded path as the client sent it (bottle decodes PATH_INFO to UTF-8 in place)."""
    return "/" + environ.get("PATH_INFO", "").lstrip("/")
